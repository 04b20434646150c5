package app_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"io"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/testing/protocmp"

	"example.com/todoapp/auth-service/internal/app"
	"example.com/todoapp/auth-service/internal/config"
	"example.com/todoapp/auth-service/internal/store/storetest"
	authv1 "example.com/todoapp/proto/gen/auth/v1"
)

// testKEK is a fixed key-encryption key for test servers.
var testKEK = base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{7}, 32))

// syncBuffer is a log sink that the server and the test use at once.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// testServer is an auth service running in the test process.
type testServer struct {
	*app.Server
	client authv1.AuthServiceClient
	conn   *grpc.ClientConn
	logs   *syncBuffer
}

// startServer starts the auth service on SQLite in t.TempDir() with free
// loopback ports, with extra flags appended, and stops it when the test
// ends.
func startServer(t *testing.T, extraArgs ...string) *testServer {
	t.Helper()
	srv, err := startServerWithEnv(t, map[string]string{config.KEKEnv: testKEK}, extraArgs...)
	if err != nil {
		t.Fatalf("app.Start() = %v", err)
	}
	return srv
}

// startServerWithEnv is startServer with the environment variables in env
// (which must set the KEK), returning the error of app.Start.
func startServerWithEnv(t *testing.T, env map[string]string, extraArgs ...string) (*testServer, error) {
	t.Helper()
	args := append([]string{
		"-grpc-addr", "127.0.0.1:0",
		"-http-addr", "127.0.0.1:0",
		"-data-dir", t.TempDir(),
		"-log-level", "debug",
	}, extraArgs...)

	var cfg config.Config
	fs := cfg.FlagSet("auth-service", io.Discard)
	if _, err := config.Parse(&cfg, fs, args, func(k string) string { return env[k] }); err != nil {
		t.Fatalf("config.Parse(%q) = %v", args, err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("Validate() = %v", err)
	}

	logs := &syncBuffer{}
	logger := slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	if err := cfg.ValidateKEKSource(); err != nil {
		t.Fatalf("ValidateKEKSource() = %v", err)
	}
	srv, err := app.Start(ctx, cfg, logger)
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() {
		if err := srv.Shutdown(); err != nil {
			t.Errorf("Shutdown() = %v", err)
		}
	})

	conn, err := grpc.NewClient(srv.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatalf("grpc.NewClient(%s) = %v", srv.GRPCAddr(), err)
	}
	t.Cleanup(func() { conn.Close() })
	return &testServer{Server: srv, client: authv1.NewAuthServiceClient(conn), conn: conn, logs: logs}, nil
}

// startPostgresServer starts the auth service on a fresh PostgreSQL
// database, or skips the test without TEST_DATABASE_URL.
func startPostgresServer(t *testing.T, extraArgs ...string) *testServer {
	t.Helper()
	databaseURL := storetest.NewPostgresDatabase(t)
	return startServer(t, append([]string{"-database-url", databaseURL}, extraArgs...)...)
}

func testContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func withToken(ctx context.Context, accessToken string) context.Context {
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+accessToken)
}

func signUp(t *testing.T, s *testServer, email, password string) *authv1.SignUpResponse {
	t.Helper()
	resp, err := s.client.SignUp(testContext(t), &authv1.SignUpRequest{Email: email, Password: password})
	if err != nil {
		t.Fatalf("SignUp(%s) = %v", email, err)
	}
	return resp
}

func login(t *testing.T, s *testServer, email, password string) *authv1.LoginResponse {
	t.Helper()
	resp, err := s.client.Login(testContext(t), &authv1.LoginRequest{Email: email, Password: password})
	if err != nil {
		t.Fatalf("Login(%s) = %v", email, err)
	}
	return resp
}

// wantCode fails the test unless err has the code.
func wantCode(t *testing.T, call string, err error, want codes.Code) *status.Status {
	t.Helper()
	st, _ := status.FromError(err)
	if st.Code() != want {
		t.Errorf("%s = %v, want code %s", call, err, want)
	}
	return st
}

// fieldViolations returns the fields named by the BadRequest detail of st.
func fieldViolations(st *status.Status) []string {
	var fields []string
	for _, detail := range st.Details() {
		if br, ok := detail.(*errdetails.BadRequest); ok {
			for _, v := range br.GetFieldViolations() {
				fields = append(fields, v.GetField())
			}
		}
	}
	return fields
}

// violation is one field violation of a google.rpc.BadRequest.
type violation struct {
	Field       string
	Description string
}

// badRequestViolations returns the field violations of the BadRequest
// detail of st.
func badRequestViolations(st *status.Status) []violation {
	var vs []violation
	for _, detail := range st.Details() {
		if br, ok := detail.(*errdetails.BadRequest); ok {
			for _, v := range br.GetFieldViolations() {
				vs = append(vs, violation{Field: v.GetField(), Description: v.GetDescription()})
			}
		}
	}
	return vs
}

func retryDelay(st *status.Status) time.Duration {
	for _, detail := range st.Details() {
		if ri, ok := detail.(*errdetails.RetryInfo); ok {
			return ri.GetRetryDelay().AsDuration()
		}
	}
	return 0
}

func base64RawURL(s string) ([]byte, error) { return base64.RawURLEncoding.DecodeString(s) }

func osStat(path string) (os.FileInfo, error) { return os.Stat(path) }

func cmpProto() cmp.Option { return protocmp.Transform() }
