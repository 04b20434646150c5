package grpcserver_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"example.com/todoapp/proto/accesstoken"
	todov1 "example.com/todoapp/proto/gen/todo/v1"
	"example.com/todoapp/todo-service/internal/grpcserver"
	"example.com/todoapp/todo-service/internal/store"
	"example.com/todoapp/todo-service/internal/store/storetest"
)

const (
	testIssuer   = "http://127.0.0.1:8081"
	testAudience = "todo-service"
	testKid      = "test-key-1"
)

var testStart = time.Date(2026, 5, 1, 9, 0, 0, 0, time.UTC)

var (
	keyOnce sync.Once
	testKey *rsa.PrivateKey
)

// signingKey returns one 2048-bit RSA key shared by the tests of this
// package, because generating one takes long.
func signingKey(t testing.TB) *rsa.PrivateKey {
	t.Helper()
	keyOnce.Do(func() {
		key, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			panic(err)
		}
		testKey = key
	})
	return testKey
}

// keyResolver serves the test key, or fails with ErrKeysUnavailable while
// unavailable is set.
type keyResolver struct {
	mu          sync.Mutex
	keys        map[string]*rsa.PublicKey
	unavailable bool
}

func (r *keyResolver) PublicKey(_ context.Context, kid string) (*rsa.PublicKey, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.unavailable {
		return nil, accesstoken.ErrKeysUnavailable
	}
	key, ok := r.keys[kid]
	if !ok {
		return nil, accesstoken.ErrUnknownKey
	}
	return key, nil
}

func (r *keyResolver) setUnavailable(v bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.unavailable = v
}

// syncBuffer is a bytes.Buffer safe for the concurrent writes of a logger.
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

// testServer is a real gRPC server on 127.0.0.1:0 with a real store.
type testServer struct {
	clock    *storetest.Clock
	store    *store.Store
	resolver *keyResolver
	logs     *syncBuffer
	registry *prometheus.Registry
	conn     *grpc.ClientConn
	client   todov1.TodoServiceClient
}

// startServer starts a server on a fresh SQLite store.
func startServer(t *testing.T) *testServer {
	t.Helper()
	clock := storetest.NewClock(testStart)
	return startServerWithStore(t, clock, storetest.OpenSQLite(t, clock.Now))
}

func startServerWithStore(t *testing.T, clock *storetest.Clock, s *store.Store) *testServer {
	t.Helper()
	resolver := &keyResolver{keys: map[string]*rsa.PublicKey{testKid: &signingKey(t).PublicKey}}
	verifier, err := accesstoken.NewVerifier(accesstoken.VerifierConfig{
		Issuer:    testIssuer,
		Audiences: []string{testAudience},
		Now:       clock.Now,
		Keys:      resolver,
	})
	if err != nil {
		t.Fatalf("NewVerifier: %v", err)
	}

	logs := &syncBuffer{}
	registry := prometheus.NewRegistry()
	server, err := grpcserver.New(grpcserver.Options{
		Store:      s,
		Verifier:   verifier,
		Logger:     slog.New(slog.NewJSONHandler(logs, nil)),
		Registerer: registry,
		Health:     health.NewServer(),
	})
	if err != nil {
		t.Fatalf("grpcserver.New: %v", err)
	}
	registerWhoami(server.Server)

	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	served := make(chan error, 1)
	go func() { served <- server.Serve(lis) }()
	t.Cleanup(func() {
		server.Stop()
		if err := <-served; err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			t.Errorf("Serve: %v", err)
		}
	})

	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatalf("grpc.NewClient: %v", err)
	}
	t.Cleanup(func() { conn.Close() })

	return &testServer{
		clock:    clock,
		store:    s,
		resolver: resolver,
		logs:     logs,
		registry: registry,
		conn:     conn,
		client:   todov1.NewTodoServiceClient(conn),
	}
}

// claims returns valid claims for userID at the server's current time.
func (ts *testServer) claims(userID string) accesstoken.Claims {
	now := ts.clock.Now()
	return accesstoken.Claims{
		Issuer:    testIssuer,
		Subject:   userID,
		Audience:  []string{testAudience},
		Expiry:    now.Add(15 * time.Minute),
		IssuedAt:  now,
		NotBefore: now,
		ID:        uuid.NewString(),
		SessionID: uuid.NewString(),
		Email:     "user@example.com",
	}
}

func sign(t *testing.T, c accesstoken.Claims) string {
	t.Helper()
	token, err := accesstoken.Sign(c, accesstoken.SigningKey{ID: testKid, Key: signingKey(t)})
	if err != nil {
		t.Fatalf("accesstoken.Sign: %v", err)
	}
	return token
}

// as returns a context whose calls carry a valid token for userID.
func (ts *testServer) as(t *testing.T, userID string) context.Context {
	t.Helper()
	return withToken(testContext(t), sign(t, ts.claims(userID)))
}

func withToken(ctx context.Context, token string) context.Context {
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)
}

func testContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func (ts *testServer) create(t *testing.T, ctx context.Context, title string) *todov1.Todo {
	t.Helper()
	resp, err := ts.client.CreateTodo(ctx, &todov1.CreateTodoRequest{Todo: &todov1.Todo{Title: title}})
	if err != nil {
		t.Fatalf("CreateTodo(%q): %v", title, err)
	}
	return resp.GetTodo()
}

// wantCode fails the test unless err is a status with code want.
func wantCode(t *testing.T, err error, want codes.Code) {
	t.Helper()
	if got := status.Code(err); got != want {
		t.Fatalf("status code = %v (%v), want %v", got, err, want)
	}
}

// badRequestFields returns the fields named by the google.rpc.BadRequest
// detail of err.
func badRequestFields(t *testing.T, err error) []string {
	t.Helper()
	var fields []string
	for _, detail := range status.Convert(err).Details() {
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
	field       string
	description string
}

// badRequestViolations returns the field violations of the
// google.rpc.BadRequest detail of err.
func badRequestViolations(err error) []violation {
	var vs []violation
	for _, detail := range status.Convert(err).Details() {
		if br, ok := detail.(*errdetails.BadRequest); ok {
			for _, v := range br.GetFieldViolations() {
				vs = append(vs, violation{field: v.GetField(), description: v.GetDescription()})
			}
		}
	}
	return vs
}
