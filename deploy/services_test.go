package deploy

import (
	"context"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	corev1 "k8s.io/api/core/v1"

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
