// Package introspect checks access tokens by asking the auth service on
// every request, through auth.v1.AuthService/IntrospectToken (the token
// introspection semantics of RFC 7662), instead of verifying them offline.
//
// # When to use it
//
// Offline verification accepts a token until its exp, even after the user
// logged out, the session was revoked or the account was deleted. The
// auth service reports such a token as inactive at once, so a deployment
// that needs revocation to take effect immediately can use a Verifier from
// this package in place of the offline verifier.
//
// # What it costs
//
//   - One network round trip to the auth service per authenticated
//     request, plus the auth service's own work: a signature check and
//     session and user lookups in its database.
//   - An availability dependency. While the auth service is down or slow,
//     every authenticated call fails with UNAVAILABLE after at most the
//     configured timeout. Offline mode keeps working in that case.
//   - The token travels to the auth service. Use a transport with TLS
//     between the services wherever the network is not trusted.
//
// # Checks
//
// The auth service reports whether the token is active for any audience
// it issues tokens to. Verifier still accepts only tokens whose iss equals the
// configured issuer and whose aud contains a configured audience, and it
// checks exp, nbf, iat and the token lifetime against its own clock, as
// the offline verifier does.
//
// Errors keep the contract of package accesstoken. A token that is
// inactive or fails a local check yields an error wrapping
// accesstoken.ErrInvalidToken. A failed call (transport error, timeout,
// any gRPC status) or a malformed response yields an error wrapping
// accesstoken.ErrKeysUnavailable, so the caller returns UNAVAILABLE and
// never turns an auth-service outage into UNAUTHENTICATED.
package introspect
