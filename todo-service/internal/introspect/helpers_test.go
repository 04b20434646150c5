package introspect

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/timestamppb"

	authv1 "example.com/todoapp/proto/gen/auth/v1"
)

const (
	testIssuer   = "http://127.0.0.1:8081"
	testAudience = "todo-service"
	testSubject  = "0b8c6a36-8f7c-4a1e-9d7e-2f1c3b4a5d6e"
	testSession  = "5f0e1d2c-3b4a-4968-8776-a5b4c3d2e1f0"
	testToken    = "header.payload.signature"
)

// testNow is the injected clock of every test.
var testNow = time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)

func fixedNow() time.Time { return testNow }

// introspectFunc produces the server's response to one IntrospectToken
// call.
type introspectFunc func(ctx context.Context, req *authv1.IntrospectTokenRequest) (*authv1.IntrospectTokenResponse, error)

// authServer implements only IntrospectToken, with a response that each
// test chooses. It records the tokens it receives.
type authServer struct {
	authv1.UnimplementedAuthServiceServer
	respond introspectFunc

	mu     sync.Mutex
	tokens []string // guarded by mu
}

func (s *authServer) IntrospectToken(ctx context.Context, req *authv1.IntrospectTokenRequest) (*authv1.IntrospectTokenResponse, error) {
	s.mu.Lock()
	s.tokens = append(s.tokens, req.GetToken())
	s.mu.Unlock()
	return s.respond(ctx, req)
}

func (s *authServer) received() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.tokens...)
}

// startAuthServer serves respond on 127.0.0.1 with a free port and returns
// a client connected to it. Both are stopped when the test ends.
func startAuthServer(t testing.TB, respond introspectFunc) (authv1.AuthServiceClient, *authServer) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	srv := grpc.NewServer()
	impl := &authServer{respond: respond}
	authv1.RegisterAuthServiceServer(srv, impl)

	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(lis)
	}()
	t.Cleanup(func() {
		srv.Stop()
		<-done
	})

	return dial(t, lis.Addr().String()), impl
}

// dial returns a client for addr that is closed when the test ends.
func dial(t testing.TB, addr string) authv1.AuthServiceClient {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatalf("grpc.NewClient(%q): %v", addr, err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return authv1.NewAuthServiceClient(conn)
}

// activeResponse returns the response for a valid token issued one minute
// before testNow with a 15-minute lifetime.
func activeResponse() *authv1.IntrospectTokenResponse {
	iat := testNow.Add(-time.Minute)
	return &authv1.IntrospectTokenResponse{
		Active: true,
		Sub:    testSubject,
		Aud:    []string{testAudience},
		Iss:    testIssuer,
		Jti:    "jti-1",
		Sid:    testSession,
		Email:  "ada@example.com",
		Exp:    timestamppb.New(iat.Add(15 * time.Minute)),
		Iat:    timestamppb.New(iat),
		Nbf:    timestamppb.New(iat),
	}
}

// respondWith returns an introspectFunc that always returns resp and err.
func respondWith(resp *authv1.IntrospectTokenResponse, err error) introspectFunc {
	return func(context.Context, *authv1.IntrospectTokenRequest) (*authv1.IntrospectTokenResponse, error) {
		return resp, err
	}
}

// newTestVerifier returns a Verifier for client with the test issuer,
// audience and clock.
func newTestVerifier(t testing.TB, client Client, change func(*Config)) *Verifier {
	t.Helper()
	cfg := Config{
		Issuer:    testIssuer,
		Audiences: []string{testAudience},
		Now:       fixedNow,
	}
	if change != nil {
		change(&cfg)
	}
	v, err := New(client, cfg, nil)
	if err != nil {
		t.Fatalf("New() error = %v", err)
	}
	return v
}
