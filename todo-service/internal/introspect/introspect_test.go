package introspect

import (
	"context"
	"errors"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"example.com/todoapp/proto/accesstoken"
	authv1 "example.com/todoapp/proto/gen/auth/v1"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestVerifyActiveMapsClaims(t *testing.T) {
	client, server := startAuthServer(t, respondWith(activeResponse(), nil))
	v := newTestVerifier(t, client, nil)

	got, err := v.Verify(t.Context(), testToken)
	if err != nil {
		t.Fatalf("Verify() error = %v", err)
	}

	iat := testNow.Add(-time.Minute)
	want := &accesstoken.Claims{
		Issuer:    testIssuer,
		Subject:   testSubject,
		Audience:  []string{testAudience},
		Expiry:    iat.Add(15 * time.Minute),
		IssuedAt:  iat,
		NotBefore: iat,
		ID:        "jti-1",
		SessionID: testSession,
		Email:     "ada@example.com",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Verify() claims mismatch (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{testToken}, server.received()); diff != "" {
		t.Errorf("tokens received by the auth service mismatch (-want +got):\n%s", diff)
	}
}

func TestVerifyWithoutNotBefore(t *testing.T) {
	resp := activeResponse()
	resp.Nbf = nil
	client, _ := startAuthServer(t, respondWith(resp, nil))
	v := newTestVerifier(t, client, nil)

	got, err := v.Verify(t.Context(), testToken)
	if err != nil {
		t.Fatalf("Verify() error = %v", err)
	}
	if !got.NotBefore.IsZero() {
		t.Errorf("Verify() NotBefore = %v, want the zero time", got.NotBefore)
	}
}

func TestVerifyInactiveIsInvalid(t *testing.T) {
	client, _ := startAuthServer(t, respondWith(&authv1.IntrospectTokenResponse{Active: false}, nil))
	v := newTestVerifier(t, client, nil)

	claims, err := v.Verify(t.Context(), testToken)
	if !errors.Is(err, accesstoken.ErrInvalidToken) {
		t.Errorf("Verify() error = %v, want ErrInvalidToken", err)
	}
	if claims != nil {
		t.Errorf("Verify() claims = %+v, want nil", claims)
	}
}

func TestVerifyLocalChecks(t *testing.T) {
	tests := []struct {
		name    string
		change  func(*authv1.IntrospectTokenResponse)
		wantErr error // nil: accepted
	}{
		{
			name:    "another issuer",
			change:  func(r *authv1.IntrospectTokenResponse) { r.Iss = "http://127.0.0.1:9999" },
			wantErr: accesstoken.ErrInvalidToken,
		},
		{
			name:    "issuer with trailing slash",
			change:  func(r *authv1.IntrospectTokenResponse) { r.Iss = testIssuer + "/" },
			wantErr: accesstoken.ErrInvalidToken,
		},
		{
			name:    "empty issuer",
			change:  func(r *authv1.IntrospectTokenResponse) { r.Iss = "" },
			wantErr: accesstoken.ErrInvalidToken,
		},
		{
			name:    "another audience",
			change:  func(r *authv1.IntrospectTokenResponse) { r.Aud = []string{"billing-service"} },
			wantErr: accesstoken.ErrInvalidToken,
		},
		{
			name:    "no audience",
			change:  func(r *authv1.IntrospectTokenResponse) { r.Aud = nil },
			wantErr: accesstoken.ErrInvalidToken,
		},
		{
			name:    "padded audience",
			change:  func(r *authv1.IntrospectTokenResponse) { r.Aud = []string{" " + testAudience} },
			wantErr: accesstoken.ErrInvalidToken,
		},
		{
			name:   "audience among others",
			change: func(r *authv1.IntrospectTokenResponse) { r.Aud = []string{"billing-service", testAudience} },
		},
		{
			name: "expired beyond skew",
			change: func(r *authv1.IntrospectTokenResponse) {
				r.Iat = timestamppb.New(testNow.Add(-20 * time.Minute))
				r.Nbf = r.Iat
				r.Exp = timestamppb.New(testNow.Add(-31 * time.Second))
			},
			wantErr: accesstoken.ErrInvalidToken,
		},
		{
			name: "expired within skew",
			change: func(r *authv1.IntrospectTokenResponse) {
				r.Iat = timestamppb.New(testNow.Add(-20 * time.Minute))
				r.Nbf = r.Iat
				r.Exp = timestamppb.New(testNow.Add(-29 * time.Second))
			},
		},
		{
			name:    "not yet valid",
			change:  func(r *authv1.IntrospectTokenResponse) { r.Nbf = timestamppb.New(testNow.Add(time.Minute)) },
			wantErr: accesstoken.ErrInvalidToken,
		},
		{
			name: "issued in the future",
			change: func(r *authv1.IntrospectTokenResponse) {
				r.Iat = timestamppb.New(testNow.Add(time.Minute))
				r.Nbf = nil
			},
			wantErr: accesstoken.ErrInvalidToken,
		},
		{
			name:    "exp not after iat",
			change:  func(r *authv1.IntrospectTokenResponse) { r.Exp = r.Iat },
			wantErr: accesstoken.ErrInvalidToken,
		},
		{
			name:    "lifetime above maximum",
			change:  func(r *authv1.IntrospectTokenResponse) { r.Exp = timestamppb.New(r.Iat.AsTime().Add(61 * time.Minute)) },
			wantErr: accesstoken.ErrInvalidToken,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := activeResponse()
			tt.change(resp)
			client, _ := startAuthServer(t, respondWith(resp, nil))
			v := newTestVerifier(t, client, nil)

			claims, err := v.Verify(t.Context(), testToken)
			if tt.wantErr == nil {
				if err != nil {
					t.Errorf("Verify() error = %v, want nil", err)
				}
				return
			}
			if !errors.Is(err, tt.wantErr) {
				t.Errorf("Verify() error = %v, want %v", err, tt.wantErr)
			}
			if claims != nil {
				t.Errorf("Verify() claims = %+v, want nil", claims)
			}
		})
	}
}

func TestVerifyMalformedResponse(t *testing.T) {
	tests := []struct {
		name   string
		change func(*authv1.IntrospectTokenResponse)
	}{
		{name: "missing sub", change: func(r *authv1.IntrospectTokenResponse) { r.Sub = "" }},
		{name: "sub not a UUID", change: func(r *authv1.IntrospectTokenResponse) { r.Sub = "user-1" }},
		{name: "sub UUID in braces", change: func(r *authv1.IntrospectTokenResponse) { r.Sub = "{" + testSubject + "}" }},
		{name: "missing jti", change: func(r *authv1.IntrospectTokenResponse) { r.Jti = "" }},
		{name: "missing sid", change: func(r *authv1.IntrospectTokenResponse) { r.Sid = "" }},
		{name: "missing exp", change: func(r *authv1.IntrospectTokenResponse) { r.Exp = nil }},
		{name: "missing iat", change: func(r *authv1.IntrospectTokenResponse) { r.Iat = nil }},
		{name: "exp out of range", change: func(r *authv1.IntrospectTokenResponse) { r.Exp = &timestamppb.Timestamp{Seconds: 1 << 62} }},
		{name: "iat at epoch", change: func(r *authv1.IntrospectTokenResponse) { r.Iat = &timestamppb.Timestamp{} }},
		{name: "nbf invalid nanos", change: func(r *authv1.IntrospectTokenResponse) { r.Nbf = &timestamppb.Timestamp{Seconds: 1, Nanos: -1} }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := activeResponse()
			tt.change(resp)
			client, _ := startAuthServer(t, respondWith(resp, nil))
			v := newTestVerifier(t, client, nil)

			_, err := v.Verify(t.Context(), testToken)
			if !errors.Is(err, accesstoken.ErrKeysUnavailable) {
				t.Errorf("Verify() error = %v, want ErrKeysUnavailable", err)
			}
			if errors.Is(err, accesstoken.ErrInvalidToken) {
				t.Errorf("Verify() error = %v, must not wrap ErrInvalidToken", err)
			}
		})
	}
}

func TestVerifyCallFailures(t *testing.T) {
	for _, code := range []codes.Code{
		codes.Unavailable,
		codes.DeadlineExceeded,
		codes.Internal,
		codes.Unknown,
		codes.Unimplemented,
		codes.Unauthenticated,
		codes.PermissionDenied,
		codes.ResourceExhausted,
		codes.InvalidArgument,
	} {
		t.Run(code.String(), func(t *testing.T) {
			client, _ := startAuthServer(t, respondWith(nil, status.Error(code, "test failure")))
			v := newTestVerifier(t, client, nil)

			_, err := v.Verify(t.Context(), testToken)
			if !errors.Is(err, accesstoken.ErrKeysUnavailable) {
				t.Errorf("Verify() error = %v, want ErrKeysUnavailable", err)
			}
			if errors.Is(err, accesstoken.ErrInvalidToken) {
				t.Errorf("Verify() error = %v, must not wrap ErrInvalidToken", err)
			}
			if got := status.Code(err); got != code {
				t.Errorf("status.Code(Verify() error) = %v, want %v", got, code)
			}
		})
	}
}

func TestVerifyTimeout(t *testing.T) {
	client, _ := startAuthServer(t, func(ctx context.Context, _ *authv1.IntrospectTokenRequest) (*authv1.IntrospectTokenResponse, error) {
		<-ctx.Done()
		return nil, ctx.Err()
	})
	v := newTestVerifier(t, client, func(cfg *Config) { cfg.Timeout = 50 * time.Millisecond })

	_, err := v.Verify(t.Context(), testToken)
	if !errors.Is(err, accesstoken.ErrKeysUnavailable) {
		t.Errorf("Verify() error = %v, want ErrKeysUnavailable", err)
	}
	if got := status.Code(err); got != codes.DeadlineExceeded {
		t.Errorf("status.Code(Verify() error) = %v, want DeadlineExceeded", got)
	}
}

func TestVerifyCallerCanceled(t *testing.T) {
	client, server := startAuthServer(t, respondWith(activeResponse(), nil))
	v := newTestVerifier(t, client, nil)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()

	_, err := v.Verify(ctx, testToken)
	if !errors.Is(err, accesstoken.ErrKeysUnavailable) {
		t.Errorf("Verify() error = %v, want ErrKeysUnavailable", err)
	}
	if got := len(server.received()); got != 0 {
		t.Errorf("calls received = %d, want 0", got)
	}
}

func TestVerifyConnectionClosed(t *testing.T) {
	// The listener accepts and closes every connection, so the client
	// meets a transport error on a port this test owns until it ends.
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			conn, err := lis.Accept()
			if err != nil {
				return
			}
			_ = conn.Close()
		}
	})
	t.Cleanup(func() {
		_ = lis.Close()
		wg.Wait()
	})
	v := newTestVerifier(t, dial(t, lis.Addr().String()), nil)

	_, err = v.Verify(t.Context(), testToken)
	if !errors.Is(err, accesstoken.ErrKeysUnavailable) {
		t.Errorf("Verify() error = %v, want ErrKeysUnavailable", err)
	}
	if got := status.Code(err); got != codes.Unavailable {
		t.Errorf("status.Code(Verify() error) = %v, want Unavailable", got)
	}
}

func TestVerifyRejectsWithoutCall(t *testing.T) {
	tests := []struct {
		name  string
		token string
	}{
		{name: "empty", token: ""},
		{name: "oversized", token: strings.Repeat("a", DefaultMaxTokenBytes+1)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			client, server := startAuthServer(t, respondWith(activeResponse(), nil))
			v := newTestVerifier(t, client, nil)

			_, err := v.Verify(t.Context(), tt.token)
			if !errors.Is(err, accesstoken.ErrInvalidToken) {
				t.Errorf("Verify() error = %v, want ErrInvalidToken", err)
			}
			if got := len(server.received()); got != 0 {
				t.Errorf("calls received = %d, want 0", got)
			}
		})
	}
}

func TestVerifyErrorOmitsToken(t *testing.T) {
	const secret = "eyJzZWNyZXQiOiJ0b2tlbiJ9.c2VjcmV0.c2lnbmF0dXJl"
	responses := map[string]introspectFunc{
		"inactive":    respondWith(&authv1.IntrospectTokenResponse{}, nil),
		"wrong aud":   respondWith(func() *authv1.IntrospectTokenResponse { r := activeResponse(); r.Aud = []string{"x"}; return r }(), nil),
		"unavailable": respondWith(nil, status.Error(codes.Unavailable, "auth service is down")),
	}
	for name, respond := range responses {
		t.Run(name, func(t *testing.T) {
			client, _ := startAuthServer(t, respond)
			v := newTestVerifier(t, client, nil)

			_, err := v.Verify(t.Context(), secret)
			if err == nil {
				t.Fatal("Verify() error = nil, want an error")
			}
			if strings.Contains(err.Error(), secret) {
				t.Errorf("Verify() error %q contains the token", err)
			}
		})
	}
}

func TestVerifyConcurrent(t *testing.T) {
	client, server := startAuthServer(t, respondWith(activeResponse(), nil))
	v := newTestVerifier(t, client, nil)

	const workers, calls = 8, 20
	var wg sync.WaitGroup
	errs := make(chan error, workers*calls)
	for range workers {
		wg.Go(func() {
			for range calls {
				if _, err := v.Verify(t.Context(), testToken); err != nil {
					errs <- err
				}
			}
		})
	}
	wg.Wait()
	close(errs)

	for err := range errs {
		t.Errorf("Verify() error = %v", err)
	}
	if got := len(server.received()); got != workers*calls {
		t.Errorf("calls received = %d, want %d", got, workers*calls)
	}
}

func TestVerifyReturnsFreshClaims(t *testing.T) {
	resp := activeResponse()
	client, _ := startAuthServer(t, respondWith(resp, nil))
	v := newTestVerifier(t, client, nil)

	first, err := v.Verify(t.Context(), testToken)
	if err != nil {
		t.Fatalf("Verify() error = %v", err)
	}
	first.Audience[0] = "changed by the caller"

	second, err := v.Verify(t.Context(), testToken)
	if err != nil {
		t.Fatalf("Verify() error = %v", err)
	}
	if diff := cmp.Diff([]string{testAudience}, second.Audience); diff != "" {
		t.Errorf("Verify() audience mismatch (-want +got):\n%s", diff)
	}
	if !proto.Equal(resp, activeResponse()) {
		t.Error("the server's response was changed by the caller")
	}
}

func TestMetricsCount(t *testing.T) {
	var mu sync.Mutex
	next := []introspectFunc{
		respondWith(activeResponse(), nil),
		respondWith(&authv1.IntrospectTokenResponse{}, nil),
		respondWith(func() *authv1.IntrospectTokenResponse { r := activeResponse(); r.Iss = "x"; return r }(), nil),
		respondWith(nil, status.Error(codes.Unavailable, "down")),
	}
	client, _ := startAuthServer(t, func(ctx context.Context, req *authv1.IntrospectTokenRequest) (*authv1.IntrospectTokenResponse, error) {
		mu.Lock()
		respond := next[0]
		next = next[1:]
		mu.Unlock()
		return respond(ctx, req)
	})
	reg := prometheus.NewRegistry()
	v, err := New(client, Config{Issuer: testIssuer, Audiences: []string{testAudience}, Now: fixedNow}, reg)
	if err != nil {
		t.Fatalf("New() error = %v", err)
	}

	for range 4 {
		_, _ = v.Verify(t.Context(), testToken)
	}
	_, _ = v.Verify(t.Context(), "")

	want := `
# HELP todo_introspect_requests_total Token checks in introspect mode, by result: active, inactive, rejected, error.
# TYPE todo_introspect_requests_total counter
todo_introspect_requests_total{result="active"} 1
todo_introspect_requests_total{result="error"} 1
todo_introspect_requests_total{result="inactive"} 1
todo_introspect_requests_total{result="rejected"} 2
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "todo_introspect_requests_total"); err != nil {
		t.Error(err)
	}
	if got := testutil.CollectAndCount(v.metrics.duration); got != 1 {
		t.Errorf("duration histograms = %d, want 1", got)
	}
	if got := testutil.ToFloat64(v.metrics.requests.WithLabelValues(resultActive)); got != 1 {
		t.Errorf("active count = %v, want 1", got)
	}
}

func TestNewRejectsInvalidConfig(t *testing.T) {
	client, _ := startAuthServer(t, respondWith(activeResponse(), nil))
	valid := Config{Issuer: testIssuer, Audiences: []string{testAudience}}

	tests := []struct {
		name   string
		client Client
		change func(*Config)
	}{
		{name: "nil client", change: func(*Config) {}},
		{name: "empty issuer", client: client, change: func(c *Config) { c.Issuer = "" }},
		{name: "no audience", client: client, change: func(c *Config) { c.Audiences = nil }},
		{name: "empty audience", client: client, change: func(c *Config) { c.Audiences = []string{testAudience, ""} }},
		{name: "negative timeout", client: client, change: func(c *Config) { c.Timeout = -time.Second }},
		{name: "negative clock skew", client: client, change: func(c *Config) { c.ClockSkew = -time.Second }},
		{name: "negative max lifetime", client: client, change: func(c *Config) { c.MaxLifetime = -time.Second }},
		{name: "negative max token bytes", client: client, change: func(c *Config) { c.MaxTokenBytes = -1 }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := valid
			tt.change(&cfg)
			if v, err := New(tt.client, cfg, nil); err == nil {
				t.Errorf("New() = %v, want an error", v)
			}
		})
	}
}

func TestNewDefaults(t *testing.T) {
	client, _ := startAuthServer(t, respondWith(activeResponse(), nil))
	v, err := New(client, Config{Issuer: testIssuer, Audiences: []string{testAudience}}, nil)
	if err != nil {
		t.Fatalf("New() error = %v", err)
	}

	if v.timeout != DefaultTimeout {
		t.Errorf("timeout = %v, want %v", v.timeout, DefaultTimeout)
	}
	if v.clockSkew != DefaultClockSkew {
		t.Errorf("clock skew = %v, want %v", v.clockSkew, DefaultClockSkew)
	}
	if v.maxLifetime != DefaultMaxLifetime {
		t.Errorf("max lifetime = %v, want %v", v.maxLifetime, DefaultMaxLifetime)
	}
	if v.maxTokenBytes != DefaultMaxTokenBytes {
		t.Errorf("max token bytes = %d, want %d", v.maxTokenBytes, DefaultMaxTokenBytes)
	}
	if v.now == nil {
		t.Error("now is nil, want time.Now")
	}
}
