package grpcserver

import (
	"context"
	"errors"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"example.com/todoapp/proto/accesstoken"
)

// TokenVerifier checks an access token. *accesstoken.Verifier implements
// it.
type TokenVerifier interface {
	Verify(ctx context.Context, token string) (*accesstoken.Claims, error)
}

// publicServices are the services callable without a token: health
// checks and server reflection, which reveal nothing about any user.
var publicServices = []string{
	"/grpc.health.v1.Health/",
	"/grpc.reflection.v1.ServerReflection/",
	"/grpc.reflection.v1alpha.ServerReflection/",
}

func isPublic(fullMethod string) bool {
	for _, prefix := range publicServices {
		if strings.HasPrefix(fullMethod, prefix) {
			return true
		}
	}
	return false
}

type claimsKey struct{}

// userID returns the subject of the verified token in ctx, or "" when the
// call was not authenticated.
func userID(ctx context.Context) string {
	claims, ok := ctx.Value(claimsKey{}).(*accesstoken.Claims)
	if !ok {
		return ""
	}
	return claims.Subject
}

// authenticator checks the bearer token of every call to a service that is
// not public.
type authenticator struct {
	verifier TokenVerifier
}

// authenticate verifies the one authorization value in the metadata and
// returns ctx with the token's claims. A verifier without usable keys
// yields UNAVAILABLE. Any other failure yields UNAUTHENTICATED with one
// generic message, while the precise reason goes to the RPC's log line.
func (a *authenticator) authenticate(ctx context.Context) (context.Context, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	token, err := accesstoken.ParseBearer(md.Get("authorization"))
	if err != nil {
		recordCause(ctx, err)
		return nil, status.Error(codes.Unauthenticated, msgUnauthenticated)
	}

	claims, err := a.verifier.Verify(ctx, token)
	if errors.Is(err, accesstoken.ErrKeysUnavailable) {
		recordCause(ctx, err)
		return nil, status.Error(codes.Unavailable, msgUnavailable)
	}
	if err != nil {
		recordCause(ctx, err)
		return nil, status.Error(codes.Unauthenticated, msgUnauthenticated)
	}

	recordUserID(ctx, claims.Subject)
	return context.WithValue(ctx, claimsKey{}, claims), nil
}

func (a *authenticator) unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if isPublic(info.FullMethod) {
		return handler(ctx, req)
	}
	ctx, err := a.authenticate(ctx)
	if err != nil {
		return nil, err
	}
	return handler(ctx, req)
}

func (a *authenticator) stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	if isPublic(info.FullMethod) {
		return handler(srv, ss)
	}
	ctx, err := a.authenticate(ss.Context())
	if err != nil {
		return err
	}
	return handler(srv, &contextStream{ServerStream: ss, ctx: ctx})
}

// contextStream is a server stream with a replaced context.
type contextStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *contextStream) Context() context.Context {
	return s.ctx
}
