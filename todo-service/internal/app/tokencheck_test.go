package app_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	authv1 "example.com/todoapp/proto/gen/auth/v1"
	todov1 "example.com/todoapp/proto/gen/todo/v1"
	"example.com/todoapp/todo-service/internal/app"
	"example.com/todoapp/todo-service/internal/config"
)

// fetchMetrics returns the text of GET /metrics.
func fetchMetrics(t *testing.T, httpAddr string) string {
	t.Helper()
	resp, err := http.Get("http://" + httpAddr + "/metrics")
	if err != nil {
		t.Fatalf("GET /metrics: %v", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read /metrics: %v", err)
	}
	return string(body)
}

func TestOfflineTokenCache(t *testing.T) {
	js := startJWKS(t)
	r := start(t, testConfig(t, js.url(), t.TempDir()))
	waitHealth(t, r.conn, app.ReadinessService, healthpb.HealthCheckResponse_SERVING)

	client := todov1.NewTodoServiceClient(r.conn)
	ctx := tokenContext(t, uuid.NewString())
	for i := range 3 {
		if _, err := client.ListTodos(ctx, &todov1.ListTodosRequest{}); err != nil {
			t.Fatalf("ListTodos call %d: %v", i+1, err)
		}
	}

	metrics := fetchMetrics(t, r.server.HTTPAddr())
	for _, want := range []string{
		"todo_token_cache_misses_total 1\n",
		"todo_token_cache_hits_total 2\n",
		"todo_token_cache_entries 1\n",
		"todo_jwks_key_set_ready 1\n",
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %q", strings.TrimSpace(want))
		}
	}
	if strings.Contains(metrics, "todo_introspect_") {
		t.Error("/metrics has introspect metrics in offline mode")
	}
	if logs := r.logs.String(); !strings.Contains(logs, `"msg":"token check","mode":"offline","token_cache_size":10000`) {
		t.Errorf("logs lack the token check line with the cache size:\n%s", logs)
	}
}

func TestOfflineWithoutTokenCache(t *testing.T) {
	js := startJWKS(t)
	cfg := testConfig(t, js.url(), t.TempDir())
	cfg.TokenCacheSize = 0
	r := start(t, cfg)
	waitHealth(t, r.conn, app.ReadinessService, healthpb.HealthCheckResponse_SERVING)

	client := todov1.NewTodoServiceClient(r.conn)
	ctx := tokenContext(t, uuid.NewString())
	for i := range 2 {
		if _, err := client.ListTodos(ctx, &todov1.ListTodosRequest{}); err != nil {
			t.Fatalf("ListTodos call %d: %v", i+1, err)
		}
	}

	if metrics := fetchMetrics(t, r.server.HTTPAddr()); strings.Contains(metrics, "todo_token_cache_") {
		t.Error("/metrics has token cache metrics with -token-cache-size 0")
	}
	if logs := r.logs.String(); !strings.Contains(logs, `"msg":"token check","mode":"offline","token_cache":"disabled"`) {
		t.Errorf("logs lack the token check line with the cache disabled:\n%s", logs)
	}
}

// introspectServer is an auth service on loopback that implements only
// IntrospectToken and health. It reports activeToken as active for
// subject until revoked is set, and every other token as inactive.
type introspectServer struct {
	authv1.UnimplementedAuthServiceServer

	addr        string
	activeToken string
	subject     string
	health      *health.Server
	revoked     atomic.Bool
	calls       atomic.Int64
	stop        func()
}

func startIntrospectServer(t *testing.T) *introspectServer {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	s := &introspectServer{
		addr:        lis.Addr().String(),
		activeToken: "opaque-test-token-" + uuid.NewString(),
		subject:     uuid.NewString(),
		health:      health.NewServer(),
	}
	s.health.SetServingStatus("readiness", healthpb.HealthCheckResponse_SERVING)

	srv := grpc.NewServer()
	authv1.RegisterAuthServiceServer(srv, s)
	healthpb.RegisterHealthServer(srv, s.health)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(lis)
	}()
	var once sync.Once
	s.stop = func() {
		once.Do(func() {
			srv.Stop()
			<-done
		})
	}
	t.Cleanup(s.stop)
	return s
}

func (s *introspectServer) IntrospectToken(_ context.Context, req *authv1.IntrospectTokenRequest) (*authv1.IntrospectTokenResponse, error) {
	s.calls.Add(1)
	if req.GetToken() != s.activeToken || s.revoked.Load() {
		return &authv1.IntrospectTokenResponse{Active: false}, nil
	}
	iat := time.Now().Add(-time.Minute)
	return &authv1.IntrospectTokenResponse{
		Active: true,
		Sub:    s.subject,
		Aud:    []string{"todo-service"},
		Iss:    testIssuer,
		Jti:    uuid.NewString(),
		Sid:    uuid.NewString(),
		Exp:    timestamppb.New(iat.Add(15 * time.Minute)),
		Iat:    timestamppb.New(iat),
	}, nil
}

// TestIntrospectMode runs the service with -token-check introspect against
// an auth service on loopback. The token is accepted while the auth service
// reports it active and rejected at once when it no longer does. Calls get
// UNAVAILABLE once the auth service is gone, and no JWKS fetch happens.
func TestIntrospectMode(t *testing.T) {
	js := startJWKS(t)
	auth := startIntrospectServer(t)
	cfg := testConfig(t, js.url(), t.TempDir())
	cfg.TokenCheck = config.TokenCheckIntrospect
	cfg.IntrospectAddr = auth.addr
	cfg.IntrospectTimeout = 5 * time.Second
	if err := cfg.Validate(); err != nil {
		t.Fatalf("introspect config is invalid: %v", err)
	}
	r := start(t, cfg)
	waitHealth(t, r.conn, app.ReadinessService, healthpb.HealthCheckResponse_SERVING)

	client := todov1.NewTodoServiceClient(r.conn)
	ctx := metadata.AppendToOutgoingContext(testContext(t), "authorization", "Bearer "+auth.activeToken)
	created, err := client.CreateTodo(ctx, &todov1.CreateTodoRequest{Todo: &todov1.Todo{Title: "checked by the auth service"}})
	if err != nil {
		t.Fatalf("CreateTodo with an active token: %v", err)
	}
	if _, err := client.GetTodo(ctx, &todov1.GetTodoRequest{Id: created.GetTodo().GetId()}); err != nil {
		t.Errorf("GetTodo with an active token: %v", err)
	}
	if got := auth.calls.Load(); got != 2 {
		t.Errorf("IntrospectToken calls after two RPCs = %d, want 2 (one per RPC, no cache)", got)
	}

	auth.revoked.Store(true)
	_, err = client.GetTodo(ctx, &todov1.GetTodoRequest{Id: created.GetTodo().GetId()})
	if got := status.Code(err); got != codes.Unauthenticated {
		t.Errorf("GetTodo after revocation: code = %v (%v), want Unauthenticated", got, err)
	}

	auth.health.SetServingStatus("readiness", healthpb.HealthCheckResponse_NOT_SERVING)
	waitHealth(t, r.conn, app.ReadinessService, healthpb.HealthCheckResponse_NOT_SERVING)

	auth.stop()
	_, err = client.ListTodos(ctx, &todov1.ListTodosRequest{})
	if got := status.Code(err); got != codes.Unavailable {
		t.Errorf("ListTodos with the auth service stopped: code = %v (%v), want Unavailable", got, err)
	}

	metrics := fetchMetrics(t, r.server.HTTPAddr())
	for _, want := range []string{
		`todo_introspect_requests_total{result="active"} 2` + "\n",
		`todo_introspect_requests_total{result="inactive"} 1` + "\n",
		`todo_introspect_requests_total{result="error"} 1` + "\n",
		"todo_introspect_call_duration_seconds_count 4\n",
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %q", strings.TrimSpace(want))
		}
	}
	for _, unwanted := range []string{"todo_jwks_", "todo_token_cache_"} {
		if strings.Contains(metrics, unwanted) {
			t.Errorf("/metrics has %s* metrics in introspect mode", unwanted)
		}
	}
	if got := js.fetches.Load(); got != 0 {
		t.Errorf("JWKS fetches in introspect mode = %d, want 0", got)
	}

	if err := r.stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	logs := r.logs.String()
	if !strings.Contains(logs, `"msg":"token check","mode":"introspect"`) {
		t.Errorf("logs lack the token check line of introspect mode:\n%s", logs)
	}
	if strings.Contains(logs, auth.activeToken) {
		t.Error("logs contain the access token")
	}
}

func TestIntrospectNotReadyWithoutAuthService(t *testing.T) {
	js := startJWKS(t)
	auth := startIntrospectServer(t)
	auth.stop()

	cfg := testConfig(t, js.url(), t.TempDir())
	cfg.TokenCheck = config.TokenCheckIntrospect
	cfg.IntrospectAddr = auth.addr
	r := start(t, cfg)
	waitHealth(t, r.conn, "", healthpb.HealthCheckResponse_SERVING)
	waitLog(t, r.logs, `"msg":"not ready"`)

	resp, err := healthpb.NewHealthClient(r.conn).Check(testContext(t), &healthpb.HealthCheckRequest{Service: app.ReadinessService})
	if err != nil {
		t.Fatalf("health Check: %v", err)
	}
	if resp.GetStatus() != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Errorf("readiness with the auth service down = %v, want NOT_SERVING", resp.GetStatus())
	}
	if logs := r.logs.String(); !strings.Contains(logs, "auth service at "+auth.addr) {
		t.Errorf("not-ready log line does not name the auth service address:\n%s", logs)
	}

	ctx := metadata.AppendToOutgoingContext(testContext(t), "authorization", "Bearer "+auth.activeToken)
	_, err = todov1.NewTodoServiceClient(r.conn).ListTodos(ctx, &todov1.ListTodosRequest{})
	if got := status.Code(err); got != codes.Unavailable {
		t.Errorf("ListTodos with the auth service down: code = %v (%v), want Unavailable", got, err)
	}
}
