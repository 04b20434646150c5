package systemtest

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	authv1 "example.com/todoapp/proto/gen/auth/v1"
	todov1 "example.com/todoapp/proto/gen/todo/v1"
)

func TestMain(m *testing.M) {
	Main(m)
}

// user is one signed-up account as a test client sees it.
type user struct {
	email    string
	password string
	tokens   *authv1.TokenPair
}

func (u *user) ctx(ctx context.Context) context.Context {
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+u.tokens.GetAccessToken())
}

func withToken(ctx context.Context, token string) context.Context {
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)
}

func wantCode(t *testing.T, call string, err error, want codes.Code) {
	t.Helper()
	if got := status.Code(err); got != want {
		t.Errorf("%s: code = %v, want %v (error: %v)", call, got, want, err)
	}
}

// TestEndToEnd drives both real binaries over gRPC through the whole flow:
// sign-up, login, every todo RPC, isolation between users, refresh and
// logout, then verification with the auth service stopped.
func TestEndToEnd(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	auth := StartAuth(t)
	todo := StartTodo(t, auth)
	authClient := authv1.NewAuthServiceClient(Dial(t, auth.GRPCAddr))
	todoClient := todov1.NewTodoServiceClient(Dial(t, todo.GRPCAddr))

	alice := &user{email: "Alice@Example.com", password: "correct horse battery staple"}
	bob := &user{email: "bob@example.com", password: "another long passphrase"}
	var aliceID string

	// secrets collects every password and token the test sends or receives,
	// so the last step can check that none reached the logs.
	secrets := map[string]string{
		"alice's password": alice.password,
		"bob's password":   bob.password,
	}
	rememberTokens := func(label string, tokens *authv1.TokenPair) {
		secrets[label+" access token"] = tokens.GetAccessToken()
		secrets[label+" refresh token"] = tokens.GetRefreshToken()
	}

	t.Run("sign up", func(t *testing.T) {
		for _, u := range []*user{alice, bob} {
			resp, err := authClient.SignUp(ctx, &authv1.SignUpRequest{Email: u.email, Password: u.password})
			if err != nil {
				t.Fatalf("SignUp(%s): %v", u.email, err)
			}
			if got, want := resp.GetUser().GetEmail(), strings.ToLower(u.email); got != want {
				t.Errorf("SignUp(%s) email = %q, want %q", u.email, got, want)
			}
			if resp.GetTokens().GetAccessToken() == "" || resp.GetTokens().GetRefreshToken() == "" {
				t.Fatalf("SignUp(%s) returned an incomplete token pair: %v", u.email, resp.GetTokens())
			}
			if got := resp.GetTokens().GetTokenType(); got != "Bearer" {
				t.Errorf("SignUp(%s) token_type = %q, want Bearer", u.email, got)
			}
			rememberTokens("sign-up of "+u.email, resp.GetTokens())
			if u == alice {
				aliceID = resp.GetUser().GetId()
			}
		}

		secrets["duplicate sign-up password"] = "yet another passphrase"
		_, err := authClient.SignUp(ctx, &authv1.SignUpRequest{Email: "ALICE@example.com", Password: "yet another passphrase"})
		wantCode(t, "SignUp(existing email)", err, codes.AlreadyExists)
	})

	t.Run("log in", func(t *testing.T) {
		secrets["wrong password"] = "wrong password!"
		_, err := authClient.Login(ctx, &authv1.LoginRequest{Email: alice.email, Password: "wrong password!"})
		wantCode(t, "Login(wrong password)", err, codes.Unauthenticated)

		for _, u := range []*user{alice, bob} {
			resp, err := authClient.Login(ctx, &authv1.LoginRequest{Email: u.email, Password: u.password})
			if err != nil {
				t.Fatalf("Login(%s): %v", u.email, err)
			}
			u.tokens = resp.GetTokens()
			rememberTokens("login of "+u.email, u.tokens)
		}

		me, err := authClient.GetCurrentUser(alice.ctx(ctx), &authv1.GetCurrentUserRequest{})
		if err != nil {
			t.Fatalf("GetCurrentUser(alice): %v", err)
		}
		if got := me.GetUser().GetId(); got != aliceID {
			t.Errorf("GetCurrentUser(alice) id = %q, want %q", got, aliceID)
		}
	})
	if alice.tokens == nil || bob.tokens == nil {
		t.Fatal("no tokens after log in; later steps cannot run")
	}

	var first, second *todov1.Todo
	t.Run("create and get", func(t *testing.T) {
		resp, err := todoClient.CreateTodo(alice.ctx(ctx), &todov1.CreateTodoRequest{Todo: &todov1.Todo{Title: "buy milk", Description: "two litres"}})
		if err != nil {
			t.Fatalf("CreateTodo: %v", err)
		}
		first = resp.GetTodo()
		if first.GetId() == "" || first.GetEtag() == "" || first.GetCreateTime() == nil {
			t.Errorf("CreateTodo returned %v, want id, etag and create_time set", first)
		}

		resp, err = todoClient.CreateTodo(alice.ctx(ctx), &todov1.CreateTodoRequest{Todo: &todov1.Todo{Title: "file taxes"}})
		if err != nil {
			t.Fatalf("CreateTodo: %v", err)
		}
		second = resp.GetTodo()

		got, err := todoClient.GetTodo(alice.ctx(ctx), &todov1.GetTodoRequest{Id: first.GetId()})
		if err != nil {
			t.Fatalf("GetTodo: %v", err)
		}
		if diff := cmp.Diff(first, got.GetTodo(), protocmp.Transform()); diff != "" {
			t.Errorf("GetTodo mismatch (-created +got):\n%s", diff)
		}

		_, err = todoClient.CreateTodo(alice.ctx(ctx), &todov1.CreateTodoRequest{Todo: &todov1.Todo{Title: ""}})
		wantCode(t, "CreateTodo(empty title)", err, codes.InvalidArgument)
	})
	if first == nil || second == nil {
		t.Fatal("todos not created; later steps cannot run")
	}

	t.Run("list pages", func(t *testing.T) {
		page1, err := todoClient.ListTodos(alice.ctx(ctx), &todov1.ListTodosRequest{PageSize: 1})
		if err != nil {
			t.Fatalf("ListTodos(page 1): %v", err)
		}
		if len(page1.GetTodos()) != 1 || page1.GetNextPageToken() == "" {
			t.Fatalf("ListTodos(page 1) = %d todos, next_page_token %q; want 1 and a token", len(page1.GetTodos()), page1.GetNextPageToken())
		}
		page2, err := todoClient.ListTodos(alice.ctx(ctx), &todov1.ListTodosRequest{PageSize: 1, PageToken: page1.GetNextPageToken()})
		if err != nil {
			t.Fatalf("ListTodos(page 2): %v", err)
		}
		var ids []string
		for _, td := range append(page1.GetTodos(), page2.GetTodos()...) {
			ids = append(ids, td.GetId())
		}
		if want := []string{second.GetId(), first.GetId()}; !cmp.Equal(ids, want) {
			t.Errorf("ListTodos ids over two pages = %v, want newest first %v", ids, want)
		}
	})

	t.Run("update with etag", func(t *testing.T) {
		resp, err := todoClient.UpdateTodo(alice.ctx(ctx), &todov1.UpdateTodoRequest{
			Todo:       &todov1.Todo{Id: first.GetId(), Completed: true, Etag: first.GetEtag()},
			UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"completed"}},
		})
		if err != nil {
			t.Fatalf("UpdateTodo(completed): %v", err)
		}
		updated := resp.GetTodo()
		if !updated.GetCompleted() || updated.GetCompleteTime() == nil {
			t.Errorf("UpdateTodo(completed) = %v, want completed with complete_time", updated)
		}
		if updated.GetTitle() != first.GetTitle() {
			t.Errorf("UpdateTodo(completed) title = %q, want unchanged %q", updated.GetTitle(), first.GetTitle())
		}
		if updated.GetEtag() == first.GetEtag() {
			t.Errorf("UpdateTodo kept etag %q, want a new one", updated.GetEtag())
		}

		_, err = todoClient.UpdateTodo(alice.ctx(ctx), &todov1.UpdateTodoRequest{
			Todo:       &todov1.Todo{Id: first.GetId(), Title: "stale write", Etag: first.GetEtag()},
			UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"title"}},
		})
		wantCode(t, "UpdateTodo(stale etag)", err, codes.Aborted)

		done, err := todoClient.ListTodos(alice.ctx(ctx), &todov1.ListTodosRequest{Completed: new(true)})
		if err != nil {
			t.Fatalf("ListTodos(completed=true): %v", err)
		}
		if len(done.GetTodos()) != 1 || done.GetTodos()[0].GetId() != first.GetId() {
			t.Errorf("ListTodos(completed=true) = %v, want only %s", done.GetTodos(), first.GetId())
		}
	})

	t.Run("users are isolated", func(t *testing.T) {
		_, err := todoClient.GetTodo(bob.ctx(ctx), &todov1.GetTodoRequest{Id: first.GetId()})
		wantCode(t, "GetTodo(bob, alice's todo)", err, codes.NotFound)
		_, err = todoClient.UpdateTodo(bob.ctx(ctx), &todov1.UpdateTodoRequest{
			Todo:       &todov1.Todo{Id: first.GetId(), Title: "mine now"},
			UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"title"}},
		})
		wantCode(t, "UpdateTodo(bob, alice's todo)", err, codes.NotFound)
		_, err = todoClient.DeleteTodo(bob.ctx(ctx), &todov1.DeleteTodoRequest{Id: first.GetId()})
		wantCode(t, "DeleteTodo(bob, alice's todo)", err, codes.NotFound)

		if _, err := todoClient.CreateTodo(bob.ctx(ctx), &todov1.CreateTodoRequest{Todo: &todov1.Todo{Title: "bob's only todo"}}); err != nil {
			t.Fatalf("CreateTodo(bob): %v", err)
		}
		list, err := todoClient.ListTodos(bob.ctx(ctx), &todov1.ListTodosRequest{})
		if err != nil {
			t.Fatalf("ListTodos(bob): %v", err)
		}
		if len(list.GetTodos()) != 1 || list.GetTodos()[0].GetTitle() != "bob's only todo" {
			t.Errorf("ListTodos(bob) = %v, want only bob's todo", list.GetTodos())
		}

		list, err = todoClient.ListTodos(alice.ctx(ctx), &todov1.ListTodosRequest{})
		if err != nil {
			t.Fatalf("ListTodos(alice): %v", err)
		}
		if len(list.GetTodos()) != 2 {
			t.Errorf("ListTodos(alice) returned %d todos, want her 2", len(list.GetTodos()))
		}
	})

	t.Run("delete", func(t *testing.T) {
		if _, err := todoClient.DeleteTodo(alice.ctx(ctx), &todov1.DeleteTodoRequest{Id: second.GetId()}); err != nil {
			t.Fatalf("DeleteTodo: %v", err)
		}
		_, err := todoClient.GetTodo(alice.ctx(ctx), &todov1.GetTodoRequest{Id: second.GetId()})
		wantCode(t, "GetTodo(deleted)", err, codes.NotFound)
		_, err = todoClient.DeleteTodo(alice.ctx(ctx), &todov1.DeleteTodoRequest{Id: second.GetId()})
		wantCode(t, "DeleteTodo(deleted)", err, codes.NotFound)
	})

	t.Run("refresh and logout", func(t *testing.T) {
		old := bob.tokens.GetRefreshToken()
		resp, err := authClient.Refresh(ctx, &authv1.RefreshRequest{RefreshToken: old})
		if err != nil {
			t.Fatalf("Refresh: %v", err)
		}
		if resp.GetTokens().GetRefreshToken() == old {
			t.Error("Refresh returned the same refresh token, want a rotated one")
		}
		bob.tokens = resp.GetTokens()
		rememberTokens("refresh of bob", bob.tokens)
		if _, err := todoClient.ListTodos(bob.ctx(ctx), &todov1.ListTodosRequest{}); err != nil {
			t.Errorf("ListTodos with the refreshed access token: %v", err)
		}

		if _, err := authClient.Logout(ctx, &authv1.LogoutRequest{RefreshToken: bob.tokens.GetRefreshToken()}); err != nil {
			t.Fatalf("Logout: %v", err)
		}
		_, err = authClient.Refresh(ctx, &authv1.RefreshRequest{RefreshToken: bob.tokens.GetRefreshToken()})
		wantCode(t, "Refresh(after logout)", err, codes.Unauthenticated)
	})

	t.Run("auth service down", func(t *testing.T) {
		auth.Stop(t)

		if _, err := todoClient.CreateTodo(alice.ctx(ctx), &todov1.CreateTodoRequest{Todo: &todov1.Todo{Title: "written while auth is down"}}); err != nil {
			t.Errorf("CreateTodo with auth-service stopped: %v", err)
		}
		if _, err := todoClient.ListTodos(alice.ctx(ctx), &todov1.ListTodosRequest{}); err != nil {
			t.Errorf("ListTodos with auth-service stopped: %v", err)
		}

		for name, token := range tamperedTokens(t, alice.tokens.GetAccessToken()) {
			_, err := todoClient.ListTodos(withToken(ctx, token), &todov1.ListTodosRequest{})
			wantCode(t, fmt.Sprintf("ListTodos(%s token)", name), err, codes.Unauthenticated)
		}
		_, err := todoClient.ListTodos(ctx, &todov1.ListTodosRequest{})
		wantCode(t, "ListTodos(no token)", err, codes.Unauthenticated)
	})

	t.Run("no secrets in logs", func(t *testing.T) {
		logs := auth.Logs() + todo.Logs()
		if len(secrets) < 12 {
			t.Fatalf("collected %d secrets, want at least 12; earlier steps failed", len(secrets))
		}
		for name, secret := range secrets {
			if secret != "" && strings.Contains(logs, secret) {
				t.Errorf("logs contain %s", name)
			}
			// A signature alone identifies a token as well as the whole token.
			if parts := strings.Split(secret, "."); len(parts) == 3 && strings.Contains(logs, parts[2]) {
				t.Errorf("logs contain the signature of %s", name)
			}
		}
		if !strings.Contains(todo.Logs(), "ListTodos") {
			t.Error("todo-service logs have no line for ListTodos; the secret check above would prove nothing")
		}
	})
}

// tamperedTokens returns variants of a valid compact JWS that must all be
// rejected: a changed payload, a changed signature and a dropped signature.
func tamperedTokens(t *testing.T, token string) map[string]string {
	t.Helper()

	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		t.Fatalf("access token has %d segments, want 3", len(parts))
	}
	flip := func(s string) string {
		b := []byte(s)
		if b[len(b)/2] == 'A' {
			b[len(b)/2] = 'B'
		} else {
			b[len(b)/2] = 'A'
		}
		return string(b)
	}
	return map[string]string{
		"payload changed":   parts[0] + "." + flip(parts[1]) + "." + parts[2],
		"signature changed": parts[0] + "." + parts[1] + "." + flip(parts[2]),
		"signature dropped": parts[0] + "." + parts[1] + ".",
	}
}
