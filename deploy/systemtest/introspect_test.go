package systemtest

import (
	"context"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	authv1 "example.com/todoapp/proto/gen/auth/v1"
	todov1 "example.com/todoapp/proto/gen/todo/v1"
)

// TestIntrospectRevocation runs one auth-service and two todo-services, one
// verifying tokens offline (the default) and one with -token-check
// introspect, and compares them after a logout and while the auth service
// is down.
func TestIntrospectRevocation(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	auth := StartAuth(t)
	offline := StartTodo(t, auth)
	introspect := StartTodo(t, auth, "-token-check", "introspect", "-introspect-addr", auth.GRPCAddr)
	authClient := authv1.NewAuthServiceClient(Dial(t, auth.GRPCAddr))
	todoClients := map[string]todov1.TodoServiceClient{
		"offline":    todov1.NewTodoServiceClient(Dial(t, offline.GRPCAddr)),
		"introspect": todov1.NewTodoServiceClient(Dial(t, introspect.GRPCAddr)),
	}
	offlineHealth := healthpb.NewHealthClient(Dial(t, offline.GRPCAddr))
	introspectHealth := healthpb.NewHealthClient(Dial(t, introspect.GRPCAddr))

	// Two sessions of one user: the first is logged out, the second stays
	// signed in and shows that only the revoked session stops working.
	const email, password = "carol@example.com", "a long enough passphrase"
	signUp, err := authClient.SignUp(ctx, &authv1.SignUpRequest{Email: email, Password: password})
	if err != nil {
		t.Fatalf("SignUp: %v", err)
	}
	login, err := authClient.Login(ctx, &authv1.LoginRequest{Email: email, Password: password})
	if err != nil {
		t.Fatalf("Login: %v", err)
	}
	loggedOut, signedIn := signUp.GetTokens(), login.GetTokens()

	t.Run("both modes accept the tokens", func(t *testing.T) {
		for mode, client := range todoClients {
			if _, err := client.CreateTodo(withToken(ctx, loggedOut.GetAccessToken()), &todov1.CreateTodoRequest{Todo: &todov1.Todo{Title: "written in " + mode + " mode"}}); err != nil {
				t.Errorf("CreateTodo(%s, first session): %v", mode, err)
			}
			if _, err := client.ListTodos(withToken(ctx, signedIn.GetAccessToken()), &todov1.ListTodosRequest{}); err != nil {
				t.Errorf("ListTodos(%s, second session): %v", mode, err)
			}
		}
	})

	if _, err := authClient.Logout(ctx, &authv1.LogoutRequest{RefreshToken: loggedOut.GetRefreshToken()}); err != nil {
		t.Fatalf("Logout(first session): %v", err)
	}

	t.Run("logout", func(t *testing.T) {
		// Introspect mode rejects the logged-out session's token on the
		// first call after Logout returns, with no wait and no retry.
		_, err := todoClients["introspect"].ListTodos(withToken(ctx, loggedOut.GetAccessToken()), &todov1.ListTodosRequest{})
		wantCode(t, "ListTodos(introspect, logged-out session)", err, codes.Unauthenticated)

		// Offline mode keeps accepting it until its exp: the revocation
		// window of offline verification.
		if _, err := todoClients["offline"].ListTodos(withToken(ctx, loggedOut.GetAccessToken()), &todov1.ListTodosRequest{}); err != nil {
			t.Errorf("ListTodos(offline, logged-out session): %v, want it accepted until exp", err)
		}

		for mode, client := range todoClients {
			if _, err := client.ListTodos(withToken(ctx, signedIn.GetAccessToken()), &todov1.ListTodosRequest{}); err != nil {
				t.Errorf("ListTodos(%s, second session): %v", mode, err)
			}
		}
	})

	t.Run("auth service down", func(t *testing.T) {
		auth.Stop(t)

		_, err := todoClients["introspect"].ListTodos(withToken(ctx, signedIn.GetAccessToken()), &todov1.ListTodosRequest{})
		wantCode(t, "ListTodos(introspect, auth-service stopped)", err, codes.Unavailable)
		_, err = todoClients["introspect"].ListTodos(withToken(ctx, loggedOut.GetAccessToken()), &todov1.ListTodosRequest{})
		wantCode(t, "ListTodos(introspect, logged-out session, auth-service stopped)", err, codes.Unavailable)
		waitHealth(t, introspectHealth, "readiness", healthpb.HealthCheckResponse_NOT_SERVING)

		if _, err := todoClients["offline"].CreateTodo(withToken(ctx, signedIn.GetAccessToken()), &todov1.CreateTodoRequest{Todo: &todov1.Todo{Title: "written while auth is down"}}); err != nil {
			t.Errorf("CreateTodo(offline, auth-service stopped): %v", err)
		}
		if _, err := todoClients["offline"].ListTodos(withToken(ctx, loggedOut.GetAccessToken()), &todov1.ListTodosRequest{}); err != nil {
			t.Errorf("ListTodos(offline, logged-out session, auth-service stopped): %v", err)
		}
		resp, err := offlineHealth.Check(ctx, &healthpb.HealthCheckRequest{Service: "readiness"})
		if err != nil {
			t.Fatalf("offline readiness Check: %v", err)
		}
		if resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			t.Errorf("offline readiness with auth-service stopped = %v, want SERVING", resp.GetStatus())
		}
	})

	t.Run("auth service back", func(t *testing.T) {
		auth.Start(t)
		waitHealth(t, introspectHealth, "readiness", healthpb.HealthCheckResponse_SERVING)

		if _, err := todoClients["introspect"].ListTodos(withToken(ctx, signedIn.GetAccessToken()), &todov1.ListTodosRequest{}); err != nil {
			t.Errorf("ListTodos(introspect, after auth-service restart): %v", err)
		}
		_, err := todoClients["introspect"].ListTodos(withToken(ctx, loggedOut.GetAccessToken()), &todov1.ListTodosRequest{})
		wantCode(t, "ListTodos(introspect, logged-out session, after auth-service restart)", err, codes.Unauthenticated)
	})

	t.Run("no tokens in logs", func(t *testing.T) {
		logs := auth.Logs() + offline.Logs() + introspect.Logs()
		secrets := map[string]string{
			"first access token":   loggedOut.GetAccessToken(),
			"first refresh token":  loggedOut.GetRefreshToken(),
			"second access token":  signedIn.GetAccessToken(),
			"second refresh token": signedIn.GetRefreshToken(),
		}
		for name, secret := range secrets {
			if secret != "" && strings.Contains(logs, secret) {
				t.Errorf("logs contain the %s", name)
			}
			if parts := strings.Split(secret, "."); len(parts) == 3 && strings.Contains(logs, parts[2]) {
				t.Errorf("logs contain the signature of the %s", name)
			}
		}
		if !strings.Contains(introspect.Logs(), `"mode":"introspect"`) {
			t.Error("the introspect todo-service did not log its token check mode")
		}
		if !strings.Contains(auth.Logs(), "IntrospectToken") {
			t.Error("auth-service logs have no line for IntrospectToken; the secret check above would prove nothing")
		}
	})
}
