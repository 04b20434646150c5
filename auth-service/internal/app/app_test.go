package app_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/metadata"
	reflectionv1 "google.golang.org/grpc/reflection/grpc_reflection_v1"
	reflectionv1alpha "google.golang.org/grpc/reflection/grpc_reflection_v1alpha"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"example.com/todoapp/auth-service/internal/app"
	"example.com/todoapp/auth-service/internal/auth"
	"example.com/todoapp/auth-service/internal/grpcserver"
	authv1 "example.com/todoapp/proto/gen/auth/v1"
)

func TestSignUpLoginRefreshLogout(t *testing.T) {
	s := startServer(t)
	ctx := testContext(t)

	signed := signUp(t, s, "  Ada@Example.COM ", "correct horse battery")
	if got, want := signed.GetUser().GetEmail(), "ada@example.com"; got != want {
		t.Errorf("SignUp() email = %q, want normalised %q", got, want)
	}
	tokens := signed.GetTokens()
	if tokens.GetTokenType() != "Bearer" || tokens.GetAccessToken() == "" || tokens.GetRefreshToken() == "" {
		t.Errorf("SignUp() tokens = %v, want a Bearer access token and a refresh token", tokens)
	}
	if got := tokens.GetAccessTokenExpiresIn().AsDuration(); got != 15*time.Minute {
		t.Errorf("SignUp() access_token_expires_in = %v, want 15m", got)
	}
	if got := tokens.GetRefreshTokenExpiresIn().AsDuration(); got != 720*time.Hour {
		t.Errorf("SignUp() refresh_token_expires_in = %v, want 720h", got)
	}

	logged := login(t, s, "ada@example.com", "correct horse battery")
	if logged.GetUser().GetId() != signed.GetUser().GetId() {
		t.Errorf("Login() user id = %q, want %q", logged.GetUser().GetId(), signed.GetUser().GetId())
	}

	me, err := s.client.GetCurrentUser(withToken(ctx, logged.GetTokens().GetAccessToken()), &authv1.GetCurrentUserRequest{})
	if err != nil {
		t.Fatalf("GetCurrentUser() = %v", err)
	}
	if me.GetUser().GetEmail() != "ada@example.com" {
		t.Errorf("GetCurrentUser() email = %q, want ada@example.com", me.GetUser().GetEmail())
	}

	refreshed, err := s.client.Refresh(ctx, &authv1.RefreshRequest{RefreshToken: logged.GetTokens().GetRefreshToken()})
	if err != nil {
		t.Fatalf("Refresh() = %v", err)
	}
	if refreshed.GetTokens().GetRefreshToken() == logged.GetTokens().GetRefreshToken() {
		t.Error("Refresh() returned the same refresh token, want a new one")
	}

	if _, err := s.client.Logout(ctx, &authv1.LogoutRequest{RefreshToken: refreshed.GetTokens().GetRefreshToken()}); err != nil {
		t.Fatalf("Logout() = %v", err)
	}
	_, err = s.client.Refresh(ctx, &authv1.RefreshRequest{RefreshToken: refreshed.GetTokens().GetRefreshToken()})
	wantCode(t, "Refresh() after Logout", err, codes.Unauthenticated)

	// The other session, from SignUp, is unaffected.
	if _, err := s.client.Refresh(ctx, &authv1.RefreshRequest{RefreshToken: tokens.GetRefreshToken()}); err != nil {
		t.Errorf("Refresh(sign-up session) after Logout of another session = %v, want nil", err)
	}

	// No secret of this run reaches the log.
	logs := s.logs.String()
	secrets := map[string]string{
		"password":              "correct horse battery",
		"access token":          logged.GetTokens().GetAccessToken(),
		"refresh token":         logged.GetTokens().GetRefreshToken(),
		"refreshed token":       refreshed.GetTokens().GetRefreshToken(),
		"sign-up refresh token": tokens.GetRefreshToken(),
	}
	for name, secret := range secrets {
		if strings.Contains(logs, secret) {
			t.Errorf("logs contain the %s", name)
		}
	}
}

func TestSignUpInvalidArguments(t *testing.T) {
	s := startServer(t)
	tests := []struct {
		name       string
		email      string
		password   string
		wantFields []string
	}{
		{"empty email", "", "correct horse battery", []string{"email"}},
		{"no at sign", "ada.example.com", "correct horse battery", []string{"email"}},
		{"display name", "Ada <ada@example.com>", "correct horse battery", []string{"email"}},
		{"space inside", "ada lovelace@example.com", "correct horse battery", []string{"email"}},
		{"email too long", strings.Repeat("a", 250) + "@example.com", "correct horse battery", []string{"email"}},
		{"password too short", "ada@example.com", "short", []string{"password"}},
		{"password over byte limit", "ada@example.com", strings.Repeat("é", 65), []string{"password"}},
		{"both", "nope", "", []string{"email", "password"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := s.client.SignUp(testContext(t), &authv1.SignUpRequest{Email: tt.email, Password: tt.password})
			st := wantCode(t, "SignUp()", err, codes.InvalidArgument)
			if diff := cmp.Diff(tt.wantFields, fieldViolations(st)); diff != "" {
				t.Errorf("SignUp() field violations mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestSignUpDuplicateEmail(t *testing.T) {
	s := startServer(t)
	signUp(t, s, "ada@example.com", "correct horse battery")

	_, err := s.client.SignUp(testContext(t), &authv1.SignUpRequest{Email: "ADA@example.com", Password: "another password"})
	wantCode(t, "SignUp(same email, other case)", err, codes.AlreadyExists)
}

func TestSignUpEmailNormalizationForms(t *testing.T) {
	s := startServer(t)
	const nfc = "\u00e4d\u00e4@ex\u00e4mple.com"
	const nfd = "a\u0308da\u0308@exa\u0308mple.com"
	signed := signUp(t, s, nfc, "correct horse battery")

	_, err := s.client.SignUp(testContext(t), &authv1.SignUpRequest{Email: nfd, Password: "another password"})
	wantCode(t, "SignUp(same email in NFD)", err, codes.AlreadyExists)

	loggedIn := login(t, s, nfd, "correct horse battery")
	if got, want := loggedIn.GetUser().GetId(), signed.GetUser().GetId(); got != want {
		t.Errorf("Login(NFD email) user id = %s, want %s", got, want)
	}
}

func TestLoginFailuresLookAlike(t *testing.T) {
	s := startServer(t)
	signUp(t, s, "ada@example.com", "correct horse battery")
	ctx := testContext(t)

	_, wrongPassword := s.client.Login(ctx, &authv1.LoginRequest{Email: "ada@example.com", Password: "wrong password"})
	_, unknownEmail := s.client.Login(ctx, &authv1.LoginRequest{Email: "bob@example.com", Password: "wrong password"})

	wantCode(t, "Login(wrong password)", wrongPassword, codes.Unauthenticated)
	wantCode(t, "Login(unknown email)", unknownEmail, codes.Unauthenticated)
	if wrongPassword.Error() != unknownEmail.Error() {
		t.Errorf("Login errors differ: wrong password %q, unknown email %q, want the same", wrongPassword, unknownEmail)
	}

	// A password over the byte limit is rejected before hashing.
	_, err := s.client.Login(ctx, &authv1.LoginRequest{Email: "ada@example.com", Password: strings.Repeat("x", 129)})
	st := wantCode(t, "Login(129-byte password)", err, codes.InvalidArgument)
	if diff := cmp.Diff([]string{"password"}, fieldViolations(st)); diff != "" {
		t.Errorf("Login() field violations mismatch (-want +got):\n%s", diff)
	}
}

func TestLoginAccountThrottle(t *testing.T) {
	s := startServer(t, "-login-account-free-failures", "2", "-login-backoff-base", "1m", "-login-backoff-max", "10m")
	signUp(t, s, "ada@example.com", "correct horse battery")
	ctx := testContext(t)

	for i := range 3 {
		_, err := s.client.Login(ctx, &authv1.LoginRequest{Email: "ada@example.com", Password: "wrong password"})
		wantCode(t, fmt.Sprintf("Login(wrong password) #%d", i+1), err, codes.Unauthenticated)
	}

	// Blocked now, even with the right password.
	_, err := s.client.Login(ctx, &authv1.LoginRequest{Email: "ada@example.com", Password: "correct horse battery"})
	st := wantCode(t, "Login() while blocked", err, codes.ResourceExhausted)
	if delay := retryDelay(st); delay <= 0 || delay > time.Minute {
		t.Errorf("Login() while blocked RetryInfo delay = %v, want within (0, 1m]", delay)
	}

	// Another account from the same address is not blocked by the account
	// counter.
	signUp(t, s, "bob@example.com", "correct horse battery")
	login(t, s, "bob@example.com", "correct horse battery")
}

func TestLoginAddressThrottle(t *testing.T) {
	s := startServer(t, "-login-address-free-failures", "3", "-login-backoff-base", "1m")
	signUp(t, s, "ada@example.com", "correct horse battery")
	ctx := testContext(t)

	for i := range 4 {
		email := fmt.Sprintf("user%d@example.com", i)
		_, err := s.client.Login(ctx, &authv1.LoginRequest{Email: email, Password: "wrong password"})
		wantCode(t, fmt.Sprintf("Login(%s)", email), err, codes.Unauthenticated)
	}

	_, err := s.client.Login(ctx, &authv1.LoginRequest{Email: "ada@example.com", Password: "correct horse battery"})
	st := wantCode(t, "Login() from a blocked address", err, codes.ResourceExhausted)
	if retryDelay(st) <= 0 {
		t.Errorf("Login() from a blocked address has no RetryInfo delay: %v", st.Details())
	}
}

func TestLoginSuccessResetsAccount(t *testing.T) {
	s := startServer(t, "-login-account-free-failures", "3", "-login-backoff-base", "1m")
	signUp(t, s, "ada@example.com", "correct horse battery")
	ctx := testContext(t)

	fail := func(n int) {
		for range n {
			_, err := s.client.Login(ctx, &authv1.LoginRequest{Email: "ada@example.com", Password: "wrong password"})
			wantCode(t, "Login(wrong password)", err, codes.Unauthenticated)
		}
	}
	fail(3)
	login(t, s, "ada@example.com", "correct horse battery")
	// Without the reset these would be failures 4 and 5, and 4 would block.
	fail(2)
	login(t, s, "ada@example.com", "correct horse battery")
}

func TestRefreshReuseWithinGrace(t *testing.T) {
	s := startServer(t, "-refresh-reuse-grace", "5m")
	first := signUp(t, s, "ada@example.com", "correct horse battery").GetTokens().GetRefreshToken()
	ctx := testContext(t)

	second, err := s.client.Refresh(ctx, &authv1.RefreshRequest{RefreshToken: first})
	if err != nil {
		t.Fatalf("Refresh() = %v", err)
	}
	_, err = s.client.Refresh(ctx, &authv1.RefreshRequest{RefreshToken: first})
	wantCode(t, "Refresh(used token within grace)", err, codes.Unauthenticated)

	// The session survives a retry within the grace window.
	if _, err := s.client.Refresh(ctx, &authv1.RefreshRequest{RefreshToken: second.GetTokens().GetRefreshToken()}); err != nil {
		t.Errorf("Refresh(new token) after a retry within grace = %v, want nil", err)
	}
}

func TestRefreshReuseRevokesFamily(t *testing.T) {
	s := startServer(t, "-refresh-reuse-grace", "0s")
	signed := signUp(t, s, "ada@example.com", "correct horse battery")
	first := signed.GetTokens().GetRefreshToken()
	ctx := testContext(t)

	second, err := s.client.Refresh(ctx, &authv1.RefreshRequest{RefreshToken: first})
	if err != nil {
		t.Fatalf("Refresh() = %v", err)
	}
	third, err := s.client.Refresh(ctx, &authv1.RefreshRequest{RefreshToken: second.GetTokens().GetRefreshToken()})
	if err != nil {
		t.Fatalf("second Refresh() = %v", err)
	}

	// An attacker replays the first token: the whole family dies.
	_, err = s.client.Refresh(ctx, &authv1.RefreshRequest{RefreshToken: first})
	wantCode(t, "Refresh(replayed token)", err, codes.Unauthenticated)
	_, err = s.client.Refresh(ctx, &authv1.RefreshRequest{RefreshToken: third.GetTokens().GetRefreshToken()})
	wantCode(t, "Refresh(newest token after replay)", err, codes.Unauthenticated)

	if !strings.Contains(s.logs.String(), "refresh token reused after rotation") {
		t.Error("logs have no line about the refresh-token reuse")
	}

	// Introspection reports the family's access tokens inactive.
	got, err := s.client.IntrospectToken(ctx, &authv1.IntrospectTokenRequest{Token: third.GetTokens().GetAccessToken()})
	if err != nil {
		t.Fatalf("IntrospectToken() = %v", err)
	}
	if got.GetActive() {
		t.Error("IntrospectToken(access token of revoked family) active = true, want false")
	}
}

// TestRefreshRacePostgres sends two Refresh calls with the same token at
// once, many times, and checks that exactly one of each pair succeeds.
func TestRefreshRacePostgres(t *testing.T) {
	s := startPostgresServer(t, "-refresh-reuse-grace", "1m")
	ctx := testContext(t)
	refresh := signUp(t, s, "ada@example.com", "correct horse battery").GetTokens().GetRefreshToken()

	const rounds = 40
	for round := range rounds {
		var wg sync.WaitGroup
		results := make([]*authv1.RefreshResponse, 2)
		errs := make([]error, 2)
		start := make(chan struct{})
		for i := range 2 {
			wg.Go(func() {
				<-start
				results[i], errs[i] = s.client.Refresh(ctx, &authv1.RefreshRequest{RefreshToken: refresh})
			})
		}
		close(start)
		wg.Wait()

		var winners []*authv1.RefreshResponse
		for i, err := range errs {
			if err == nil {
				winners = append(winners, results[i])
				continue
			}
			wantCode(t, fmt.Sprintf("round %d: losing Refresh()", round), err, codes.Unauthenticated)
		}
		if len(winners) != 1 {
			t.Fatalf("round %d: %d of 2 concurrent Refresh calls with one token succeeded, want exactly 1 (errors %v)", round, len(winners), errs)
		}
		refresh = winners[0].GetTokens().GetRefreshToken()
	}
}

func TestAccessTokenRequired(t *testing.T) {
	s := startServer(t)
	access := signUp(t, s, "ada@example.com", "correct horse battery").GetTokens().GetAccessToken()
	tampered := access[:len(access)-4] + "AAAA"
	if tampered == access {
		tampered = access[:len(access)-4] + "BBBB"
	}

	tests := []struct {
		name string
		md   metadata.MD
	}{
		{"no authorization", metadata.MD{}},
		{"basic scheme", metadata.Pairs("authorization", "Basic "+access)},
		{"two values", metadata.Pairs("authorization", "Bearer "+access, "authorization", "Bearer "+access)},
		{"tampered signature", metadata.Pairs("authorization", "Bearer "+tampered)},
		{"not a JWT", metadata.Pairs("authorization", "Bearer not-a-token")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := metadata.NewOutgoingContext(testContext(t), tt.md)
			_, err := s.client.GetCurrentUser(ctx, &authv1.GetCurrentUserRequest{})
			st := wantCode(t, "GetCurrentUser()", err, codes.Unauthenticated)
			if st.Message() != "invalid or missing access token" {
				t.Errorf("GetCurrentUser() message = %q, want the generic one", st.Message())
			}
		})
	}
}

func TestSessionsListAndRevoke(t *testing.T) {
	s := startServer(t)
	ctx := testContext(t)
	first := signUp(t, s, "ada@example.com", "correct horse battery")
	second := login(t, s, "ada@example.com", "correct horse battery")
	bob := signUp(t, s, "bob@example.com", "correct horse battery")

	list, err := s.client.ListSessions(withToken(ctx, second.GetTokens().GetAccessToken()), &authv1.ListSessionsRequest{})
	if err != nil {
		t.Fatalf("ListSessions() = %v", err)
	}
	if got := len(list.GetSessions()); got != 2 {
		t.Fatalf("ListSessions() returned %d sessions, want 2", got)
	}
	var current, other string
	for _, session := range list.GetSessions() {
		if session.GetCurrent() {
			current = session.GetId()
		} else {
			other = session.GetId()
		}
	}
	if current == "" || other == "" {
		t.Fatalf("ListSessions() = %v, want one current and one other session", list.GetSessions())
	}

	// Bob cannot see or revoke Ada's session.
	_, err = s.client.RevokeSession(withToken(ctx, bob.GetTokens().GetAccessToken()), &authv1.RevokeSessionRequest{SessionId: other})
	wantCode(t, "RevokeSession(another user's session)", err, codes.NotFound)

	_, err = s.client.RevokeSession(withToken(ctx, second.GetTokens().GetAccessToken()), &authv1.RevokeSessionRequest{SessionId: "not-a-uuid"})
	st := wantCode(t, "RevokeSession(malformed id)", err, codes.InvalidArgument)
	if diff := cmp.Diff([]string{"session_id"}, fieldViolations(st)); diff != "" {
		t.Errorf("RevokeSession() field violations mismatch (-want +got):\n%s", diff)
	}

	if _, err := s.client.RevokeSession(withToken(ctx, second.GetTokens().GetAccessToken()), &authv1.RevokeSessionRequest{SessionId: other}); err != nil {
		t.Fatalf("RevokeSession() = %v", err)
	}
	_, err = s.client.Refresh(ctx, &authv1.RefreshRequest{RefreshToken: first.GetTokens().GetRefreshToken()})
	wantCode(t, "Refresh(revoked session)", err, codes.Unauthenticated)

	list, err = s.client.ListSessions(withToken(ctx, second.GetTokens().GetAccessToken()), &authv1.ListSessionsRequest{})
	if err != nil {
		t.Fatalf("ListSessions() after revoke = %v", err)
	}
	if got := len(list.GetSessions()); got != 1 || list.GetSessions()[0].GetId() != current {
		t.Errorf("ListSessions() after revoke = %v, want only the current session %s", list.GetSessions(), current)
	}
}

func TestChangePassword(t *testing.T) {
	s := startServer(t)
	ctx := testContext(t)
	first := signUp(t, s, "ada@example.com", "correct horse battery")
	second := login(t, s, "ada@example.com", "correct horse battery")
	authed := withToken(ctx, second.GetTokens().GetAccessToken())

	_, err := s.client.ChangePassword(authed, &authv1.ChangePasswordRequest{OldPassword: "wrong password", NewPassword: "new password 123"})
	st := wantCode(t, "ChangePassword(wrong old password)", err, codes.Unauthenticated)
	if got, want := st.Message(), "invalid password"; got != want {
		t.Errorf("ChangePassword(wrong old password) message = %q, want %q", got, want)
	}

	_, err = s.client.ChangePassword(authed, &authv1.ChangePasswordRequest{OldPassword: "correct horse battery", NewPassword: "short"})
	st = wantCode(t, "ChangePassword(short new password)", err, codes.InvalidArgument)
	if diff := cmp.Diff([]string{"new_password"}, fieldViolations(st)); diff != "" {
		t.Errorf("ChangePassword() field violations mismatch (-want +got):\n%s", diff)
	}

	if _, err := s.client.ChangePassword(authed, &authv1.ChangePasswordRequest{OldPassword: "correct horse battery", NewPassword: "new password 123"}); err != nil {
		t.Fatalf("ChangePassword() = %v", err)
	}

	_, err = s.client.Refresh(ctx, &authv1.RefreshRequest{RefreshToken: first.GetTokens().GetRefreshToken()})
	wantCode(t, "Refresh(other session) after ChangePassword", err, codes.Unauthenticated)
	if _, err := s.client.Refresh(ctx, &authv1.RefreshRequest{RefreshToken: second.GetTokens().GetRefreshToken()}); err != nil {
		t.Errorf("Refresh(current session) after ChangePassword = %v, want nil", err)
	}

	_, err = s.client.Login(ctx, &authv1.LoginRequest{Email: "ada@example.com", Password: "correct horse battery"})
	wantCode(t, "Login(old password)", err, codes.Unauthenticated)
	login(t, s, "ada@example.com", "new password 123")
}

func TestIntrospectToken(t *testing.T) {
	s := startServer(t)
	ctx := testContext(t)
	signed := signUp(t, s, "ada@example.com", "correct horse battery")
	access := signed.GetTokens().GetAccessToken()

	got, err := s.client.IntrospectToken(ctx, &authv1.IntrospectTokenRequest{Token: access})
	if err != nil {
		t.Fatalf("IntrospectToken() = %v", err)
	}
	if !got.GetActive() || got.GetSub() != signed.GetUser().GetId() || got.GetEmail() != "ada@example.com" ||
		got.GetIss() != "http://127.0.0.1:8081" || !slices.Equal(got.GetAud(), []string{"todo-service"}) ||
		got.GetJti() == "" || got.GetSid() == "" || got.GetExp() == nil || got.GetIat() == nil {
		t.Errorf("IntrospectToken(valid) = %v, want active with every claim", got)
	}
	if lifetime := got.GetExp().AsTime().Sub(got.GetIat().AsTime()); lifetime != 15*time.Minute {
		t.Errorf("IntrospectToken() exp - iat = %v, want 15m", lifetime)
	}

	inactive := func(name, token string) {
		t.Helper()
		got, err := s.client.IntrospectToken(ctx, &authv1.IntrospectTokenRequest{Token: token})
		if err != nil {
			t.Fatalf("IntrospectToken(%s) = %v", name, err)
		}
		if diff := cmp.Diff(&authv1.IntrospectTokenResponse{}, got, cmpProto()); diff != "" {
			t.Errorf("IntrospectToken(%s) mismatch (-want +got):\n%s", name, diff)
		}
	}
	inactive("garbage", "not.a.token")
	inactive("tampered", access[:len(access)-2]+"xx")

	_, err = s.client.IntrospectToken(ctx, &authv1.IntrospectTokenRequest{Token: ""})
	wantCode(t, "IntrospectToken(empty)", err, codes.InvalidArgument)

	if _, err := s.client.Logout(ctx, &authv1.LogoutRequest{RefreshToken: signed.GetTokens().GetRefreshToken()}); err != nil {
		t.Fatalf("Logout() = %v", err)
	}
	inactive("after logout", access)

	bob := signUp(t, s, "bob@example.com", "correct horse battery")
	if err := s.Store().DeleteUser(ctx, bob.GetUser().GetId()); err != nil {
		t.Fatalf("DeleteUser() = %v", err)
	}
	inactive("deleted user", bob.GetTokens().GetAccessToken())
}

func TestHealthAndReflection(t *testing.T) {
	s := startServer(t)
	ctx := testContext(t)

	health := healthpb.NewHealthClient(s.conn)
	for _, service := range []string{"", "readiness"} {
		resp, err := health.Check(ctx, &healthpb.HealthCheckRequest{Service: service})
		if err != nil {
			t.Fatalf("Check(%q) = %v", service, err)
		}
		if resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			t.Errorf("Check(%q) = %v, want SERVING", service, resp.GetStatus())
		}
	}

	v1, err := reflectionv1.NewServerReflectionClient(s.conn).ServerReflectionInfo(ctx)
	if err != nil {
		t.Fatalf("reflection v1 ServerReflectionInfo() = %v", err)
	}
	if err := v1.Send(&reflectionv1.ServerReflectionRequest{MessageRequest: &reflectionv1.ServerReflectionRequest_ListServices{}}); err != nil {
		t.Fatalf("reflection v1 Send() = %v", err)
	}
	resp, err := v1.Recv()
	if err != nil {
		t.Fatalf("reflection v1 Recv() = %v", err)
	}
	var services []string
	for _, svc := range resp.GetListServicesResponse().GetService() {
		services = append(services, svc.GetName())
	}
	if !slices.Contains(services, "auth.v1.AuthService") {
		t.Errorf("reflection v1 services = %v, want auth.v1.AuthService", services)
	}

	alpha, err := reflectionv1alpha.NewServerReflectionClient(s.conn).ServerReflectionInfo(ctx)
	if err != nil {
		t.Fatalf("reflection v1alpha ServerReflectionInfo() = %v", err)
	}
	if err := alpha.Send(&reflectionv1alpha.ServerReflectionRequest{MessageRequest: &reflectionv1alpha.ServerReflectionRequest_ListServices{}}); err != nil {
		t.Fatalf("reflection v1alpha Send() = %v", err)
	}
	if _, err := alpha.Recv(); err != nil {
		t.Errorf("reflection v1alpha Recv() = %v", err)
	}
}

func TestHTTPEndpoints(t *testing.T) {
	s := startServer(t, "-issuer", "https://auth.example.com")
	access := signUp(t, s, "ada@example.com", "correct horse battery").GetTokens().GetAccessToken()
	base := "http://" + s.HTTPAddr()

	var discovery struct {
		Issuer  string `json:"issuer"`
		JWKSURI string `json:"jwks_uri"`
	}
	getJSON(t, base+"/.well-known/openid-configuration", &discovery)
	if discovery.Issuer != "https://auth.example.com" || discovery.JWKSURI != "https://auth.example.com/.well-known/jwks.json" {
		t.Errorf("discovery = %+v, want the issuer and its jwks_uri", discovery)
	}

	var jwks struct {
		Keys []struct {
			Kid string `json:"kid"`
			D   string `json:"d"`
		} `json:"keys"`
	}
	getJSON(t, base+"/.well-known/jwks.json", &jwks)
	header := decodeHeader(t, access)
	var kids []string
	for _, k := range jwks.Keys {
		kids = append(kids, k.Kid)
		if k.D != "" {
			t.Errorf("JWKS key %s has a private exponent", k.Kid)
		}
	}
	if !slices.Contains(kids, header.Kid) {
		t.Errorf("JWKS kids = %v, want the access token's kid %q", kids, header.Kid)
	}
	if header.Typ != "at+jwt" || header.Alg != "RS256" {
		t.Errorf("access token header = %+v, want typ at+jwt and alg RS256", header)
	}

	metrics := get(t, base+"/metrics")
	if !strings.Contains(metrics, `grpc_server_handled_total{grpc_code="OK",grpc_method="/auth.v1.AuthService/SignUp"} 1`) {
		t.Errorf("/metrics has no SignUp count:\n%.2000s", metrics)
	}
}

func TestRPCLogLine(t *testing.T) {
	s := startServer(t)
	signed := signUp(t, s, "ada@example.com", "correct horse battery")
	ctx := metadata.AppendToOutgoingContext(withToken(testContext(t), signed.GetTokens().GetAccessToken()), "x-request-id", "req-12345")

	var header metadata.MD
	if _, err := s.client.GetCurrentUser(ctx, &authv1.GetCurrentUserRequest{}, grpc.Header(&header)); err != nil {
		t.Fatalf("GetCurrentUser() = %v", err)
	}
	if got := header.Get("x-request-id"); !slices.Equal(got, []string{"req-12345"}) {
		t.Errorf("response x-request-id = %v, want [req-12345]", got)
	}

	entry := wantOneRPCLogLine(t, s, "req-12345", "/auth.v1.AuthService/GetCurrentUser", codes.OK, "INFO")
	if entry["user_id"] != signed.GetUser().GetId() || entry["duration_ms"] == nil {
		t.Errorf("rpc log line = %v, want user_id and duration_ms", entry)
	}
}

func TestTransportLimits(t *testing.T) {
	s := startServer(t)
	ctx := testContext(t)

	// Between MaxRequestBytes and the transport cap, the request is decoded
	// and rejected with a BadRequest naming its largest field.
	signUpRequest := &authv1.SignUpRequest{Email: "big@example.com", Password: strings.Repeat("p", 20<<10)}
	_, err := s.client.SignUp(ctx, signUpRequest)
	wantTooLarge(t, "SignUp(20 KiB password)", err, "password", proto.Size(signUpRequest))

	loginRequest := &authv1.LoginRequest{Email: "big@example.com", Password: strings.Repeat("p", 20<<10)}
	_, err = s.client.Login(ctx, loginRequest)
	wantTooLarge(t, "Login(20 KiB password)", err, "password", proto.Size(loginRequest))

	introspectRequest := &authv1.IntrospectTokenRequest{Token: strings.Repeat("a", 20<<10)}
	_, err = s.client.IntrospectToken(ctx, introspectRequest)
	wantTooLarge(t, "IntrospectToken(20 KiB message)", err, "token", proto.Size(introspectRequest))

	// Over the transport cap, grpc-go rejects the message before decoding.
	_, err = s.client.IntrospectToken(ctx, &authv1.IntrospectTokenRequest{Token: strings.Repeat("a", grpcserver.MaxRecvMsgBytes)})
	wantCode(t, "IntrospectToken(message over the transport cap)", err, codes.ResourceExhausted)
	_, err = s.client.SignUp(ctx, &authv1.SignUpRequest{Email: "big@example.com", Password: strings.Repeat("p", grpcserver.MaxRecvMsgBytes)})
	wantCode(t, "SignUp(message over the transport cap)", err, codes.ResourceExhausted)

	// Within the size limit, the per-field limits apply.
	_, err = s.client.IntrospectToken(ctx, &authv1.IntrospectTokenRequest{Token: strings.Repeat("a", 9<<10)})
	st := wantCode(t, "IntrospectToken(9 KiB token)", err, codes.InvalidArgument)
	if diff := cmp.Diff([]string{"token"}, fieldViolations(st)); diff != "" {
		t.Errorf("IntrospectToken() field violations mismatch (-want +got):\n%s", diff)
	}

	_, err = s.client.Refresh(ctx, &authv1.RefreshRequest{RefreshToken: strings.Repeat("r", 257)})
	st = wantCode(t, "Refresh(257-byte token)", err, codes.InvalidArgument)
	if diff := cmp.Diff([]string{"refresh_token"}, fieldViolations(st)); diff != "" {
		t.Errorf("Refresh() field violations mismatch (-want +got):\n%s", diff)
	}

	big := metadata.AppendToOutgoingContext(ctx, "x-padding", strings.Repeat("p", 32<<10))
	if _, err := s.client.GetCurrentUser(big, &authv1.GetCurrentUserRequest{}); err == nil {
		t.Error("GetCurrentUser() with 32 KiB of metadata = nil error, want the header list rejected")
	}

	// The server still serves normal requests afterwards.
	signUp(t, s, "ada@example.com", "correct horse battery")
}

func TestRequestAtSizeLimit(t *testing.T) {
	s := startServer(t)
	ctx := testContext(t)

	// A password that brings the request to exactly MaxRequestBytes gets
	// the per-field violation, not the size violation. The password adds a
	// 1-byte tag and a 2-byte length to its text.
	request := &authv1.SignUpRequest{Email: "limit@example.com"}
	request.Password = strings.Repeat("p", grpcserver.MaxRequestBytes-proto.Size(request)-3)
	if got := proto.Size(request); got != grpcserver.MaxRequestBytes {
		t.Fatalf("request is %d bytes, want %d", got, grpcserver.MaxRequestBytes)
	}
	_, err := s.client.SignUp(ctx, request)
	st := wantCode(t, "SignUp(request at the size limit)", err, codes.InvalidArgument)
	want := []violation{{Field: "password", Description: fmt.Sprintf("must be at most %d bytes", auth.MaxPasswordBytes)}}
	if diff := cmp.Diff(want, badRequestViolations(st)); diff != "" {
		t.Errorf("SignUp(request at the size limit) violations mismatch (-want +got):\n%s", diff)
	}

	// A valid SignUp padded with unknown field 15, which the server
	// ignores, to exactly MaxRequestBytes. The padding adds a 1-byte tag
	// and a 2-byte length.
	var valid []byte
	valid = protowire.AppendTag(valid, 1, protowire.BytesType)
	valid = protowire.AppendString(valid, "padded@example.com")
	valid = protowire.AppendTag(valid, 2, protowire.BytesType)
	valid = protowire.AppendString(valid, "correct horse battery")
	padding := strings.Repeat("x", grpcserver.MaxRequestBytes-len(valid)-3)
	raw := protowire.AppendTag(slices.Clone(valid), 15, protowire.BytesType)
	raw = protowire.AppendString(raw, padding)
	if len(raw) != grpcserver.MaxRequestBytes {
		t.Fatalf("raw request is %d bytes, want %d", len(raw), grpcserver.MaxRequestBytes)
	}
	var resp []byte
	if err := s.conn.Invoke(ctx, "/auth.v1.AuthService/SignUp", &raw, &resp, grpc.ForceCodecV2(rawCodec{})); err != nil {
		t.Errorf("SignUp(valid request of exactly %d bytes) = %v, want nil", len(raw), err)
	}

	// One more byte of padding crosses the limit.
	raw = protowire.AppendTag(slices.Clone(valid), 15, protowire.BytesType)
	raw = protowire.AppendString(raw, padding+"x")
	err = s.conn.Invoke(ctx, "/auth.v1.AuthService/SignUp", &raw, &resp, grpc.ForceCodecV2(rawCodec{}))
	wantTooLarge(t, "SignUp(1 byte over the limit)", err, "(unknown field 15)", len(raw))
}

// wantTooLarge fails the test unless err is INVALID_ARGUMENT with one
// BadRequest violation naming field as the largest of a size-byte request.
func wantTooLarge(t *testing.T, call string, err error, field string, size int) {
	t.Helper()
	st := wantCode(t, call, err, codes.InvalidArgument)
	want := []violation{{
		Field:       field,
		Description: fmt.Sprintf("request is %d bytes, the limit is %d bytes", size, grpcserver.MaxRequestBytes),
	}}
	if diff := cmp.Diff(want, badRequestViolations(st)); diff != "" {
		t.Errorf("%s violations mismatch (-want +got):\n%s", call, diff)
	}
}

func TestRunKeysCommands(t *testing.T) {
	dir := t.TempDir()
	env := map[string]string{"AUTH_KEK": testKEK, "AUTH_DATA_DIR": dir}
	getenv := func(k string) string { return env[k] }
	ctx := testContext(t)

	run := func(args ...string) string {
		t.Helper()
		var stdout, stderr strings.Builder
		if err := app.RunWithOutput(ctx, args, getenv, &stdout, &stderr); err != nil {
			t.Fatalf("Run(%q) = %v; stderr:\n%s", args, err, stderr.String())
		}
		return stdout.String()
	}

	run("migrate")
	out := run("keys", "rotate")
	if !strings.Contains(out, "KID") {
		t.Errorf("keys rotate output = %q, want the key table", out)
	}
	out = run("keys", "list")
	if !strings.Contains(out, "current") {
		t.Errorf("keys list output = %q, want a current key", out)
	}
	out = run("keys", "rotate", "-drop-current")
	if lines := strings.Count(out, "\n"); lines < 2 {
		t.Errorf("keys rotate -drop-current output = %q, want at least one key", out)
	}
}

func TestRunRejectsBadConfigFirst(t *testing.T) {
	dir := t.TempDir() + "/never-created"
	var stderr strings.Builder
	err := app.RunWithOutput(testContext(t), []string{"-data-dir", dir}, func(string) string { return "" }, io.Discard, &stderr)
	if err == nil || !strings.Contains(err.Error(), "missing key-encryption key") {
		t.Fatalf("Run(serve without KEK) = %v, want a missing key-encryption key error", err)
	}
	if _, statErr := osStat(dir); statErr == nil {
		t.Errorf("Run(serve without KEK) created %s, want nothing opened before validation", dir)
	}

	err = app.RunWithOutput(testContext(t), []string{"frobnicate"}, func(string) string { return "" }, io.Discard, &stderr)
	if err == nil || !strings.Contains(err.Error(), `unknown command "frobnicate"`) {
		t.Errorf("Run(frobnicate) = %v, want an unknown command error", err)
	}
}

func TestShutdownStopsServing(t *testing.T) {
	s := startServer(t)
	signUp(t, s, "ada@example.com", "correct horse battery")

	if err := s.Shutdown(); err != nil {
		t.Fatalf("Shutdown() = %v", err)
	}
	_, err := s.client.SignUp(testContext(t), &authv1.SignUpRequest{Email: "bob@example.com", Password: "correct horse battery"})
	wantCode(t, "SignUp() after Shutdown", err, codes.Unavailable)
}

// TestShutdownDrainsInFlight starts several sign-ups that queue for the one
// hashing slot, shuts down while some are running, and checks that every
// RPC running at that moment completes with OK.
func TestShutdownDrainsInFlight(t *testing.T) {
	s := startServer(t, "-max-concurrent-hashes", "1")
	ctx := testContext(t)

	const calls = 6
	errs := make(chan error, calls)
	for i := range calls {
		go func() {
			_, err := s.client.SignUp(ctx, &authv1.SignUpRequest{Email: fmt.Sprintf("user%d@example.com", i), Password: "correct horse battery"})
			errs <- err
		}()
	}

	// Wait until at least two RPCs are running.
	metricsURL := "http://" + s.HTTPAddr() + "/metrics"
	for inFlight(get(t, metricsURL)) < 2 {
		if ctx.Err() != nil {
			t.Fatal("no two sign-ups were in flight at once before the test deadline")
		}
		time.Sleep(time.Millisecond)
	}
	if err := s.Shutdown(); err != nil {
		t.Fatalf("Shutdown() = %v", err)
	}

	succeeded := 0
	for range calls {
		err := <-errs
		if err == nil {
			succeeded++
			continue
		}
		// A call that had not reached the server before it stopped
		// accepting RPCs fails with UNAVAILABLE and no other code.
		wantCode(t, "SignUp() during Shutdown", err, codes.Unavailable)
	}

	var shuttingDown, stopped map[string]any
	for _, line := range strings.Split(s.logs.String(), "\n") {
		var entry map[string]any
		if json.Unmarshal([]byte(line), &entry) != nil {
			continue
		}
		switch entry["msg"] {
		case "shutting down: health NOT_SERVING, draining in-flight RPCs":
			shuttingDown = entry
		case "auth-service stopped":
			stopped = entry
		}
	}
	drained, _ := shuttingDown["in_flight_rpcs"].(float64)
	if drained < 1 {
		t.Errorf("shutdown log in_flight_rpcs = %v, want at least 1", shuttingDown["in_flight_rpcs"])
	}
	if float64(succeeded) < drained {
		t.Errorf("%d sign-ups succeeded, want at least the %v in flight at shutdown", succeeded, drained)
	}
	if stopped["grpc_drained"] != true || stopped["rpcs_cut_off"] != float64(0) {
		t.Errorf("stop log = %v, want grpc_drained true and rpcs_cut_off 0", stopped)
	}
}

// inFlight reads the grpc_server_in_flight_requests gauge from a /metrics
// page.
func inFlight(page string) float64 {
	for _, line := range strings.Split(page, "\n") {
		if value, ok := strings.CutPrefix(line, "grpc_server_in_flight_requests "); ok {
			var n float64
			fmt.Sscan(value, &n)
			return n
		}
	}
	return 0
}

func get(t *testing.T, url string) string {
	t.Helper()
	req, err := http.NewRequestWithContext(testContext(t), http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read GET %s: %v", url, err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s status = %d, want 200; body %s", url, resp.StatusCode, body)
	}
	return string(body)
}

func getJSON(t *testing.T, url string, v any) {
	t.Helper()
	if err := json.Unmarshal([]byte(get(t, url)), v); err != nil {
		t.Fatalf("decode GET %s: %v", url, err)
	}
}

type jwsHeader struct {
	Alg string `json:"alg"`
	Typ string `json:"typ"`
	Kid string `json:"kid"`
}

func decodeHeader(t *testing.T, token string) jwsHeader {
	t.Helper()
	encoded, _, _ := strings.Cut(token, ".")
	raw, err := base64RawURL(encoded)
	if err != nil {
		t.Fatalf("decode token header: %v", err)
	}
	var h jwsHeader
	if err := json.Unmarshal(raw, &h); err != nil {
		t.Fatalf("parse token header: %v", err)
	}
	return h
}

// rawCodec sends pre-encoded request bytes, which lets a test send string
// fields that the generated client would reject.
type rawCodec struct{}

func (rawCodec) Name() string { return "proto" }

func (rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	return mem.BufferSlice{mem.SliceBuffer(*v.(*[]byte))}, nil
}

func (rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	*v.(*[]byte) = data.Materialize()
	return nil
}

func TestInvalidUTF8NamesField(t *testing.T) {
	s := startServer(t)

	var req []byte
	req = protowire.AppendTag(req, 1, protowire.BytesType)
	req = protowire.AppendBytes(req, []byte("ada\xff@example.com"))
	req = protowire.AppendTag(req, 2, protowire.BytesType)
	req = protowire.AppendBytes(req, []byte("correct horse \xc3"))

	var resp []byte
	err := s.conn.Invoke(testContext(t), "/auth.v1.AuthService/SignUp", &req, &resp, grpc.ForceCodecV2(rawCodec{}))
	st := wantCode(t, "SignUp(invalid UTF-8)", err, codes.InvalidArgument)
	if diff := cmp.Diff([]string{"email", "password"}, fieldViolations(st)); diff != "" {
		t.Errorf("SignUp(invalid UTF-8) field violations mismatch (-want +got):\n%s", diff)
	}

	// The same raw path with valid UTF-8 works, so the codec passes good
	// requests through.
	req = nil
	req = protowire.AppendTag(req, 1, protowire.BytesType)
	req = protowire.AppendBytes(req, []byte("ada@example.com"))
	req = protowire.AppendTag(req, 2, protowire.BytesType)
	req = protowire.AppendBytes(req, []byte("correct horse battery"))
	if err := s.conn.Invoke(testContext(t), "/auth.v1.AuthService/SignUp", &req, &resp, grpc.ForceCodecV2(rawCodec{})); err != nil {
		t.Errorf("SignUp(raw valid request) = %v, want nil", err)
	}
}

func TestLoginThrottleUsesForwardedAddress(t *testing.T) {
	tests := []struct {
		name    string
		trusted string
		// wantBlocked is whether a login forwarded for a fresh address is
		// blocked after three failures forwarded for another address.
		wantBlocked bool
	}{
		// The test client connects from 127.0.0.1, so a trusted proxy
		// there makes x-forwarded-for the client address.
		{"trusted peer", "127.0.0.1/32", false},
		// An untrusted peer's header is ignored, so every failure
		// counts against 127.0.0.1.
		{"untrusted peer", "10.0.0.0/8", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := startServer(t, "-trusted-proxies", tt.trusted, "-login-address-free-failures", "2", "-login-backoff-base", "1m")
			signUp(t, s, "ada@example.com", "correct horse battery")
			ctx := testContext(t)

			attacker := metadata.AppendToOutgoingContext(ctx, "x-forwarded-for", "198.51.100.1")
			for i := range 3 {
				_, err := s.client.Login(attacker, &authv1.LoginRequest{Email: fmt.Sprintf("victim%d@example.com", i), Password: "wrong password"})
				wantCode(t, "Login(wrong password)", err, codes.Unauthenticated)
			}

			user := metadata.AppendToOutgoingContext(ctx, "x-forwarded-for", "203.0.113.7")
			_, err := s.client.Login(user, &authv1.LoginRequest{Email: "ada@example.com", Password: "correct horse battery"})
			if tt.wantBlocked {
				wantCode(t, "Login() from another forwarded address", err, codes.ResourceExhausted)
			} else if err != nil {
				t.Errorf("Login() from another forwarded address = %v, want nil", err)
			}
		})
	}
}
