package deploy

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/utils/ptr"

	"example.com/todoapp/deploy/systemtest"
	authv1 "example.com/todoapp/proto/gen/auth/v1"
	todov1 "example.com/todoapp/proto/gen/todo/v1"
)

func TestMain(m *testing.M) {
	systemtest.Main(m)
}

// flagPattern matches a flag line in the help output of Go's flag package:
// two spaces, a dash and the name, as in "  -grpc-addr address".
var flagPattern = regexp.MustCompile(`(?m)^  -([a-z0-9][a-z0-9-]*)(?:\s|$)`)

// serviceEnvNames runs a service binary with -h and returns the
// environment variable of each flag it lists.
func serviceEnvNames(t *testing.T, binary, prefix string) []string {
	t.Helper()

	// The services print the usage for -h and exit with status 0.
	out, err := exec.Command(binary, "serve", "-h").CombinedOutput()
	if err != nil {
		t.Fatalf("%s serve -h: %v\n%s", binary, err, out)
	}
	var names []string
	for _, match := range flagPattern.FindAllStringSubmatch(string(out), -1) {
		names = append(names, prefix+strings.ToUpper(strings.ReplaceAll(match[1], "-", "_")))
	}
	if len(names) == 0 {
		t.Fatalf("%s serve -h listed no flags:\n%s", binary, out)
	}
	return names
}

// TestConfigMapsUseServiceFlags checks that each ConfigMap variable is read
// by a flag. The services ignore any other variable, so a typo or a missing
// flag would silently fall back to a default such as SQLite.
func TestConfigMapsUseServiceFlags(t *testing.T) {
	authBin, todoBin := systemtest.Binaries(t)
	objects := renderAndDecode(t, "prod")

	services := []struct {
		configMap string
		binary    string
		prefix    string
	}{
		{"auth-service-config", authBin, "AUTH_"},
		{"todo-service-config", todoBin, "TODO_"},
	}
	for _, svc := range services {
		t.Run(svc.configMap, func(t *testing.T) {
			known := serviceEnvNames(t, svc.binary, svc.prefix)

			var config *corev1.ConfigMap
			for _, o := range objects {
				if c, ok := o.Value.(*corev1.ConfigMap); ok && strings.HasPrefix(c.Name, svc.configMap+"-") {
					config = c
				}
			}
			if config == nil {
				t.Fatalf("ConfigMap %s-<hash> not found in the prod render", svc.configMap)
			}

			for name := range config.Data {
				if !slices.Contains(known, name) {
					t.Errorf("%s sets %s, but the service has no flag for it (flags: %s)", config.Name, name, strings.Join(known, " "))
				}
			}
		})
	}
}

// TestNginxGatewayRealServices runs the sign-up, log-in and todo flow
// through nginx in front of the real binaries, then stops each backend and
// checks the status the client gets.
func TestNginxGatewayRealServices(t *testing.T) {
	nginxPath := requireTool(t, "nginx", "apt-get install -y nginx")

	auth := systemtest.StartAuth(t)
	todo := systemtest.StartTodo(t, auth)
	gateway := startNginx(t, nginxPath, auth.GRPCAddr, todo.GRPCAddr, "10s")
	conn := dialGateway(t, gateway.Addr)
	authClient := authv1.NewAuthServiceClient(conn)
	todoClient := todov1.NewTodoServiceClient(conn)

	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()

	const email, password = "gateway-user@example.com", "correct horse battery staple"
	signUp, err := authClient.SignUp(ctx, &authv1.SignUpRequest{Email: email, Password: password})
	if err != nil {
		t.Fatalf("SignUp through nginx: %v", err)
	}
	if signUp.GetUser().GetId() == "" {
		t.Fatal("SignUp through nginx returned no user id")
	}

	login, err := authClient.Login(ctx, &authv1.LoginRequest{Email: email, Password: password})
	if err != nil {
		t.Fatalf("Login through nginx: %v", err)
	}
	authCtx := metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+login.GetTokens().GetAccessToken())

	created, err := todoClient.CreateTodo(authCtx, &todov1.CreateTodoRequest{Todo: &todov1.Todo{Title: "through the gateway"}})
	if err != nil {
		t.Fatalf("CreateTodo through nginx: %v", err)
	}
	got, err := todoClient.GetTodo(authCtx, &todov1.GetTodoRequest{Id: created.GetTodo().GetId()})
	if err != nil {
		t.Fatalf("GetTodo through nginx: %v", err)
	}
	if got.GetTodo().GetTitle() != "through the gateway" {
		t.Errorf("GetTodo title = %q, want %q", got.GetTodo().GetTitle(), "through the gateway")
	}
	list, err := todoClient.ListTodos(authCtx, &todov1.ListTodosRequest{})
	if err != nil {
		t.Fatalf("ListTodos through nginx: %v", err)
	}
	if len(list.GetTodos()) != 1 {
		t.Errorf("ListTodos returned %d todos, want 1", len(list.GetTodos()))
	}

	_, err = todoClient.ListTodos(ctx, &todov1.ListTodosRequest{})
	if got := status.Code(err); got != codes.Unauthenticated {
		t.Errorf("ListTodos without a token through nginx: code = %v (%v), want Unauthenticated", got, err)
	}

	names, err := listServices(ctx, conn, "x-todoapp-backend", "auth")
	if err != nil {
		t.Fatalf("list auth services through nginx: %v", err)
	}
	if !slices.Contains(names, "auth.v1.AuthService") {
		t.Errorf("auth reflection through nginx listed %q, want auth.v1.AuthService", names)
	}

	err = conn.Invoke(ctx, "/unknown.v1.NothingService/DoNothing", &todov1.GetTodoRequest{}, &todov1.GetTodoResponse{})
	if got := status.Code(err); got != codes.Unimplemented {
		t.Errorf("unknown service through nginx: code = %v (%v), want Unimplemented", got, err)
	}

	// The todo service verifies tokens with cached keys, so it keeps
	// working while the auth service is down.
	auth.Stop(t)
	_, err = authClient.Login(ctx, &authv1.LoginRequest{Email: email, Password: password})
	if got := status.Code(err); got != codes.Unavailable {
		t.Errorf("Login with auth-service stopped: code = %v (%v), want Unavailable", got, err)
	}
	if _, err := todoClient.GetTodo(authCtx, &todov1.GetTodoRequest{Id: created.GetTodo().GetId()}); err != nil {
		t.Errorf("GetTodo with auth-service stopped: %v, want success", err)
	}

	todo.Stop(t)
	_, err = todoClient.GetTodo(authCtx, &todov1.GetTodoRequest{Id: created.GetTodo().GetId()})
	if got := status.Code(err); got != codes.Unavailable {
		t.Errorf("GetTodo with todo-service stopped: code = %v (%v), want Unavailable", got, err)
	}
}

// requirePostgres returns TEST_DATABASE_URL and the path of psql. Without
// either the test skips, or fails when REQUIRE_POSTGRES=1.
func requirePostgres(t *testing.T) (databaseURL, psql string) {
	t.Helper()

	databaseURL = os.Getenv("TEST_DATABASE_URL")
	psql, err := exec.LookPath("psql")
	switch {
	case databaseURL == "" && os.Getenv("REQUIRE_POSTGRES") == "1":
		t.Fatal("TEST_DATABASE_URL is not set and REQUIRE_POSTGRES=1")
	case databaseURL == "":
		t.Skip("TEST_DATABASE_URL is not set; set it to a PostgreSQL URL to run this test")
	case err != nil && os.Getenv("REQUIRE_POSTGRES") == "1":
		t.Fatalf("psql not found and REQUIRE_POSTGRES=1: %v", err)
	case err != nil:
		t.Skipf("psql not found: %v", err)
	}
	return databaseURL, psql
}

// createTestDatabase creates a database with a unique name on the server
// of serverURL, drops it in t.Cleanup and returns its URL.
func createTestDatabase(t *testing.T, psql, serverURL, prefix string) string {
	t.Helper()

	random := make([]byte, 6)
	if _, err := rand.Read(random); err != nil {
		t.Fatal(err)
	}
	name := prefix + "_" + hex.EncodeToString(random)

	runSQL := func(statement string) error {
		out, err := exec.Command(psql, "--no-psqlrc", "-v", "ON_ERROR_STOP=1", "-d", serverURL, "-c", statement).CombinedOutput()
		if err != nil {
			return fmt.Errorf("psql -c %q: %v\n%s", statement, err, out)
		}
		return nil
	}
	if err := runSQL("CREATE DATABASE " + name); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := runSQL("DROP DATABASE IF EXISTS " + name + " WITH (FORCE)"); err != nil {
			t.Error(err)
		}
	})

	u, err := url.Parse(serverURL)
	if err != nil {
		t.Fatalf("parse TEST_DATABASE_URL: %v", err)
	}
	u.Path = "/" + name
	return u.String()
}

// manifestService is one service's settings as the prod render gives them.
type manifestService struct {
	Env         map[string]string // the ConfigMap's variables
	Args        []string          // the container's args
	SecretsDir  string            // mount path of the Secret volume
	ProbePort   int32             // port of the gRPC probes
	ReadyName   string            // health service name of the readiness probe
	ListenPorts map[string]string // *_GRPC_ADDR and *_HTTP_ADDR ports
}

func readManifestService(t *testing.T, objects []renderedObject, name, prefix string) manifestService {
	t.Helper()

	deployment := findObject[*appsv1.Deployment](t, objects, "Deployment", name)
	container := deployment.Spec.Template.Spec.Containers[0]
	svc := manifestService{
		Args:        container.Args,
		ProbePort:   container.ReadinessProbe.GRPC.Port,
		ReadyName:   ptr.Deref(container.ReadinessProbe.GRPC.Service, ""),
		ListenPorts: map[string]string{},
	}
	for _, mount := range container.VolumeMounts {
		if mount.Name == "secrets" {
			svc.SecretsDir = mount.MountPath
		}
	}
	if svc.SecretsDir == "" {
		t.Fatalf("Deployment %s mounts no volume named secrets", name)
	}

	for _, o := range objects {
		if c, ok := o.Value.(*corev1.ConfigMap); ok && strings.HasPrefix(c.Name, name+"-config-") {
			svc.Env = c.Data
		}
	}
	if svc.Env == nil {
		t.Fatalf("ConfigMap %s-config-<hash> not found", name)
	}
	for _, key := range []string{prefix + "GRPC_ADDR", prefix + "HTTP_ADDR"} {
		_, port, err := net.SplitHostPort(svc.Env[key])
		if err != nil {
			t.Fatalf("invalid %s %q in the ConfigMap: %v", key, svc.Env[key], err)
		}
		svc.ListenPorts[key] = port
	}
	return svc
}

// TestServicesStartWithManifestConfig starts both real binaries with the
// environment of the prod ConfigMaps and the Secrets as files, on
// PostgreSQL, and waits until the readiness probes would pass. Only the
// listen addresses, the in-cluster URLs and the file paths are rewritten
// for loopback and a temporary folder.
func TestServicesStartWithManifestConfig(t *testing.T) {
	serverURL, psql := requirePostgres(t)
	authBin, todoBin := systemtest.Binaries(t)
	objects := renderAndDecode(t, "prod")

	auth := readManifestService(t, objects, "auth-service", "AUTH_")
	todo := readManifestService(t, objects, "todo-service", "TODO_")

	// The probes must target the port each service listens on.
	if got := auth.ListenPorts["AUTH_GRPC_ADDR"]; got != strconv.Itoa(int(auth.ProbePort)) {
		t.Errorf("AUTH_GRPC_ADDR port = %s, want the probe port %d", got, auth.ProbePort)
	}
	if got := todo.ListenPorts["TODO_GRPC_ADDR"]; got != strconv.Itoa(int(todo.ProbePort)) {
		t.Errorf("TODO_GRPC_ADDR port = %s, want the probe port %d", got, todo.ProbePort)
	}

	// The secret files, with the keys the Secrets have in the render.
	dir := t.TempDir()
	authSecrets, todoSecrets := filepath.Join(dir, "auth-secrets"), filepath.Join(dir, "todo-secrets")
	kek := make([]byte, 32)
	if _, err := rand.Read(kek); err != nil {
		t.Fatal(err)
	}
	writeFiles(t, authSecrets, map[string]string{
		"kek":          base64.StdEncoding.EncodeToString(kek) + "\n",
		"database-url": createTestDatabase(t, psql, serverURL, "deploy_auth") + "\n",
	})
	writeFiles(t, todoSecrets, map[string]string{
		"database-url": createTestDatabase(t, psql, serverURL, "deploy_todo") + "\n",
	})

	authGRPC, authHTTP := systemtest.FreeAddr(t), systemtest.FreeAddr(t)
	todoGRPC, todoHTTP := systemtest.FreeAddr(t), systemtest.FreeAddr(t)
	inClusterAuthURL := "http://auth-service:" + auth.ListenPorts["AUTH_HTTP_ADDR"]
	loopbackAuthURL := "http://" + authHTTP

	authEnv := rewriteEnv(t, auth.Env, map[string]string{
		"AUTH_GRPC_ADDR": authGRPC,
		"AUTH_HTTP_ADDR": authHTTP,
		"AUTH_DATA_DIR":  filepath.Join(dir, "auth-data"),
	}, auth.SecretsDir, authSecrets, inClusterAuthURL, loopbackAuthURL)
	todoEnv := rewriteEnv(t, todo.Env, map[string]string{
		"TODO_GRPC_ADDR": todoGRPC,
		"TODO_HTTP_ADDR": todoHTTP,
		"TODO_DATA_DIR":  filepath.Join(dir, "todo-data"),
	}, todo.SecretsDir, todoSecrets, inClusterAuthURL, loopbackAuthURL)

	startWithEnv(t, authBin, auth.Args, authEnv, authGRPC, auth.ReadyName)
	startWithEnv(t, todoBin, todo.Args, todoEnv, todoGRPC, todo.ReadyName)
}

func writeFiles(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

// rewriteEnv returns env as NAME=value lines with the overrides applied,
// secret file paths moved from secretsDir to localSecrets, and fromURL
// replaced with toURL. A *_FILE variable outside secretsDir fails the
// test, because no Secret would provide its file.
func rewriteEnv(t *testing.T, env, overrides map[string]string, secretsDir, localSecrets, fromURL, toURL string) []string {
	t.Helper()

	lines := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir()}
	for name, value := range env {
		switch {
		case overrides[name] != "":
			value = overrides[name]
		case strings.HasSuffix(name, "_FILE"):
			rel, err := filepath.Rel(secretsDir, value)
			if err != nil || strings.HasPrefix(rel, "..") {
				t.Fatalf("%s = %s, want a file in the Secret mount %s", name, value, secretsDir)
			}
			value = filepath.Join(localSecrets, rel)
		default:
			value = strings.ReplaceAll(value, fromURL, toURL)
		}
		lines = append(lines, name+"="+value)
	}
	return lines
}

// startWithEnv starts a service binary with exactly env, stops it in
// t.Cleanup, and waits up to 60 s for the health service readyName to
// report SERVING on grpcAddr.
func startWithEnv(t *testing.T, binary string, args, env []string, grpcAddr, readyName string) {
	t.Helper()

	cmd := exec.Command(binary, args...)
	cmd.Env = env
	var output strings.Builder
	cmd.Stdout = &output
	cmd.Stderr = &output
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", binary, err)
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
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("%s output:\n%s", filepath.Base(binary), output.String())
		}
	})

	conn := systemtest.Dial(t, grpcAddr)
	client := healthpb.NewHealthClient(conn)
	deadline := time.Now().Add(60 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
		resp, err := client.Check(ctx, &healthpb.HealthCheckRequest{Service: readyName})
		cancel()
		if err == nil && resp.GetStatus() == healthpb.HealthCheckResponse_SERVING {
			return
		}

		select {
		case <-exited:
			t.Fatalf("%s exited before it was ready: %v", filepath.Base(binary), waitErr)
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s health %q not SERVING within 60 s (last: %v, %v)", filepath.Base(binary), readyName, resp.GetStatus(), err)
		}
	}
}
