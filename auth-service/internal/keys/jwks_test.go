package keys

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/lestrrat-go/jwx/v2/jwk"

	"example.com/todoapp/proto/accesstoken"
)

type jwksResponse struct {
	status int
	header http.Header
	body   []byte
}

// getJWKS serves one request through a real HTTP server on loopback.
func getJWKS(tb testing.TB, m *Manager) jwksResponse {
	tb.Helper()
	return requestJWKS(tb, m, http.MethodGet)
}

func requestJWKS(tb testing.TB, m *Manager, method string) jwksResponse {
	tb.Helper()

	server := httptest.NewServer(m.JWKSHandler())
	defer server.Close()

	req, err := http.NewRequestWithContext(testContext(tb), method, server.URL+"/.well-known/jwks.json", nil)
	if err != nil {
		tb.Fatalf("NewRequest() = %v", err)
	}
	resp, err := server.Client().Do(req)
	if err != nil {
		tb.Fatalf("%s JWKS: %v", method, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		tb.Fatalf("read JWKS body: %v", err)
	}
	return jwksResponse{status: resp.StatusCode, header: resp.Header, body: body}
}

// maxAge returns the max-age of a "public, max-age=N" Cache-Control value.
func (r jwksResponse) maxAge(tb testing.TB) int64 {
	tb.Helper()
	value := r.header.Get("Cache-Control")
	const prefix = "public, max-age="
	if len(value) <= len(prefix) || value[:len(prefix)] != prefix {
		tb.Fatalf("Cache-Control = %q, want %q followed by seconds", value, prefix)
	}
	n, err := strconv.ParseInt(value[len(prefix):], 10, 64)
	if err != nil {
		tb.Fatalf("Cache-Control = %q: %v", value, err)
	}
	return n
}

func containsKID(tb testing.TB, body, kid string) bool {
	tb.Helper()
	set, err := jwk.Parse([]byte(body))
	if err != nil {
		tb.Fatalf("jwk.Parse(JWKS) = %v", err)
	}
	_, ok := set.LookupKeyID(kid)
	return ok
}

func newTestVerifier(tb testing.TB, m *Manager, clock *testClock) *accesstoken.Verifier {
	tb.Helper()
	v, err := accesstoken.NewVerifier(accesstoken.VerifierConfig{
		Issuer:    "http://127.0.0.1:8081",
		Audiences: []string{"todo-service"},
		Now:       clock.Now,
		Keys:      m,
	})
	if err != nil {
		tb.Fatalf("NewVerifier() = %v", err)
	}
	return v
}

// signTestToken signs a 15-minute token with the manager's signing key.
func signTestToken(tb testing.TB, m *Manager, clock *testClock) string {
	tb.Helper()
	key, err := m.SigningKey(testContext(tb))
	if err != nil {
		tb.Fatalf("SigningKey() = %v", err)
	}
	now := clock.Now()
	token, err := accesstoken.Sign(accesstoken.Claims{
		Issuer:    "http://127.0.0.1:8081",
		Subject:   uuid.NewString(),
		Audience:  []string{"todo-service"},
		Expiry:    now.Add(15 * time.Minute),
		IssuedAt:  now,
		NotBefore: now,
		ID:        uuid.NewString(),
		SessionID: uuid.NewString(),
		Email:     "user@example.com",
	}, key)
	if err != nil {
		tb.Fatalf("Sign() = %v", err)
	}
	return token
}

func TestJWKSPublicMembersOnly(t *testing.T) {
	clock := newTestClock()
	cfg := testConfig(clock)
	m := startTestManager(t, openSQLite(t), cfg)
	clock.Advance(cfg.RotationPeriod - cfg.PublishLead)
	refresh(t, m)
	infos := listKeys(t, m)

	resp := getJWKS(t, m)
	if resp.status != http.StatusOK {
		t.Fatalf("GET JWKS status = %d, want 200", resp.status)
	}
	if got := resp.header.Get("Content-Type"); got != "application/json" {
		t.Errorf("Content-Type = %q, want application/json", got)
	}

	var raw struct {
		Keys []map[string]any `json:"keys"`
	}
	if err := json.Unmarshal(resp.body, &raw); err != nil {
		t.Fatalf("decode JWKS %s: %v", resp.body, err)
	}
	if len(raw.Keys) != len(infos) {
		t.Fatalf("JWKS has %d keys, want %d (current and next)", len(raw.Keys), len(infos))
	}
	wantMembers := []string{"alg", "e", "kid", "kty", "n", "use"}
	for _, key := range raw.Keys {
		var members []string
		for name := range key {
			members = append(members, name)
		}
		slices.Sort(members)
		if !slices.Equal(members, wantMembers) {
			t.Errorf("JWK members = %v, want exactly %v", members, wantMembers)
		}
		for _, private := range []string{"d", "p", "q", "dp", "dq", "qi"} {
			if _, ok := key[private]; ok {
				t.Errorf("JWK %v has private member %q", key["kid"], private)
			}
		}
		if key["kty"] != "RSA" || key["alg"] != "RS256" || key["use"] != "sig" {
			t.Errorf("JWK kty, alg, use = %v, %v, %v, want RSA, RS256, sig", key["kty"], key["alg"], key["use"])
		}
	}

	// Every published key parses back to the manager's public key.
	set, err := jwk.Parse(resp.body)
	if err != nil {
		t.Fatalf("jwk.Parse(JWKS) = %v", err)
	}
	for _, info := range infos {
		key, ok := set.LookupKeyID(info.ID)
		if !ok {
			t.Errorf("JWKS lacks %s key %s", info.State, info.ID)
			continue
		}
		want, err := m.PublicKey(testContext(t), info.ID)
		if err != nil {
			t.Fatalf("PublicKey(%s) = %v", info.ID, err)
		}
		var got any
		if err := key.Raw(&got); err != nil {
			t.Fatalf("JWK %s Raw() = %v", info.ID, err)
		}
		if !want.Equal(got) {
			t.Errorf("JWK %s does not match PublicKey(%s)", info.ID, info.ID)
		}
	}
}

func TestJWKSMaxAgeCountsDown(t *testing.T) {
	clock := newTestClock()
	cfg := testConfig(clock)
	m := startTestManager(t, openSQLite(t), cfg)
	t0 := clock.Now()
	capSeconds := int64(cfg.JWKSMaxAge / time.Second)

	createNextAt := t0.Add(cfg.RotationPeriod - cfg.PublishLead)
	tests := []struct {
		name string
		at   time.Time
		want int64
	}{
		{"far from a change uses the cap", t0, capSeconds},
		{"exactly the cap", createNextAt.Add(-cfg.JWKSMaxAge), capSeconds},
		{"100s before next key", createNextAt.Add(-100 * time.Second), 100},
		{"rounds down", createNextAt.Add(-99500 * time.Millisecond), 99},
		{"under a second", createNextAt.Add(-time.Millisecond), 0},
		{"change due, not yet made", createNextAt.Add(time.Minute), 0},
	}
	for _, tt := range tests {
		clock.Set(tt.at)
		// Load without performing the transitions that are due, as a
		// replica does between its polls.
		reload(t, m)
		if got := getJWKS(t, m).maxAge(t); got != tt.want {
			t.Errorf("%s: max-age at %v = %d, want %d", tt.name, tt.at.Sub(t0), got, tt.want)
		}
	}

	// After the next key exists and activates, the set changes next when
	// the retired key is deleted.
	clock.Set(createNextAt)
	refresh(t, m)
	next := keyWithState(t, listKeys(t, m), StateNext)
	clock.Set(next.ActivateTime)
	refresh(t, m)
	retired := keyWithState(t, listKeys(t, m), StateRetired)
	clock.Set(retired.DeleteTime.Add(-42 * time.Second))
	refresh(t, m)
	if got := getJWKS(t, m).maxAge(t); got != 42 {
		t.Errorf("max-age 42s before the retired key is deleted = %d, want 42", got)
	}
}

func TestJWKSMaxAgeRespectsCap(t *testing.T) {
	for _, maxAge := range []time.Duration{0, time.Second, 90 * time.Second, 10 * time.Minute} {
		clock := newTestClock()
		cfg := testConfig(clock)
		cfg.JWKSMaxAge = maxAge
		m := startTestManager(t, openSQLite(t), cfg)

		if got, want := getJWKS(t, m).maxAge(t), int64(maxAge/time.Second); got != want {
			t.Errorf("JWKSMaxAge %v: max-age = %d, want %d", maxAge, got, want)
		}
	}
}

func TestJWKSHandlerMethods(t *testing.T) {
	m := newTestManager(t, openSQLite(t), testKEK(), testConfig(newTestClock()), nil)

	if got := getJWKS(t, m).status; got != http.StatusServiceUnavailable {
		t.Errorf("GET JWKS before Start status = %d, want 503", got)
	}
	if err := m.Start(testContext(t)); err != nil {
		t.Fatalf("Start() = %v", err)
	}

	head := requestJWKS(t, m, http.MethodHead)
	if head.status != http.StatusOK || len(head.body) != 0 {
		t.Errorf("HEAD JWKS = %d with %d body bytes, want 200 with none", head.status, len(head.body))
	}
	post := requestJWKS(t, m, http.MethodPost)
	if post.status != http.StatusMethodNotAllowed {
		t.Errorf("POST JWKS status = %d, want 405", post.status)
	}
	if got := post.header.Get("Allow"); got != "GET, HEAD" {
		t.Errorf("POST JWKS Allow = %q, want %q", got, "GET, HEAD")
	}
}

func TestJWKSStaleReplicaUnavailable(t *testing.T) {
	clock := newTestClock()
	cfg := testConfig(clock)
	m := startTestManager(t, openSQLite(t), cfg)

	clock.Advance(cfg.StaleAfter())
	if got := getJWKS(t, m).status; got != http.StatusOK {
		t.Errorf("GET JWKS at the stale limit status = %d, want 200", got)
	}

	clock.Advance(time.Second)
	resp := getJWKS(t, m)
	if resp.status != http.StatusServiceUnavailable {
		t.Errorf("GET JWKS past the stale limit status = %d, want 503", resp.status)
	}
	if got := resp.header.Get("Cache-Control"); got != "no-store" {
		t.Errorf("stale JWKS Cache-Control = %q, want no-store", got)
	}

	refresh(t, m)
	if got := getJWKS(t, m).status; got != http.StatusOK {
		t.Errorf("GET JWKS after a refresh status = %d, want 200", got)
	}
}
