package app

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"example.com/todoapp/proto/accesstoken"
	authv1 "example.com/todoapp/proto/gen/auth/v1"
	"example.com/todoapp/todo-service/internal/config"
	"example.com/todoapp/todo-service/internal/grpcserver"
	"example.com/todoapp/todo-service/internal/introspect"
	"example.com/todoapp/todo-service/internal/jwks"
	"example.com/todoapp/todo-service/internal/tokencache"
)

// authReadinessService is the auth service's health service that is
// SERVING while its database responds, which IntrospectToken needs.
const authReadinessService = "readiness"

// authConnectParams sets how the connection to the auth service is
// re-established. grpc-go's default backoff grows to 120s between
// attempts (grpc-go v1.85 backoff.DefaultConfig), so after a long
// auth-service outage every authenticated call could keep failing for
// about two minutes after it is back. The maximum delay here is 5s, and
// the other values are grpc-go's defaults.
var authConnectParams = grpc.ConnectParams{
	Backoff: backoff.Config{
		BaseDelay:  time.Second,
		Multiplier: 1.6,
		Jitter:     0.2,
		MaxDelay:   5 * time.Second,
	},
	MinConnectTimeout: 20 * time.Second,
}

// newTokenVerifier creates the verifier of the configured token check
// mode, and the JWKS cache or the auth-service connection it uses.
func (s *Server) newTokenVerifier(ctx context.Context) (grpcserver.TokenVerifier, error) {
	if s.cfg.TokenCheck == config.TokenCheckIntrospect {
		return s.newIntrospectVerifier(ctx)
	}
	return s.newOfflineVerifier(ctx)
}

// newOfflineVerifier creates a JWKS cache and a verifier that checks
// signatures with its keys, behind a verified-token cache unless
// -token-cache-size is 0.
func (s *Server) newOfflineVerifier(ctx context.Context) (grpcserver.TokenVerifier, error) {
	var err error
	s.keys, err = jwks.New(s.cfg.JWKS, s.store, s.logger.With("component", "jwks"), s.registry)
	if err != nil {
		return nil, fmt.Errorf("create JWKS cache: %w", err)
	}
	verifier, err := accesstoken.NewVerifier(accesstoken.VerifierConfig{
		Issuer:      s.cfg.Issuer,
		Audiences:   []string{s.cfg.Audience},
		ClockSkew:   s.cfg.ClockSkew,
		MaxLifetime: s.cfg.MaxTokenLifetime,
		Keys:        s.keys,
	})
	if err != nil {
		return nil, fmt.Errorf("create token verifier: %w", err)
	}

	if s.cfg.TokenCacheSize == 0 {
		s.logger.InfoContext(ctx, "token check", "mode", config.TokenCheckOffline, "token_cache", "disabled")
		return verifier, nil
	}
	cache, err := tokencache.New(verifier, s.keys, tokencache.Config{MaxEntries: s.cfg.TokenCacheSize}, s.registry)
	if err != nil {
		return nil, fmt.Errorf("create token cache: %w", err)
	}
	s.logger.InfoContext(ctx, "token check", "mode", config.TokenCheckOffline, "token_cache_size", s.cfg.TokenCacheSize)
	return cache, nil
}

// newIntrospectVerifier creates a client of the auth service at
// -introspect-addr and a verifier that sends it every token. It creates
// no JWKS cache and no token cache.
//
// NOTE: the connection is plaintext because the service has no TLS
// settings yet, so every access token crosses the network in clear text.
// Run introspect mode only where that network is trusted, or add TLS.
func (s *Server) newIntrospectVerifier(ctx context.Context) (grpcserver.TokenVerifier, error) {
	// grpc.NewClient connects lazily, so an unreachable auth service shows
	// in readiness and in the first calls, not here.
	conn, err := grpc.NewClient(s.cfg.IntrospectAddr,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithConnectParams(authConnectParams),
	)
	if err != nil {
		return nil, fmt.Errorf("create gRPC client for -introspect-addr %s: %w", s.cfg.IntrospectAddr, err)
	}
	s.authConn = conn

	verifier, err := introspect.New(authv1.NewAuthServiceClient(conn), introspect.Config{
		Issuer:      s.cfg.Issuer,
		Audiences:   []string{s.cfg.Audience},
		Timeout:     s.cfg.IntrospectTimeout,
		ClockSkew:   s.cfg.ClockSkew,
		MaxLifetime: s.cfg.MaxTokenLifetime,
	}, s.registry)
	if err != nil {
		return nil, fmt.Errorf("create introspect verifier: %w", err)
	}
	s.logger.InfoContext(ctx, "token check", "mode", config.TokenCheckIntrospect,
		"introspect_addr", s.cfg.IntrospectAddr, "introspect_timeout", s.cfg.IntrospectTimeout, "token_cache", "disabled")
	return verifier, nil
}

// checkAuthService calls the grpc.health.v1 Check of the auth service for
// its readiness service. It returns "" when that is SERVING, and the
// reason otherwise.
func (s *Server) checkAuthService(ctx context.Context) string {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.IntrospectTimeout)
	defer cancel()

	resp, err := healthpb.NewHealthClient(s.authConn).Check(ctx, &healthpb.HealthCheckRequest{Service: authReadinessService})
	if err != nil {
		return fmt.Sprintf("auth service at %s: health check failed: %v", s.cfg.IntrospectAddr, err)
	}
	if resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		return fmt.Sprintf("auth service at %s: %s is %v", s.cfg.IntrospectAddr, authReadinessService, resp.GetStatus())
	}
	return ""
}

// closeAuthConn closes the connection to the auth service, if any.
func (s *Server) closeAuthConn() {
	if s.authConn == nil {
		return
	}
	if err := s.authConn.Close(); err != nil {
		s.logger.Warn("closing the auth service connection failed", slog.Any("err", err))
	}
}
