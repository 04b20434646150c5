package systemtest

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	authv1 "example.com/todoapp/proto/gen/auth/v1"
	todov1 "example.com/todoapp/proto/gen/todo/v1"
)

// Short lifecycle settings so that several rotations happen within a test.
// They satisfy auth-service's start-up rules: the publish lead covers two
// poll intervals, the JWKS max-age and the verifier refresh interval, and a
// retired key outlives the access-token lifetime plus skew and caching.
var fastRotationArgs = []string{
	"-access-token-ttl", "10s",
	"-key-rotation-period", "12s",
	"-key-publish-lead", "7s",
	"-key-retired-lifetime", "20s",
	"-key-poll-interval", "1s",
	"-key-jwks-max-age", "1s",
	"-key-verifier-refresh-interval", "2s",
	"-key-verifier-clock-skew", "1s",
}

var fastJWKSArgs = []string{
	"-clock-skew", "1s",
	"-jwks-min-refresh-interval", "500ms",
	"-jwks-max-refresh-interval", "2s",
}

// TestRotationWithTwoReplicas runs two auth-service replicas on one
// PostgreSQL database and the real todo-service, and checks that a client
// that keeps refreshing through both replicas and calling todo-service
// across at least two key rotations gets no error.
func TestRotationWithTwoReplicas(t *testing.T) {
	if testing.Short() {
		t.Skip("takes about a minute; skipped in -short mode")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	dbURL := PostgresURL(t)
	kek := make([]byte, 32)
	rand.Read(kek)

	replicaA := NewAuth(t, append([]string{"-database-url", dbURL}, fastRotationArgs...)...)
	issuer := "http://" + replicaA.HTTPAddr
	replicaB := NewAuth(t, append([]string{"-database-url", dbURL, "-issuer", issuer}, fastRotationArgs...)...)
	for _, r := range []*Service{replicaA, replicaB} {
		r.Env = []string{"AUTH_KEK=" + base64.StdEncoding.EncodeToString(kek)}
		r.Start(t)
	}
	todo := StartTodo(t, replicaA, fastJWKSArgs...)

	replicas := []authv1.AuthServiceClient{
		authv1.NewAuthServiceClient(Dial(t, replicaA.GRPCAddr)),
		authv1.NewAuthServiceClient(Dial(t, replicaB.GRPCAddr)),
	}
	todoClient := todov1.NewTodoServiceClient(Dial(t, todo.GRPCAddr))

	signUp, err := replicas[0].SignUp(ctx, &authv1.SignUpRequest{Email: "rotation@example.com", Password: "rotate all the keys"})
	if err != nil {
		t.Fatalf("SignUp: %v", err)
	}
	tokens := signUp.GetTokens()

	// previous is an access token signed by the key before the current one;
	// it must keep verifying until it expires.
	var previous string
	kids := map[string]bool{kidOf(t, tokens.GetAccessToken()): true}
	deadline := time.Now().Add(75 * time.Second)
	for i := 0; len(kids) < 3 && time.Now().Before(deadline); i++ {
		resp, err := replicas[i%2].Refresh(ctx, &authv1.RefreshRequest{RefreshToken: tokens.GetRefreshToken()})
		if err != nil {
			t.Fatalf("Refresh #%d through replica %d: %v", i, i%2, err)
		}
		fresh := resp.GetTokens()
		if kid := kidOf(t, fresh.GetAccessToken()); !kids[kid] {
			kids[kid] = true
			previous = tokens.GetAccessToken()
			t.Logf("after %d refreshes: new signing key %s", i+1, kid)
		}
		tokens = fresh

		if _, err := todoClient.ListTodos(withToken(ctx, tokens.GetAccessToken()), &todov1.ListTodosRequest{PageSize: 1}); err != nil {
			t.Fatalf("ListTodos with the token of refresh #%d (kid %s): %v", i, kidOf(t, tokens.GetAccessToken()), err)
		}
		if previous != "" {
			_, err := todoClient.ListTodos(withToken(ctx, previous), &todov1.ListTodosRequest{PageSize: 1})
			if err != nil && !(status.Code(err) == codes.Unauthenticated && expired(t, previous)) {
				t.Fatalf("ListTodos with the unexpired token of the previous key (kid %s): %v", kidOf(t, previous), err)
			}
		}
		time.Sleep(250 * time.Millisecond)
	}
	if len(kids) < 3 {
		t.Fatalf("saw %d signing keys in 75s, want at least 3 (two rotations)", len(kids))
	}
}

// kidOf returns the kid header of a compact JWS without verifying it.
func kidOf(t *testing.T, token string) string {
	t.Helper()

	var header struct {
		Kid string `json:"kid"`
	}
	decodeSegment(t, token, 0, &header)
	return header.Kid
}

// expired reports whether the token's exp has passed, allowing the 1s skew
// the test configures.
func expired(t *testing.T, token string) bool {
	t.Helper()

	var claims struct {
		Exp int64 `json:"exp"`
	}
	decodeSegment(t, token, 1, &claims)
	return time.Now().After(time.Unix(claims.Exp, 0).Add(-time.Second))
}

func decodeSegment(t *testing.T, token string, index int, v any) {
	t.Helper()

	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		t.Fatalf("token has %d segments, want 3", len(parts))
	}
	raw, err := base64.RawURLEncoding.DecodeString(parts[index])
	if err != nil {
		t.Fatalf("decode token segment %d: %v", index, err)
	}
	if err := json.Unmarshal(raw, v); err != nil {
		t.Fatalf("parse token segment %d: %v", index, err)
	}
}
