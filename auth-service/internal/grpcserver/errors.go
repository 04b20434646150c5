package grpcserver

import (
	"context"
	"errors"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"example.com/todoapp/auth-service/internal/auth"
	"example.com/todoapp/proto/accesstoken"
)

// toStatus maps an error from the auth service to the gRPC status returned to
// the client. Messages are generic where detail would help an attacker, such
// as which check failed on a token or a password, or would leak internals.
// The caller logs the full error.
func toStatus(err error) *status.Status {
	var invalid *auth.InvalidArgumentError
	var tooMany *auth.TooManyAttemptsError
	var malformed *malformedRequestError
	if s, ok := status.FromError(err); ok {
		return s
	}

	switch {
	case errors.As(err, &malformed):
		return status.New(codes.InvalidArgument, "malformed request: the message is not valid protobuf wire format")
	case errors.As(err, &invalid):
		return invalidArgument(invalid)
	case errors.As(err, &tooMany):
		return resourceExhausted(tooMany)
	case errors.Is(err, auth.ErrNotFound):
		return status.New(codes.NotFound, "not found")
	case errors.Is(err, auth.ErrAlreadyExists):
		return status.New(codes.AlreadyExists, "email is already registered")
	case errors.Is(err, auth.ErrInvalidCredentials):
		return status.New(codes.Unauthenticated, "invalid email or password")
	case errors.Is(err, auth.ErrInvalidPassword):
		return status.New(codes.Unauthenticated, "invalid password")
	case errors.Is(err, auth.ErrInvalidRefreshToken):
		return status.New(codes.Unauthenticated, "invalid refresh token")
	case errors.Is(err, accesstoken.ErrInvalidToken):
		return status.New(codes.Unauthenticated, "invalid or missing access token")
	case errors.Is(err, accesstoken.ErrKeysUnavailable):
		return status.New(codes.Unavailable, "signing keys unavailable, retry later")
	case errors.Is(err, context.DeadlineExceeded):
		return status.New(codes.DeadlineExceeded, "deadline exceeded")
	case errors.Is(err, context.Canceled):
		return status.New(codes.Canceled, "request canceled")
	}
	return status.New(codes.Internal, "internal error")
}

func invalidArgument(e *auth.InvalidArgumentError) *status.Status {
	s := status.New(codes.InvalidArgument, e.Error())
	detail := &errdetails.BadRequest{}
	for _, v := range e.Violations {
		detail.FieldViolations = append(detail.FieldViolations, &errdetails.BadRequest_FieldViolation{
			Field:       v.Field,
			Description: v.Description,
		})
	}
	if withDetail, err := s.WithDetails(detail); err == nil {
		return withDetail
	}
	return s
}

func resourceExhausted(e *auth.TooManyAttemptsError) *status.Status {
	s := status.New(codes.ResourceExhausted, "too many failed attempts, retry later")
	if withDetail, err := s.WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(e.RetryAfter)}); err == nil {
		return withDetail
	}
	return s
}
