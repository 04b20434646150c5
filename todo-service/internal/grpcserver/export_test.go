package grpcserver

// UserIDForTest exposes userID to the external test package.
var UserIDForTest = userID
