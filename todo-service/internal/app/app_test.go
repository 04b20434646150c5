package app_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"database/sql"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"example.com/todoapp/proto/accesstoken"
	todov1 "example.com/todoapp/proto/gen/todo/v1"
	"example.com/todoapp/todo-service/internal/app"
	"example.com/todoapp/todo-service/internal/config"
	"example.com/todoapp/todo-service/internal/store"
	"example.com/todoapp/todo-service/internal/store/storetest"
)

const (
	testIssuer = "http://127.0.0.1:1"
	testKid    = "app-test-key"
)

var (
	keyOnce sync.Once
	testKey *rsa.PrivateKey
)

func signingKey(t *testing.T) *rsa.PrivateKey {
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

// jwksServer serves the test key as a JWKS document on loopback, or 503
// while down is set.
type jwksServer struct {
	*httptest.Server
	down    atomic.Bool
	fetches atomic.Int64
}

func startJWKS(t *testing.T) *jwksServer {
	t.Helper()
	pub := signingKey(t).PublicKey
	doc, err := json.Marshal(map[string]any{"keys": []map[string]string{{
		"kty": "RSA",
		"kid": testKid,
		"alg": "RS256",
		"use": "sig",
		"n":   base64.RawURLEncoding.EncodeToString(pub.N.Bytes()),
		"e":   base64.RawURLEncoding.EncodeToString(big.NewInt(int64(pub.E)).Bytes()),
	}}})
	if err != nil {
		t.Fatalf("marshal JWKS: %v", err)
	}

	js := &jwksServer{}
	js.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		js.fetches.Add(1)
		if js.down.Load() {
			http.Error(w, "down for the test", http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "max-age=60")
		w.Write(doc)
	}))
	t.Cleanup(js.Close)
	return js
}

func (js *jwksServer) url() string {
	return js.URL + "/.well-known/jwks.json"
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

func testConfig(t *testing.T, jwksURL, dataDir string) config.Config {
	t.Helper()
	cfg := config.Default()
	cfg.GRPCAddr = "127.0.0.1:0"
	cfg.HTTPAddr = "127.0.0.1:0"
	cfg.DataDir = dataDir
	cfg.Issuer = testIssuer
	cfg.JWKS.URL = jwksURL
	cfg.ShutdownTimeout = 5 * time.Second
	cfg.ShutdownDelay = 0
	if err := cfg.Validate(); err != nil {
		t.Fatalf("test config is invalid: %v", err)
	}
	return cfg
}

// running is a Server started in-process, with its client connection.
type running struct {
	server *app.Server
	conn   *grpc.ClientConn
	logs   *syncBuffer
	stop   func() error
}

// start runs the service with cfg until the test ends or stop is called.
func start(t *testing.T, cfg config.Config) *running {
	t.Helper()
	logs := &syncBuffer{}
	ctx, cancel := context.WithCancel(context.Background())
	server, err := app.New(ctx, cfg, slog.New(slog.NewJSONHandler(logs, nil)))
	if err != nil {
		cancel()
		t.Fatalf("app.New: %v", err)
	}

	done := make(chan error, 1)
	go func() { done <- server.Run(ctx) }()
	var once sync.Once
	var runErr error
	stop := func() error {
		once.Do(func() {
			cancel()
			select {
			case runErr = <-done:
			case <-time.After(30 * time.Second):
				runErr = errors.New("Run did not return within 30s of the cancel")
			}
		})
		return runErr
	}
	t.Cleanup(func() {
		if err := stop(); err != nil {
			t.Errorf("Run: %v", err)
		}
	})

	conn, err := grpc.NewClient(server.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatalf("grpc.NewClient: %v", err)
	}
	t.Cleanup(func() { conn.Close() })
	return &running{server: server, conn: conn, logs: logs, stop: stop}
}

func testContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// waitHealth watches service until it reports want, and then ends the
// watch so that it does not delay a graceful stop.
func waitHealth(t *testing.T, conn *grpc.ClientConn, service string, want healthpb.HealthCheckResponse_ServingStatus) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	stream, err := healthpb.NewHealthClient(conn).Watch(ctx, &healthpb.HealthCheckRequest{Service: service})
	if err != nil {
		t.Fatalf("health Watch(%q): %v", service, err)
	}
	for {
		resp, err := stream.Recv()
		if err != nil {
			t.Fatalf("health Watch(%q) ended before status %v: %v", service, want, err)
		}
		if resp.GetStatus() == want {
			return
		}
	}
}

func tokenContext(t *testing.T, userID string) context.Context {
	t.Helper()
	now := time.Now()
	token, err := accesstoken.Sign(accesstoken.Claims{
		Issuer:    testIssuer,
		Subject:   userID,
		Audience:  []string{"todo-service"},
		Expiry:    now.Add(10 * time.Minute),
		IssuedAt:  now,
		ID:        uuid.NewString(),
		SessionID: uuid.NewString(),
	}, accesstoken.SigningKey{ID: testKid, Key: signingKey(t)})
	if err != nil {
		t.Fatalf("accesstoken.Sign: %v", err)
	}
	return metadata.AppendToOutgoingContext(testContext(t), "authorization", "Bearer "+token)
}

func TestServeEndToEnd(t *testing.T) {
	js := startJWKS(t)
	r := start(t, testConfig(t, js.url(), t.TempDir()))
	waitHealth(t, r.conn, app.ReadinessService, healthpb.HealthCheckResponse_SERVING)
	waitHealth(t, r.conn, "", healthpb.HealthCheckResponse_SERVING)

	client := todov1.NewTodoServiceClient(r.conn)
	ctx := tokenContext(t, uuid.NewString())
	created, err := client.CreateTodo(ctx, &todov1.CreateTodoRequest{Todo: &todov1.Todo{Title: "ship it"}})
	if err != nil {
		t.Fatalf("CreateTodo: %v", err)
	}
	list, err := client.ListTodos(ctx, &todov1.ListTodosRequest{})
	if err != nil {
		t.Fatalf("ListTodos: %v", err)
	}
	if len(list.GetTodos()) != 1 || list.GetTodos()[0].GetId() != created.GetTodo().GetId() {
		t.Errorf("ListTodos = %v, want the created todo only", list.GetTodos())
	}

	resp, err := http.Get("http://" + r.server.HTTPAddr() + "/metrics")
	if err != nil {
		t.Fatalf("GET /metrics: %v", err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatalf("read /metrics: %v", err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Errorf("GET /metrics status = %d, want 200", resp.StatusCode)
	}
	for _, want := range []string{
		`grpc_server_handled_total{grpc_code="OK",grpc_method="/todo.v1.TodoService/CreateTodo"} 1`,
		"grpc_server_handling_seconds_bucket",
		"go_goroutines",
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}

	if err := r.stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	logs := r.logs.String()
	for _, want := range []string{`"msg":"starting todo-service"`, `"msg":"serving"`, `"msg":"ready"`, `"msg":"draining"`, `"msg":"stopped"`} {
		if !strings.Contains(logs, want) {
			t.Errorf("logs lack %s", want)
		}
	}
}

func TestUnavailableBeforeKeys(t *testing.T) {
	js := startJWKS(t)
	js.down.Store(true)
	r := start(t, testConfig(t, js.url(), t.TempDir()))
	waitHealth(t, r.conn, "", healthpb.HealthCheckResponse_SERVING)

	client := todov1.NewTodoServiceClient(r.conn)
	_, err := client.ListTodos(tokenContext(t, uuid.NewString()), &todov1.ListTodosRequest{})
	if got := status.Code(err); got != codes.Unavailable {
		t.Errorf("ListTodos before keys: code = %v (%v), want Unavailable", got, err)
	}

	resp, err := healthpb.NewHealthClient(r.conn).Check(testContext(t), &healthpb.HealthCheckRequest{Service: app.ReadinessService})
	if err != nil {
		t.Fatalf("health Check: %v", err)
	}
	if resp.GetStatus() != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Errorf("readiness = %v, want NOT_SERVING", resp.GetStatus())
	}
}

// TestRestartWithJWKSDown restarts the service on the same data directory
// while the JWKS endpoint fails, and checks that the persisted key set still
// verifies tokens.
func TestRestartWithJWKSDown(t *testing.T) {
	js := startJWKS(t)
	dataDir := t.TempDir()
	cfg := testConfig(t, js.url(), dataDir)

	first := start(t, cfg)
	waitHealth(t, first.conn, app.ReadinessService, healthpb.HealthCheckResponse_SERVING)
	if err := first.stop(); err != nil {
		t.Fatalf("first Run: %v", err)
	}

	js.down.Store(true)
	second := start(t, cfg)
	waitHealth(t, second.conn, app.ReadinessService, healthpb.HealthCheckResponse_SERVING)
	client := todov1.NewTodoServiceClient(second.conn)
	if _, err := client.ListTodos(tokenContext(t, uuid.NewString()), &todov1.ListTodosRequest{}); err != nil {
		t.Errorf("ListTodos after restart with JWKS down: %v", err)
	}
}

func TestShutdownTurnsHealthNotServing(t *testing.T) {
	js := startJWKS(t)
	cfg := testConfig(t, js.url(), t.TempDir())
	cfg.ShutdownTimeout = 500 * time.Millisecond
	r := start(t, cfg)
	waitHealth(t, r.conn, "", healthpb.HealthCheckResponse_SERVING)

	// The watch stream is an RPC in flight that never ends by itself, so
	// shutdown must fall back to stopping the server after its timeout.
	stream, err := healthpb.NewHealthClient(r.conn).Watch(testContext(t), &healthpb.HealthCheckRequest{Service: ""})
	if err != nil {
		t.Fatalf("health Watch: %v", err)
	}
	if resp, err := stream.Recv(); err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("first health update = %v, %v; want SERVING", resp, err)
	}

	stopped := make(chan error, 1)
	go func() { stopped <- r.stop() }()

	resp, err := stream.Recv()
	if err != nil {
		t.Fatalf("health Watch ended without a NOT_SERVING update: %v", err)
	}
	if resp.GetStatus() != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Errorf("health update after shutdown = %v, want NOT_SERVING", resp.GetStatus())
	}
	if err := <-stopped; err != nil {
		t.Errorf("Run: %v", err)
	}
	if logs := r.logs.String(); !strings.Contains(logs, "shutdown timeout passed") {
		t.Errorf("logs do not report the RPCs cancelled at the timeout:\n%s", logs)
	}
}

// TestShutdownDelayAnswersNotServing checks that during the shutdown delay
// the server still responds to health checks, with NOT_SERVING, so a
// client that polls learns of the shutdown before calls start to fail.
func TestShutdownDelayAnswersNotServing(t *testing.T) {
	js := startJWKS(t)
	cfg := testConfig(t, js.url(), t.TempDir())
	cfg.ShutdownDelay = time.Second
	r := start(t, cfg)
	waitHealth(t, r.conn, "", healthpb.HealthCheckResponse_SERVING)

	stopped := make(chan error, 1)
	go func() { stopped <- r.stop() }()

	client := healthpb.NewHealthClient(r.conn)
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := client.Check(testContext(t), &healthpb.HealthCheckRequest{Service: ""})
		if err != nil {
			t.Fatalf("health Check failed before it returned NOT_SERVING: %v", err)
		}
		if resp.GetStatus() == healthpb.HealthCheckResponse_NOT_SERVING {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("health Check never returned NOT_SERVING after shutdown began")
		}
		time.Sleep(time.Millisecond)
	}
	if err := <-stopped; err != nil {
		t.Errorf("Run: %v", err)
	}
	if logs := r.logs.String(); !strings.Contains(logs, "shutdown delay") {
		t.Errorf("logs do not mention the shutdown delay:\n%s", logs)
	}
}

// TestShutdownDrainsRPC holds the SQLite write lock from outside so that a
// CreateTodo stays in flight, shuts the service down, and then releases
// the lock: the call must still succeed, and Run must report the drain.
func TestShutdownDrainsRPC(t *testing.T) {
	js := startJWKS(t)
	dataDir := t.TempDir()
	r := start(t, testConfig(t, js.url(), dataDir))
	waitHealth(t, r.conn, app.ReadinessService, healthpb.HealthCheckResponse_SERVING)

	locker, err := sql.Open("sqlite", filepath.Join(dataDir, store.SQLiteFileName))
	if err != nil {
		t.Fatalf("open the SQLite file: %v", err)
	}
	defer locker.Close()
	lockConn, err := locker.Conn(testContext(t))
	if err != nil {
		t.Fatalf("get a connection: %v", err)
	}
	defer lockConn.Close()
	if _, err := lockConn.ExecContext(testContext(t), "BEGIN IMMEDIATE"); err != nil {
		t.Fatalf("take the write lock: %v", err)
	}

	created := make(chan error, 1)
	go func() {
		client := todov1.NewTodoServiceClient(r.conn)
		_, err := client.CreateTodo(tokenContext(t, uuid.NewString()), &todov1.CreateTodoRequest{Todo: &todov1.Todo{Title: "in flight"}})
		created <- err
	}()
	waitMetric(t, r.server.HTTPAddr(), "grpc_server_in_flight_rpcs 1")

	stopped := make(chan error, 1)
	go func() { stopped <- r.stop() }()
	waitLog(t, r.logs, `"msg":"draining","in_flight_rpcs":1`)

	if _, err := lockConn.ExecContext(testContext(t), "ROLLBACK"); err != nil {
		t.Fatalf("release the write lock: %v", err)
	}
	if err := <-created; err != nil {
		t.Errorf("CreateTodo in flight during shutdown: %v", err)
	}
	if err := <-stopped; err != nil {
		t.Errorf("Run: %v", err)
	}
	if logs := r.logs.String(); !strings.Contains(logs, `"msg":"gRPC server drained"`) {
		t.Errorf("logs do not report the drain:\n%s", logs)
	}
}

// TestDeadlineIsNotInternal lets a CreateTodo run past its deadline while
// the SQLite write lock is held elsewhere. The server must record the call
// as ended by the caller, not as an internal error.
func TestDeadlineIsNotInternal(t *testing.T) {
	js := startJWKS(t)
	dataDir := t.TempDir()
	r := start(t, testConfig(t, js.url(), dataDir))
	waitHealth(t, r.conn, app.ReadinessService, healthpb.HealthCheckResponse_SERVING)

	locker, err := sql.Open("sqlite", filepath.Join(dataDir, store.SQLiteFileName))
	if err != nil {
		t.Fatalf("open the SQLite file: %v", err)
	}
	defer locker.Close()
	lockConn, err := locker.Conn(testContext(t))
	if err != nil {
		t.Fatalf("get a connection: %v", err)
	}
	defer lockConn.Close()
	if _, err := lockConn.ExecContext(testContext(t), "BEGIN IMMEDIATE"); err != nil {
		t.Fatalf("take the write lock: %v", err)
	}
	defer lockConn.ExecContext(context.Background(), "ROLLBACK")

	ctx, cancel := context.WithTimeout(tokenContext(t, uuid.NewString()), 200*time.Millisecond)
	defer cancel()
	_, err = todov1.NewTodoServiceClient(r.conn).CreateTodo(ctx, &todov1.CreateTodoRequest{Todo: &todov1.Todo{Title: "late"}})
	if got := status.Code(err); got != codes.DeadlineExceeded {
		t.Errorf("CreateTodo code = %v (%v), want DeadlineExceeded", got, err)
	}

	// The server observes either its own deadline or the client's cancel,
	// whichever comes first. The caller causes both.
	waitLog(t, r.logs, `"method":"/todo.v1.TodoService/CreateTodo"`)
	logs := r.logs.String()
	if !strings.Contains(logs, `"code":"DeadlineExceeded"`) && !strings.Contains(logs, `"code":"Canceled"`) {
		t.Errorf("CreateTodo log line has neither code DeadlineExceeded nor Canceled:\n%s", logs)
	}
	if strings.Contains(logs, `"code":"Internal"`) {
		t.Errorf("CreateTodo past its deadline was logged as Internal:\n%s", logs)
	}
}

// waitMetric polls /metrics until its text contains want.
func waitMetric(t *testing.T, httpAddr, want string) {
	t.Helper()
	ctx := testContext(t)
	for {
		resp, err := http.Get("http://" + httpAddr + "/metrics")
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if strings.Contains(string(body), want) {
				return
			}
		}
		select {
		case <-ctx.Done():
			t.Fatalf("/metrics never contained %q", want)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// waitLog polls the logs until they contain want.
func waitLog(t *testing.T, logs *syncBuffer, want string) {
	t.Helper()
	ctx := testContext(t)
	for !strings.Contains(logs.String(), want) {
		select {
		case <-ctx.Done():
			t.Fatalf("logs never contained %s:\n%s", want, logs.String())
		case <-time.After(10 * time.Millisecond):
		}
	}
}

func TestRunMigrateSQLite(t *testing.T) {
	dataDir := filepath.Join(t.TempDir(), "data")
	var out syncBuffer
	err := app.Run(testContext(t), []string{"migrate", "-data-dir", dataDir, "-log-format", "text"}, func(string) string { return "" }, &out)
	if err != nil {
		t.Fatalf("Run(migrate): %v\n%s", err, out.String())
	}
	assertMigrated(t, store.Options{DataDir: dataDir})
	if !strings.Contains(out.String(), "migrations applied") {
		t.Errorf("migrate output lacks the applied versions:\n%s", out.String())
	}
}

func TestRunMigratePostgres(t *testing.T) {
	url := storetest.PostgresURL(t)
	env := map[string]string{"TODO_DATABASE_URL": url}
	var out syncBuffer
	err := app.Run(testContext(t), []string{"migrate"}, func(name string) string { return env[name] }, &out)
	if err != nil {
		t.Fatalf("Run(migrate): %v\n%s", err, out.String())
	}
	assertMigrated(t, store.Options{DatabaseURL: url})
}

func assertMigrated(t *testing.T, opts store.Options) {
	t.Helper()
	s, err := store.Open(testContext(t), opts)
	if err != nil {
		t.Fatalf("store.Open: %v", err)
	}
	defer s.Close()
	applied, err := s.Migrate(testContext(t))
	if err != nil {
		t.Fatalf("Migrate: %v", err)
	}
	if len(applied) != 0 {
		t.Errorf("Migrate after the migrate command applied %v, want nothing", applied)
	}
}

func TestRunRejectsConfigBeforeOpening(t *testing.T) {
	dataDir := filepath.Join(t.TempDir(), "never-created")
	var out syncBuffer
	err := app.Run(testContext(t), []string{"serve", "-data-dir", dataDir, "-clock-skew", "0s", "-log-format", "xml"},
		func(string) string { return "" }, &out)
	if err == nil {
		t.Fatal("Run with an invalid config succeeded")
	}
	for _, want := range []string{"-clock-skew", "-log-format"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Run error = %v, want it to name %s", err, want)
		}
	}
	if _, err := os.Stat(dataDir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("data directory exists after a config error (stat: %v), want nothing opened", err)
	}
}

func TestPortInUseOpensNoStore(t *testing.T) {
	// The test holds a loopback port so that the service cannot bind it.
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	t.Cleanup(func() { taken.Close() })
	js := startJWKS(t)

	for _, listener := range []string{"grpc", "http"} {
		t.Run(listener, func(t *testing.T) {
			dataDir := filepath.Join(t.TempDir(), "never-created")
			cfg := testConfig(t, js.url(), dataDir)
			if listener == "grpc" {
				cfg.GRPCAddr = taken.Addr().String()
			} else {
				cfg.HTTPAddr = taken.Addr().String()
			}

			server, err := app.New(testContext(t), cfg, slog.New(slog.DiscardHandler))
			if err == nil {
				server.Run(canceledContext())
				t.Fatalf("app.New with %s address %s in use succeeded", listener, taken.Addr())
			}
			if _, err := os.Stat(dataDir); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("data directory exists after the port clash (stat: %v), want no store opened", err)
			}
		})
	}
}

// canceledContext returns a context that is already done, so that Run
// shuts down at once.
func canceledContext() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}

func TestRunUnknownCommand(t *testing.T) {
	var out syncBuffer
	err := app.Run(testContext(t), []string{"frobnicate"}, func(string) string { return "" }, &out)
	if err == nil || !strings.Contains(err.Error(), "frobnicate") {
		t.Errorf("Run(frobnicate) = %v, want an unknown command error", err)
	}
	if !strings.Contains(out.String(), "migrate") {
		t.Errorf("usage text lacks the commands:\n%s", out.String())
	}
}

func TestRunHelpListsCommands(t *testing.T) {
	for _, args := range [][]string{{"-h"}, {"serve", "-h"}, {"migrate", "-h"}} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			var out syncBuffer
			if err := app.Run(testContext(t), args, func(string) string { return "" }, &out); err != nil {
				t.Fatalf("Run(%q) = %v, want nil", args, err)
			}
			for _, want := range []string{"todo-service [serve] [flags]", "todo-service migrate [flags]", "-grpc-addr"} {
				if !strings.Contains(out.String(), want) {
					t.Errorf("Run(%q) usage text lacks %q:\n%s", args, want, out.String())
				}
			}
		})
	}
}

// TestRunServeFromEnv runs the default command with its settings in the
// environment, as a container would, and stops it by cancelling ctx.
func TestRunServeFromEnv(t *testing.T) {
	js := startJWKS(t)
	env := map[string]string{
		"TODO_GRPC_ADDR": "127.0.0.1:0",
		"TODO_HTTP_ADDR": "127.0.0.1:0",
		"TODO_DATA_DIR":  t.TempDir(),
		"TODO_ISSUER":    testIssuer,
		"TODO_JWKS_URL":  js.url(),
	}
	logs := &syncBuffer{}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- app.Run(ctx, nil, func(name string) string { return env[name] }, logs) }()

	grpcAddr := waitServingAddr(t, logs, done)
	conn, err := grpc.NewClient(grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatalf("grpc.NewClient: %v", err)
	}
	defer conn.Close()
	waitHealth(t, conn, app.ReadinessService, healthpb.HealthCheckResponse_SERVING)

	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run: %v", err)
	}
}

// waitServingAddr reads the gRPC address from the "serving" log line.
func waitServingAddr(t *testing.T, logs *syncBuffer, done <-chan error) string {
	t.Helper()
	ctx := testContext(t)
	for {
		scanner := bufio.NewScanner(strings.NewReader(logs.String()))
		for scanner.Scan() {
			var line struct {
				Msg      string `json:"msg"`
				GRPCAddr string `json:"grpc_addr"`
			}
			if json.Unmarshal(scanner.Bytes(), &line) == nil && line.Msg == "serving" {
				return line.GRPCAddr
			}
		}
		select {
		case err := <-done:
			t.Fatalf("Run returned before serving: %v\n%s", err, logs.String())
		case <-ctx.Done():
			t.Fatalf("no serving log line:\n%s", logs.String())
		case <-time.After(10 * time.Millisecond):
		}
	}
}

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
