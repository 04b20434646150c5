package systemtest

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"testing"
	"time"

	"github.com/google/uuid"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"example.com/todoapp/proto/accesstoken"
	authv1 "example.com/todoapp/proto/gen/auth/v1"
	todov1 "example.com/todoapp/proto/gen/todo/v1"
)

// TestTodoRestartWhileAuthDown checks that todo-service verifies tokens from
// the key set it persisted when it restarts while the JWKS endpoint is down.
func TestTodoRestartWhileAuthDown(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	auth := StartAuth(t)
	todo := StartTodo(t, auth)
	authClient := authv1.NewAuthServiceClient(Dial(t, auth.GRPCAddr))
	todoClient := todov1.NewTodoServiceClient(Dial(t, todo.GRPCAddr))

	resp, err := authClient.SignUp(ctx, &authv1.SignUpRequest{Email: "restart@example.com", Password: "a long enough password"})
	if err != nil {
		t.Fatalf("SignUp: %v", err)
	}
	token := resp.GetTokens().GetAccessToken()
	if _, err := todoClient.CreateTodo(withToken(ctx, token), &todov1.CreateTodoRequest{Todo: &todov1.Todo{Title: "before restart"}}); err != nil {
		t.Fatalf("CreateTodo before restart: %v", err)
	}

	auth.Stop(t)
	todo.Stop(t)
	todo.Start(t)

	list, err := todoClient.ListTodos(withToken(ctx, token), &todov1.ListTodosRequest{})
	if err != nil {
		t.Fatalf("ListTodos after restart with auth-service down: %v", err)
	}
	if len(list.GetTodos()) != 1 {
		t.Errorf("ListTodos after restart returned %d todos, want 1", len(list.GetTodos()))
	}
	for name, bad := range tamperedTokens(t, token) {
		_, err := todoClient.ListTodos(withToken(ctx, bad), &todov1.ListTodosRequest{})
		wantCode(t, "ListTodos("+name+" token) after restart", err, codes.Unauthenticated)
	}
}

// TestTodoWithoutKeysIsUnavailable checks that todo-service is not ready and
// rejects authenticated calls with UNAVAILABLE, not UNAUTHENTICATED, until
// it has loaded a key set.
func TestTodoWithoutKeysIsUnavailable(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	// Nothing listens on this address: the port was free a moment ago.
	deadJWKS := "http://" + FreeAddr(t) + "/.well-known/jwks.json"
	todo := NewTodo(t, "http://issuer.invalid", deadJWKS)
	todo.StartNoWait(t)

	health := healthpb.NewHealthClient(Dial(t, todo.GRPCAddr))
	waitHealth(t, health, "", healthpb.HealthCheckResponse_SERVING)
	got, err := health.Check(ctx, &healthpb.HealthCheckRequest{Service: "readiness"})
	if err != nil {
		t.Fatalf("Check(readiness): %v", err)
	}
	if got.GetStatus() != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Errorf("readiness = %v without a key set, want NOT_SERVING", got.GetStatus())
	}

	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	token, err := accesstoken.Sign(accesstoken.Claims{
		Issuer:    "http://issuer.invalid",
		Subject:   uuid.NewString(),
		Audience:  []string{"todo-service"},
		Expiry:    now.Add(5 * time.Minute),
		IssuedAt:  now,
		NotBefore: now,
		ID:        uuid.NewString(),
		SessionID: uuid.NewString(),
		Email:     "nobody@example.com",
	}, accesstoken.SigningKey{ID: "test-key", Key: key})
	if err != nil {
		t.Fatalf("Sign: %v", err)
	}

	todoClient := todov1.NewTodoServiceClient(Dial(t, todo.GRPCAddr))
	_, err = todoClient.ListTodos(withToken(ctx, token), &todov1.ListTodosRequest{})
	wantCode(t, "ListTodos(before keys are loaded)", err, codes.Unavailable)
}

func waitHealth(t *testing.T, client healthpb.HealthClient, service string, want healthpb.HealthCheckResponse_ServingStatus) {
	t.Helper()

	deadline := time.Now().Add(startTimeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		resp, err := client.Check(ctx, &healthpb.HealthCheckRequest{Service: service})
		cancel()
		if err == nil && resp.GetStatus() == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("health of %q = %v, %v after %s; want %v", service, resp.GetStatus(), err, startTimeout, want)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
