package grpcserver

import (
	"context"
	"errors"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"example.com/todoapp/todo-service/internal/store"
)

// Messages sent to clients for errors whose detail stays in the log.
const (
	msgInternal        = "internal error"
	msgUnauthenticated = "invalid or missing access token"
	msgUnavailable     = "access tokens cannot be verified yet, retry later"
)

// fieldViolation is one invalid request field.
type fieldViolation struct {
	field       string
	description string
}

// invalidArgument returns an INVALID_ARGUMENT status with a
// google.rpc.BadRequest detail that lists violations.
func invalidArgument(violations ...fieldViolation) error {
	br := &errdetails.BadRequest{}
	for _, v := range violations {
		br.FieldViolations = append(br.FieldViolations, &errdetails.BadRequest_FieldViolation{
			Field:       v.field,
			Description: v.description,
		})
	}

	msg := "invalid request"
	if len(violations) > 0 {
		msg = "invalid " + violations[0].field + ": " + violations[0].description
	}
	st, err := status.New(codes.InvalidArgument, msg).WithDetails(br)
	if err != nil {
		// WithDetails fails only when the detail cannot be marshalled,
		// which does not happen for BadRequest.
		return status.Error(codes.InvalidArgument, msg)
	}
	return st.Err()
}

// storeError maps an error from the store to the status sent to the
// client. Errors without a mapping become INTERNAL with a generic message,
// and their detail is recorded for the RPC's log line.
func storeError(ctx context.Context, err error) error {
	switch {
	case errors.Is(err, store.ErrNotFound):
		return status.Error(codes.NotFound, "todo not found")
	case errors.Is(err, store.ErrETagMismatch):
		return status.Error(codes.Aborted, "etag does not match the stored todo, read it again and retry")
	case errors.Is(err, store.ErrInvalidArgument):
		return status.Error(codes.InvalidArgument, "invalid request: value cannot be stored")
	case ctx.Err() == nil && store.IsUnavailable(err):
		recordCause(ctx, err)
		return status.Error(codes.Unavailable, "database unavailable, retry later")
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded), ctx.Err() != nil:
		// lib/pq (v1.12.3) can report a cancelled query as the server
		// error 57014, which does not wrap the context's error, so
		// ctx.Err is checked as well.
		recordCause(ctx, err)
		if errors.Is(err, context.DeadlineExceeded) || errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return status.Error(codes.DeadlineExceeded, "request deadline exceeded")
		}
		return status.Error(codes.Canceled, "request canceled")
	}
	recordCause(ctx, err)
	return status.Error(codes.Internal, msgInternal)
}
