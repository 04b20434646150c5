// Package grpcserver serves auth.v1.AuthService over gRPC: request
// validation at the edge, bearer-token authentication, the mapping of
// domain errors to status codes, and one log line per RPC.
package grpcserver

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/reflection"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"example.com/todoapp/auth-service/internal/auth"
	"example.com/todoapp/proto/accesstoken"
	authv1 "example.com/todoapp/proto/gen/auth/v1"
)

// Transport limits. Every auth request is small: the largest is an
// IntrospectToken with an access token of at most 8 KiB.
const (
	// MaxRequestBytes is the largest AuthService request message accepted.
	// A larger request, up to MaxRecvMsgBytes, is rejected with
	// INVALID_ARGUMENT and a BadRequest that names its largest field.
	MaxRequestBytes = 16 << 10
	// MaxRecvMsgBytes is the transport cap (grpc.MaxRecvMsgSize, whose
	// default is 4 MiB). The server decodes messages up to this size, which
	// bounds the memory a request takes, and grpc-go rejects larger ones
	// with RESOURCE_EXHAUSTED.
	MaxRecvMsgBytes = 4 * MaxRequestBytes
	// MaxHeaderListBytes caps the request metadata (grpc-go's default is
	// 16 MiB); a bearer token and a request ID need far less.
	MaxHeaderListBytes = 16 << 10
)

// ReadinessService is the health service name that reports whether the
// database responds to a ping.
const ReadinessService = "readiness"

// Config holds the settings of New.
type Config struct {
	// TrustedProxies are the peers whose x-forwarded-for header names the
	// client address used by the login throttle and the per-RPC log line.
	TrustedProxies []netip.Prefix
	Logger         *slog.Logger
	// Registerer receives the RPC metrics; nil registers none.
	Registerer prometheus.Registerer
}

// Server implements authv1.AuthServiceServer over an auth.Service.
type Server struct {
	authv1.UnimplementedAuthServiceServer

	svc            *auth.Service
	trustedProxies []netip.Prefix
	logger         *slog.Logger
}

// Transport is the gRPC server of the auth service with its health service.
type Transport struct {
	Server *grpc.Server
	Health *health.Server
	m      *metrics
}

// InFlight returns how many unary RPCs are running.
func (t *Transport) InFlight() int64 { return t.m.running.Load() }

// New returns a gRPC server with the auth service, health (overall "" and
// "readiness", both NOT_SERVING until the caller sets them), and server
// reflection v1 and v1alpha registered.
func New(cfg Config, svc *auth.Service) (*Transport, error) {
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, fmt.Errorf("register gRPC metrics: %w", err)
	}

	server := grpc.NewServer(
		grpc.MaxRecvMsgSize(MaxRecvMsgBytes),
		grpc.MaxHeaderListSize(MaxHeaderListBytes),
		grpc.ForceServerCodecV2(newRequestCodec()),
		grpc.StatsHandler(&observer{logger: cfg.Logger, m: m, trustedProxies: cfg.TrustedProxies}),
		grpc.ChainUnaryInterceptor(unaryInterceptor(m)),
		grpc.ChainStreamInterceptor(streamInterceptor()),
	)
	authv1.RegisterAuthServiceServer(server, &Server{svc: svc, trustedProxies: cfg.TrustedProxies, logger: cfg.Logger})

	healthServer := health.NewServer()
	healthServer.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	healthServer.SetServingStatus(ReadinessService, healthpb.HealthCheckResponse_NOT_SERVING)
	healthpb.RegisterHealthServer(server, healthServer)
	reflection.Register(server)
	return &Transport{Server: server, Health: healthServer, m: m}, nil
}

// SignUp implements auth.v1.AuthService.SignUp.
func (s *Server) SignUp(ctx context.Context, req *authv1.SignUpRequest) (*authv1.SignUpResponse, error) {
	user, tokens, err := s.svc.SignUp(ctx, req.GetEmail(), req.GetPassword())
	if err != nil {
		return nil, err
	}
	setUserID(ctx, user.ID)
	return &authv1.SignUpResponse{User: userProto(user), Tokens: tokenPairProto(tokens)}, nil
}

// Login implements auth.v1.AuthService.Login.
func (s *Server) Login(ctx context.Context, req *authv1.LoginRequest) (*authv1.LoginResponse, error) {
	user, tokens, err := s.svc.Login(ctx, req.GetEmail(), req.GetPassword(), clientAddr(ctx, s.trustedProxies))
	if err != nil {
		return nil, err
	}
	setUserID(ctx, user.ID)
	return &authv1.LoginResponse{User: userProto(user), Tokens: tokenPairProto(tokens)}, nil
}

// Refresh implements auth.v1.AuthService.Refresh.
func (s *Server) Refresh(ctx context.Context, req *authv1.RefreshRequest) (*authv1.RefreshResponse, error) {
	tokens, err := s.svc.Refresh(ctx, req.GetRefreshToken())
	if err != nil {
		return nil, err
	}
	return &authv1.RefreshResponse{Tokens: tokenPairProto(tokens)}, nil
}

// Logout implements auth.v1.AuthService.Logout.
func (s *Server) Logout(ctx context.Context, req *authv1.LogoutRequest) (*authv1.LogoutResponse, error) {
	session, err := s.svc.Logout(ctx, req.GetRefreshToken())
	if err != nil {
		return nil, err
	}
	setUserID(ctx, session.UserID)
	return &authv1.LogoutResponse{}, nil
}

// GetCurrentUser implements auth.v1.AuthService.GetCurrentUser.
func (s *Server) GetCurrentUser(ctx context.Context, _ *authv1.GetCurrentUserRequest) (*authv1.GetCurrentUserResponse, error) {
	claims, err := s.authenticate(ctx)
	if err != nil {
		return nil, err
	}
	user, err := s.svc.GetUser(ctx, claims.Subject)
	if err != nil {
		return nil, err
	}
	return &authv1.GetCurrentUserResponse{User: userProto(user)}, nil
}

// ListSessions implements auth.v1.AuthService.ListSessions.
func (s *Server) ListSessions(ctx context.Context, _ *authv1.ListSessionsRequest) (*authv1.ListSessionsResponse, error) {
	claims, err := s.authenticate(ctx)
	if err != nil {
		return nil, err
	}
	sessions, err := s.svc.ListSessions(ctx, claims.Subject)
	if err != nil {
		return nil, err
	}

	resp := &authv1.ListSessionsResponse{}
	for _, session := range sessions {
		resp.Sessions = append(resp.Sessions, &authv1.Session{
			Id:              session.ID,
			CreateTime:      timestamppb.New(session.CreateTime),
			LastRefreshTime: timestamppb.New(session.LastRefreshTime),
			ExpireTime:      timestamppb.New(session.ExpireTime),
			Current:         session.ID == claims.SessionID,
		})
	}
	return resp, nil
}

// RevokeSession implements auth.v1.AuthService.RevokeSession.
func (s *Server) RevokeSession(ctx context.Context, req *authv1.RevokeSessionRequest) (*authv1.RevokeSessionResponse, error) {
	claims, err := s.authenticate(ctx)
	if err != nil {
		return nil, err
	}
	if err := s.svc.RevokeSession(ctx, claims.Subject, req.GetSessionId()); err != nil {
		return nil, err
	}
	return &authv1.RevokeSessionResponse{}, nil
}

// ChangePassword implements auth.v1.AuthService.ChangePassword.
func (s *Server) ChangePassword(ctx context.Context, req *authv1.ChangePasswordRequest) (*authv1.ChangePasswordResponse, error) {
	claims, err := s.authenticate(ctx)
	if err != nil {
		return nil, err
	}
	revoked, err := s.svc.ChangePassword(ctx, claims.Subject, claims.SessionID, req.GetOldPassword(), req.GetNewPassword())
	if err != nil {
		return nil, err
	}
	s.logger.InfoContext(ctx, "password changed", "user_id", claims.Subject, "revoked_sessions", revoked)
	return &authv1.ChangePasswordResponse{}, nil
}

// IntrospectToken implements auth.v1.AuthService.IntrospectToken.
//
// NOTE: any caller that reaches the gRPC port may introspect a token. The
// response reveals only the claims the token already carries and whether it
// is revoked, but a deployment should still restrict this method to the
// services that need it (at the gateway or with mTLS).
func (s *Server) IntrospectToken(ctx context.Context, req *authv1.IntrospectTokenRequest) (*authv1.IntrospectTokenResponse, error) {
	if err := auth.CheckAccessTokenField("token", req.GetToken()); err != nil {
		return nil, err
	}

	result, err := s.svc.IntrospectToken(ctx, req.GetToken())
	if err != nil {
		return nil, err
	}
	if !result.Active {
		s.logger.DebugContext(ctx, "token inactive", "reason", result.Reason)
		return &authv1.IntrospectTokenResponse{Active: false}, nil
	}

	c := result.Claims
	resp := &authv1.IntrospectTokenResponse{
		Active: true,
		Sub:    c.Subject,
		Aud:    c.Audience,
		Iss:    c.Issuer,
		Jti:    c.ID,
		Sid:    c.SessionID,
		Email:  c.Email,
		Exp:    timestamppb.New(c.Expiry),
		Iat:    timestamppb.New(c.IssuedAt),
	}
	if !c.NotBefore.IsZero() {
		resp.Nbf = timestamppb.New(c.NotBefore)
	}
	return resp, nil
}

// authenticate verifies the bearer token of the request and records its
// subject for the log line.
func (s *Server) authenticate(ctx context.Context) (*accesstoken.Claims, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	token, err := accesstoken.ParseBearer(md.Get("authorization"))
	if err != nil {
		return nil, err
	}
	claims, err := s.svc.Authenticate(ctx, token)
	if err != nil {
		return nil, err
	}
	if claims.Subject == "" || claims.SessionID == "" {
		return nil, fmt.Errorf("%w: missing sub or sid claim", accesstoken.ErrInvalidToken)
	}
	setUserID(ctx, claims.Subject)
	return claims, nil
}

func userProto(u auth.User) *authv1.User {
	return &authv1.User{Id: u.ID, Email: u.Email, CreateTime: timestamppb.New(u.CreateTime)}
}

func tokenPairProto(t auth.TokenPair) *authv1.TokenPair {
	return &authv1.TokenPair{
		AccessToken:           t.AccessToken,
		TokenType:             "Bearer",
		AccessTokenExpiresIn:  durationpb.New(t.AccessTokenExpiresIn),
		RefreshToken:          t.RefreshToken,
		RefreshTokenExpiresIn: durationpb.New(t.RefreshTokenExpiresIn),
	}
}
