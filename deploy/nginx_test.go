package deploy

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/reflection"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"

	authv1 "example.com/todoapp/proto/gen/auth/v1"
	todov1 "example.com/todoapp/proto/gen/todo/v1"
)

const (
	nginxTemplatePath  = "nginx/nginx.conf.template"
	nginxCommittedPath = "nginx/nginx.conf"
)

// kubernetesNginxValues fill the template for the committed nginx.conf: a
// gateway Pod in the services' namespace with a read-only root filesystem
// and an emptyDir at /tmp.
var kubernetesNginxValues = map[string]string{
	"LISTEN":           "8080",
	"AUTH_UPSTREAM":    "auth-service:50051",
	"TODO_UPSTREAM":    "todo-service:50052",
	"RUNTIME_DIR":      "/tmp",
	"ERROR_LOG":        "/dev/stderr",
	"ACCESS_LOG":       "/dev/stdout",
	"UPSTREAM_TIMEOUT": "30s",
}

const committedNginxHeader = "# Generated from nginx.conf.template with the Kubernetes values in\n" +
	"# deploy/nginx_test.go. Edit the template, not this file.\n#\n"

// fillNginxTemplate drops the template's own comment lines (those that
// start with ##) and replaces every @@NAME@@ placeholder with values[NAME].
// It fails when a placeholder has no value or a value has no placeholder.
func fillNginxTemplate(template string, values map[string]string) (string, error) {
	var templateLines []string
	for _, line := range strings.SplitAfter(template, "\n") {
		if !strings.HasPrefix(line, "##") {
			templateLines = append(templateLines, line)
		}
	}
	out := strings.Join(templateLines, "")

	for name, value := range values {
		placeholder := "@@" + name + "@@"
		if !strings.Contains(out, placeholder) {
			return "", fmt.Errorf("template has no placeholder %s", placeholder)
		}
		out = strings.ReplaceAll(out, placeholder, value)
	}

	for i, line := range strings.Split(out, "\n") {
		if strings.Contains(line, "@@") {
			return "", fmt.Errorf("line %d has a placeholder without a value: %s", i+1, strings.TrimSpace(line))
		}
	}
	return out, nil
}

func TestNginxConfigMatchesTemplate(t *testing.T) {
	template, err := os.ReadFile(nginxTemplatePath)
	if err != nil {
		t.Fatal(err)
	}
	filled, err := fillNginxTemplate(string(template), kubernetesNginxValues)
	if err != nil {
		t.Fatalf("fill %s: %v", nginxTemplatePath, err)
	}
	want := committedNginxHeader + filled

	if os.Getenv("UPDATE_NGINX_CONF") == "1" {
		if err := os.WriteFile(nginxCommittedPath, []byte(want), 0o644); err != nil {
			t.Fatal(err)
		}
	}

	got, err := os.ReadFile(nginxCommittedPath)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != want {
		t.Errorf("%s differs from %s filled with the Kubernetes values; regenerate it with UPDATE_NGINX_CONF=1 go test -run TestNginxConfigMatchesTemplate .", nginxCommittedPath, nginxTemplatePath)
	}
}

// recordedCall is the metadata a backend received with one call.
type recordedCall struct {
	Method   string
	Metadata metadata.MD
}

// stubBackend is a real gRPC server on loopback in place of one service.
// It registers the health and reflection services and records the
// metadata of every call.
type stubBackend struct {
	Addr   string
	server *grpc.Server

	mu    sync.Mutex
	calls []recordedCall // guarded by mu
}

func (b *stubBackend) record(ctx context.Context, method string) {
	md, _ := metadata.FromIncomingContext(ctx)
	b.mu.Lock()
	defer b.mu.Unlock()
	b.calls = append(b.calls, recordedCall{Method: method, Metadata: md.Copy()})
}

// lastCall returns the last recorded call of method.
func (b *stubBackend) lastCall(t *testing.T, method string) recordedCall {
	t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	for i := len(b.calls) - 1; i >= 0; i-- {
		if b.calls[i].Method == method {
			return b.calls[i]
		}
	}
	t.Fatalf("backend %s received no call of %s", b.Addr, method)
	return recordedCall{}
}

func startStubBackend(t *testing.T, register func(*grpc.Server)) *stubBackend {
	t.Helper()
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}

	backend := &stubBackend{Addr: listener.Addr().String()}
	backend.server = grpc.NewServer(grpc.UnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		backend.record(ctx, info.FullMethod)
		return handler(ctx, req)
	}))
	register(backend.server)
	healthServer := health.NewServer()
	healthServer.SetServingStatus("readiness", healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(backend.server, healthServer)
	reflection.Register(backend.server)

	go backend.server.Serve(listener)
	t.Cleanup(backend.server.Stop)
	return backend
}

type stubAuthService struct {
	authv1.UnimplementedAuthServiceServer
}

func (stubAuthService) GetCurrentUser(context.Context, *authv1.GetCurrentUserRequest) (*authv1.GetCurrentUserResponse, error) {
	return &authv1.GetCurrentUserResponse{User: &authv1.User{Id: "user-from-auth-stub", Email: "stub@example.com"}}, nil
}

type stubTodoService struct {
	todov1.UnimplementedTodoServiceServer
	release chan struct{} // closed at the end of the test to free hanging calls
}

func (stubTodoService) GetTodo(_ context.Context, req *todov1.GetTodoRequest) (*todov1.GetTodoResponse, error) {
	return &todov1.GetTodoResponse{Todo: &todov1.Todo{Id: req.GetId(), Title: "from todo stub"}}, nil
}

// ListTodos hangs until the caller goes away, so the gateway's upstream
// timeout fires first.
func (s stubTodoService) ListTodos(ctx context.Context, _ *todov1.ListTodosRequest) (*todov1.ListTodosResponse, error) {
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-s.release:
		return nil, status.Error(codes.Aborted, "released by test cleanup")
	}
}

// runningNginx is an nginx master process started by a test.
type runningNginx struct {
	Addr       string
	ErrorLog   string
	RuntimeDir string
}

// freeLoopbackPort returns a TCP port on 127.0.0.1 that was free a moment
// ago, because nginx cannot listen on port 0 and report the port it bound.
func freeLoopbackPort(t *testing.T) int {
	t.Helper()
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer listener.Close()
	return listener.Addr().(*net.TCPAddr).Port
}

// startNginx fills the template for loopback backends, checks it with
// nginx -t and runs nginx in the foreground with every file in a temporary
// folder. It stops nginx in t.Cleanup.
func startNginx(t *testing.T, nginxPath, authAddr, todoAddr, upstreamTimeout string) *runningNginx {
	t.Helper()
	return startNginxAs(t, nil, nginxPath, authAddr, todoAddr, upstreamTimeout)
}

// startNginxAs is startNginx with nginx running as the user and group of
// credential, which owns the temporary folder. A nil credential runs nginx
// as the test's own user.
func startNginxAs(t *testing.T, credential *syscall.Credential, nginxPath, authAddr, todoAddr, upstreamTimeout string) *runningNginx {
	t.Helper()

	dir := t.TempDir()
	// Worker processes drop to the user nobody when the test runs as root,
	// and they need to reach the temporary folders.
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if credential != nil {
		if err := os.Chown(dir, int(credential.Uid), int(credential.Gid)); err != nil {
			t.Fatal(err)
		}
		// t.TempDir makes the folder above dir private to the test's user.
		if err := os.Chmod(filepath.Dir(dir), 0o755); err != nil {
			t.Fatal(err)
		}
	}

	template, err := os.ReadFile(nginxTemplatePath)
	if err != nil {
		t.Fatal(err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", freeLoopbackPort(t))
	gateway := &runningNginx{Addr: addr, ErrorLog: filepath.Join(dir, "error.log"), RuntimeDir: dir}
	config, err := fillNginxTemplate(string(template), map[string]string{
		"LISTEN":           addr,
		"AUTH_UPSTREAM":    authAddr,
		"TODO_UPSTREAM":    todoAddr,
		"RUNTIME_DIR":      dir,
		"ERROR_LOG":        gateway.ErrorLog,
		"ACCESS_LOG":       filepath.Join(dir, "access.log"),
		"UPSTREAM_TIMEOUT": upstreamTimeout,
	})
	if err != nil {
		t.Fatal(err)
	}
	configPath := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(configPath, []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}

	args := []string{"-p", dir, "-c", configPath, "-e", gateway.ErrorLog}
	check := exec.Command(nginxPath, append(args, "-t")...)
	check.SysProcAttr = &syscall.SysProcAttr{Credential: credential}
	if out, err := check.CombinedOutput(); err != nil {
		t.Fatalf("nginx -t: %v\n%s", err, out)
	}

	cmd := exec.Command(nginxPath, append(args, "-g", "daemon off;")...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: credential}
	var output strings.Builder
	cmd.Stdout = &output
	cmd.Stderr = &output
	if err := cmd.Start(); err != nil {
		t.Fatalf("start nginx: %v", err)
	}
	// exited is closed once the process has exited, with its result in
	// waitErr, so both the start-up wait and the cleanup can watch it.
	exited := make(chan struct{})
	var waitErr error
	go func() {
		waitErr = cmd.Wait()
		close(exited)
	}()
	t.Cleanup(func() {
		// SIGTERM is nginx's fast shutdown.
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
		if t.Failed() || os.Getenv("NGINX_TEST_LOGS") == "1" {
			errorLog, _ := os.ReadFile(gateway.ErrorLog)
			accessLog, _ := os.ReadFile(filepath.Join(dir, "access.log"))
			t.Logf("nginx output:\n%s\nerror log:\n%s\naccess log:\n%s", output.String(), errorLog, accessLog)
		}
	})

	// Wait until nginx accepts connections, for at most 10 s.
	deadline := time.Now().Add(10 * time.Second)
	for {
		conn, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			conn.Close()
			return gateway
		}
		select {
		case <-exited:
			t.Fatalf("nginx exited before it accepted connections: %v", waitErr)
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("nginx did not accept connections on %s within 10 s: %v", addr, err)
		}
	}
}

func dialGateway(t *testing.T, addr string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// listServices calls ListServices on the reflection service behind the
// gateway, with extra request metadata, and returns the service names.
func listServices(ctx context.Context, conn *grpc.ClientConn, md ...string) ([]string, error) {
	ctx = metadata.AppendToOutgoingContext(ctx, md...)
	stream, err := reflectionpb.NewServerReflectionClient(conn).ServerReflectionInfo(ctx)
	if err != nil {
		return nil, err
	}
	defer stream.CloseSend()

	if err := stream.Send(&reflectionpb.ServerReflectionRequest{
		MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{},
	}); err != nil {
		return nil, err
	}
	resp, err := stream.Recv()
	if err != nil {
		return nil, err
	}
	var names []string
	for _, s := range resp.GetListServicesResponse().GetService() {
		names = append(names, s.GetName())
	}
	return names, nil
}

func TestNginxGateway(t *testing.T) {
	nginxPath := requireTool(t, "nginx", "apt-get install -y nginx")

	auth := startStubBackend(t, func(s *grpc.Server) {
		authv1.RegisterAuthServiceServer(s, stubAuthService{})
	})
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	todo := startStubBackend(t, func(s *grpc.Server) {
		todov1.RegisterTodoServiceServer(s, stubTodoService{release: release})
	})

	// A short upstream timeout keeps the DEADLINE_EXCEEDED case fast, and
	// it is still far longer than a loopback call to the stubs takes.
	gateway := startNginx(t, nginxPath, auth.Addr, todo.Addr, "1s")
	conn := dialGateway(t, gateway.Addr)
	authClient := authv1.NewAuthServiceClient(conn)
	todoClient := todov1.NewTodoServiceClient(conn)

	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()

	t.Run("routes auth service", func(t *testing.T) {
		resp, err := authClient.GetCurrentUser(ctx, &authv1.GetCurrentUserRequest{})
		if err != nil {
			t.Fatalf("GetCurrentUser through nginx: %v", err)
		}
		if got := resp.GetUser().GetId(); got != "user-from-auth-stub" {
			t.Errorf("GetCurrentUser user id = %q, want %q", got, "user-from-auth-stub")
		}
	})

	t.Run("routes todo service", func(t *testing.T) {
		resp, err := todoClient.GetTodo(ctx, &todov1.GetTodoRequest{Id: "todo-1"})
		if err != nil {
			t.Fatalf("GetTodo through nginx: %v", err)
		}
		if got := resp.GetTodo().GetTitle(); got != "from todo stub" {
			t.Errorf("GetTodo title = %q, want %q", got, "from todo stub")
		}
	})

	t.Run("passes metadata", func(t *testing.T) {
		callCtx := metadata.AppendToOutgoingContext(ctx,
			"authorization", "Bearer test-token",
			"x-request-id", "request-42",
		)
		if _, err := todoClient.GetTodo(callCtx, &todov1.GetTodoRequest{Id: "todo-2"}); err != nil {
			t.Fatalf("GetTodo through nginx: %v", err)
		}

		md := todo.lastCall(t, "/todo.v1.TodoService/GetTodo").Metadata
		if got := md.Get("authorization"); len(got) != 1 || got[0] != "Bearer test-token" {
			t.Errorf("backend authorization = %q, want [\"Bearer test-token\"]", got)
		}
		if got := md.Get("x-request-id"); len(got) != 1 || got[0] != "request-42" {
			t.Errorf("backend x-request-id = %q, want [\"request-42\"]", got)
		}
		if got := md.Get("x-forwarded-for"); len(got) != 1 || got[0] != "127.0.0.1" {
			t.Errorf("backend x-forwarded-for = %q, want [\"127.0.0.1\"]", got)
		}
		if got := md.Get("x-real-ip"); len(got) != 1 || got[0] != "127.0.0.1" {
			t.Errorf("backend x-real-ip = %q, want [\"127.0.0.1\"]", got)
		}
	})

	t.Run("appends to x-forwarded-for", func(t *testing.T) {
		callCtx := metadata.AppendToOutgoingContext(ctx, "x-forwarded-for", "192.0.2.7")
		if _, err := authClient.GetCurrentUser(callCtx, &authv1.GetCurrentUserRequest{}); err != nil {
			t.Fatalf("GetCurrentUser through nginx: %v", err)
		}

		md := auth.lastCall(t, "/auth.v1.AuthService/GetCurrentUser").Metadata
		if got := md.Get("x-forwarded-for"); len(got) != 1 || got[0] != "192.0.2.7, 127.0.0.1" {
			t.Errorf("backend x-forwarded-for = %q, want [\"192.0.2.7, 127.0.0.1\"]", got)
		}
	})

	t.Run("generates request id", func(t *testing.T) {
		if _, err := authClient.GetCurrentUser(ctx, &authv1.GetCurrentUserRequest{}); err != nil {
			t.Fatalf("GetCurrentUser through nginx: %v", err)
		}

		md := auth.lastCall(t, "/auth.v1.AuthService/GetCurrentUser").Metadata
		got := md.Get("x-request-id")
		if len(got) != 1 || len(got[0]) != 32 {
			t.Errorf("backend x-request-id = %q, want one 32-character id generated by nginx", got)
		}
	})

	t.Run("routes reflection by header", func(t *testing.T) {
		tests := []struct {
			name     string
			metadata []string
			want     string
		}{
			{"default is todo", nil, "todo.v1.TodoService"},
			{"header picks auth", []string{"x-todoapp-backend", "auth"}, "auth.v1.AuthService"},
			{"header picks todo", []string{"x-todoapp-backend", "todo"}, "todo.v1.TodoService"},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				names, err := listServices(ctx, conn, tc.metadata...)
				if err != nil {
					t.Fatalf("list services through nginx: %v", err)
				}
				found := false
				for _, name := range names {
					found = found || name == tc.want
				}
				if !found {
					t.Errorf("listed services = %q, want %s among them", names, tc.want)
				}
			})
		}
	})

	t.Run("routes health by header", func(t *testing.T) {
		healthClient := healthpb.NewHealthClient(conn)
		for _, backend := range []string{"auth", "todo"} {
			callCtx := metadata.AppendToOutgoingContext(ctx, "x-todoapp-backend", backend)
			resp, err := healthClient.Check(callCtx, &healthpb.HealthCheckRequest{Service: "readiness"})
			if err != nil {
				t.Fatalf("health check of %s through nginx: %v", backend, err)
			}
			if resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
				t.Errorf("health check of %s = %v, want SERVING", backend, resp.GetStatus())
			}
		}
		auth.lastCall(t, "/grpc.health.v1.Health/Check")
		todo.lastCall(t, "/grpc.health.v1.Health/Check")
	})

	t.Run("unknown service is unimplemented", func(t *testing.T) {
		err := conn.Invoke(ctx, "/unknown.v1.NothingService/DoNothing", &healthpb.HealthCheckRequest{}, &healthpb.HealthCheckResponse{})
		if got := status.Code(err); got != codes.Unimplemented {
			t.Errorf("unknown service through nginx: code = %v (%v), want Unimplemented", got, err)
		}
	})

	t.Run("oversized request is resource exhausted", func(t *testing.T) {
		// 5 MiB is over the gateway's client_max_body_size of 4 MiB.
		req := &todov1.GetTodoRequest{Id: strings.Repeat("x", 5<<20)}
		_, err := todoClient.GetTodo(ctx, req)
		if got := status.Code(err); got != codes.ResourceExhausted {
			t.Errorf("GetTodo with a 5 MiB request: code = %v (%v), want ResourceExhausted", got, err)
		}
	})

	t.Run("backend timeout is deadline exceeded", func(t *testing.T) {
		// The client's own deadline is much longer than the gateway's 1 s
		// upstream timeout, so the status comes from nginx.
		callCtx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()

		_, err := todoClient.ListTodos(callCtx, &todov1.ListTodosRequest{})
		if got := status.Code(err); got != codes.DeadlineExceeded {
			t.Fatalf("hanging ListTodos through nginx: code = %v (%v), want DeadlineExceeded", got, err)
		}
		if callCtx.Err() != nil {
			t.Errorf("client deadline expired (%v), want the gateway to time out first", callCtx.Err())
		}
		if got := status.Convert(err).Message(); got != "backend timed out" {
			t.Errorf("hanging ListTodos message = %q, want %q", got, "backend timed out")
		}
	})

	// Stopping the auth backend must not disturb todo calls. This case
	// comes last because it leaves the auth backend down.
	t.Run("stopped backend is unavailable", func(t *testing.T) {
		auth.server.Stop()

		_, err := authClient.GetCurrentUser(ctx, &authv1.GetCurrentUserRequest{})
		if got := status.Code(err); got != codes.Unavailable {
			t.Errorf("GetCurrentUser with auth stopped: code = %v (%v), want Unavailable", got, err)
		}
		if _, err := todoClient.GetTodo(ctx, &todov1.GetTodoRequest{Id: "todo-3"}); err != nil {
			t.Errorf("GetTodo with auth stopped: %v, want success", err)
		}
	})
}

func TestNginxUnreachableBackend(t *testing.T) {
	nginxPath := requireTool(t, "nginx", "apt-get install -y nginx")

	// Nothing listens on these ports, because each was free a moment ago.
	authAddr := fmt.Sprintf("127.0.0.1:%d", freeLoopbackPort(t))
	todoAddr := fmt.Sprintf("127.0.0.1:%d", freeLoopbackPort(t))
	gateway := startNginx(t, nginxPath, authAddr, todoAddr, "1s")
	conn := dialGateway(t, gateway.Addr)

	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()

	_, err := todov1.NewTodoServiceClient(conn).GetTodo(ctx, &todov1.GetTodoRequest{Id: "todo-1"})
	if got := status.Code(err); got != codes.Unavailable {
		t.Errorf("GetTodo with no backend: code = %v (%v), want Unavailable", got, err)
	}
	if got := status.Convert(err).Message(); got != "backend unavailable" {
		t.Errorf("GetTodo with no backend: message = %q, want %q", got, "backend unavailable")
	}
}

// TestNginxRunsAsNonRoot starts nginx as the user nobody, as the gateway
// Deployment runs it as a non-root user. nobody cannot write the default
// log and temporary paths of Debian's nginx, so the test also shows that
// the configuration and the -e flag move every file nginx writes into the
// runtime folder.
func TestNginxRunsAsNonRoot(t *testing.T) {
	nginxPath := requireTool(t, "nginx", "apt-get install -y nginx")
	if os.Geteuid() != 0 {
		t.Skip("the test must run as root to start nginx as another user")
	}
	nobody, err := user.Lookup("nobody")
	if err != nil {
		t.Skipf("user nobody not found: %v", err)
	}
	uid, err := strconv.ParseUint(nobody.Uid, 10, 32)
	if err != nil {
		t.Fatal(err)
	}
	gid, err := strconv.ParseUint(nobody.Gid, 10, 32)
	if err != nil {
		t.Fatal(err)
	}

	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	todo := startStubBackend(t, func(s *grpc.Server) {
		todov1.RegisterTodoServiceServer(s, stubTodoService{release: release})
	})
	credential := &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
	gateway := startNginxAs(t, credential, nginxPath, todo.Addr, todo.Addr, "5s")
	conn := dialGateway(t, gateway.Addr)

	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if _, err := todov1.NewTodoServiceClient(conn).GetTodo(ctx, &todov1.GetTodoRequest{Id: "todo-1"}); err != nil {
		t.Errorf("GetTodo through nginx running as nobody: %v", err)
	}

	// The master process writes the pid file, so its owner shows the user
	// nginx runs as.
	info, err := os.Stat(filepath.Join(gateway.RuntimeDir, "nginx.pid"))
	if err != nil {
		t.Fatal(err)
	}
	if owner := info.Sys().(*syscall.Stat_t).Uid; owner != credential.Uid {
		t.Errorf("nginx.pid owner uid = %d, want %d (nobody)", owner, credential.Uid)
	}
}
