package tokencache

import (
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"math/big"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"example.com/todoapp/proto/accesstoken"
	"example.com/todoapp/todo-service/internal/jwks"
)

// TestCacheWithJWKSKeyRemoved runs the cache against the real JWKS cache
// and a JWKS endpoint on loopback. After the endpoint drops a key and the
// JWKS cache fetches the new set, a cached token signed with that key must
// fail.
func TestCacheWithJWKSKeyRemoved(t *testing.T) {
	first, second := testKeys(t)

	var body atomic.Value // []byte
	body.Store(jwksJSON(t, map[string]*rsa.PublicKey{"key-a": &first.PublicKey}))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(body.Load().([]byte))
	}))
	t.Cleanup(srv.Close)

	cfg := jwks.DefaultConfig()
	cfg.URL = srv.URL + "/.well-known/jwks.json"
	keys, err := jwks.New(cfg, nil, nil, nil)
	if err != nil {
		t.Fatalf("jwks.New() error = %v", err)
	}
	keys.Start(t.Context())
	t.Cleanup(keys.Close)
	waitReady(t, keys)

	full, err := accesstoken.NewVerifier(accesstoken.VerifierConfig{
		Issuer:    testIssuer,
		Audiences: []string{testAudience},
		Keys:      keys,
	})
	if err != nil {
		t.Fatalf("NewVerifier() error = %v", err)
	}
	counting := &countingVerifier{next: full}
	cache, err := New(counting, keys, Config{}, nil)
	if err != nil {
		t.Fatalf("New() error = %v", err)
	}

	now := time.Now().Truncate(time.Second)
	claims := claimsFor("jti-jwks-a", 15*time.Minute)
	claims.IssuedAt, claims.NotBefore, claims.Expiry = now, now, now.Add(15*time.Minute)
	tokenA := signToken(t, claims, "key-a", first)
	claims.ID = "jti-jwks-b"
	tokenB := signToken(t, claims, "key-b", second)

	for i := range 2 {
		if _, err := cache.Verify(t.Context(), tokenA); err != nil {
			t.Fatalf("Verify() of the key-a token, call %d, error = %v", i+1, err)
		}
	}
	if got := counting.calls.Load(); got != 1 {
		t.Fatalf("full verifications = %d, want 1", got)
	}

	// The endpoint now publishes only key-b. The first token with kid
	// key-b makes the JWKS cache fetch the new set, which drops key-a.
	body.Store(jwksJSON(t, map[string]*rsa.PublicKey{"key-b": &second.PublicKey}))
	if _, err := cache.Verify(t.Context(), tokenB); err != nil {
		t.Fatalf("Verify() of the key-b token error = %v", err)
	}

	_, err = cache.Verify(t.Context(), tokenA)
	if !errors.Is(err, accesstoken.ErrInvalidToken) {
		t.Errorf("Verify() of the key-a token after key-a left the set error = %v, want ErrInvalidToken", err)
	}
	if got := cache.Len(); got != 1 {
		t.Errorf("Len() = %d, want 1 (only the key-b token)", got)
	}
}

// waitReady waits up to 10 seconds for the JWKS cache's first key set.
func waitReady(t *testing.T, keys *jwks.Cache) {
	t.Helper()
	for range 200 {
		if keys.Ready() {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatal("the JWKS cache loaded no key set within 10 seconds")
}

// jwksJSON encodes public keys as a JWKS document.
func jwksJSON(t *testing.T, keys map[string]*rsa.PublicKey) []byte {
	t.Helper()
	type jwk struct {
		KeyType   string `json:"kty"`
		KeyID     string `json:"kid"`
		Algorithm string `json:"alg"`
		Use       string `json:"use"`
		Modulus   string `json:"n"`
		Exponent  string `json:"e"`
	}
	var set struct {
		Keys []jwk `json:"keys"`
	}
	for kid, key := range keys {
		set.Keys = append(set.Keys, jwk{
			KeyType:   "RSA",
			KeyID:     kid,
			Algorithm: "RS256",
			Use:       "sig",
			Modulus:   base64.RawURLEncoding.EncodeToString(key.N.Bytes()),
			Exponent:  base64.RawURLEncoding.EncodeToString(big.NewInt(int64(key.E)).Bytes()),
		})
	}
	body, err := json.Marshal(set)
	if err != nil {
		t.Fatalf("encode JWKS: %v", err)
	}
	return body
}
