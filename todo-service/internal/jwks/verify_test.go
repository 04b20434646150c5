package jwks

import (
	"crypto/rsa"
	"errors"
	"net/http"
	"testing"
	"time"

	"example.com/todoapp/proto/accesstoken"
)

// TestVerifierWithCache runs accesstoken.Verifier on top of the cache, as
// the todo service does, through a key removal and the stale age.
func TestVerifierWithCache(t *testing.T) {
	env := newTestEnv(t, nil)
	verifier, err := accesstoken.NewVerifier(accesstoken.VerifierConfig{
		Issuer:    "http://127.0.0.1:8081",
		Audiences: []string{"todo-service"},
		Now:       env.clock.Now,
		Keys:      env.cache,
	})
	if err != nil {
		t.Fatalf("NewVerifier() error = %v", err)
	}
	sign := func(kid string, key func() *rsa.PrivateKey) string {
		t.Helper()
		now := env.clock.Now()
		token, err := accesstoken.Sign(accesstoken.Claims{
			Issuer:    "http://127.0.0.1:8081",
			Subject:   "0b7e4c1e-8f4a-4d2b-9c1e-2f3a4b5c6d7e",
			Audience:  []string{"todo-service"},
			IssuedAt:  now,
			NotBefore: now,
			Expiry:    now.Add(15 * time.Minute),
			ID:        "token-1",
			SessionID: "session-1",
			Email:     "user@example.com",
		}, accesstoken.SigningKey{ID: kid, Key: key()})
		if err != nil {
			t.Fatalf("Sign(kid %q) error = %v", kid, err)
		}
		return token
	}
	tokenA := sign("key-a", keyA)
	tokenB := sign("key-b", keyB)

	if _, err := verifier.Verify(t.Context(), tokenA); !errors.Is(err, accesstoken.ErrKeysUnavailable) {
		t.Errorf("Verify before the first fetch error = %v, want ErrKeysUnavailable", err)
	}

	env.server.serveBody("", jwksBody(t, publicJWK("key-a", keyA())))
	env.start(t)
	if _, err := verifier.Verify(t.Context(), tokenA); err != nil {
		t.Errorf("Verify(token of a published key) error = %v, want nil", err)
	}
	if _, err := verifier.Verify(t.Context(), tokenB); !errors.Is(err, accesstoken.ErrInvalidToken) ||
		!errors.Is(err, accesstoken.ErrUnknownKey) {
		t.Errorf("Verify(token of an unpublished key) error = %v, want ErrInvalidToken wrapping ErrUnknownKey", err)
	}

	// Rotation: key b is published and key a removed.
	env.server.serveBody("", jwksBody(t, publicJWK("key-b", keyB())))
	env.timer.fire(t)
	if _, err := verifier.Verify(t.Context(), tokenB); err != nil {
		t.Errorf("Verify(token of the new key) error = %v, want nil", err)
	}
	if _, err := verifier.Verify(t.Context(), tokenA); !errors.Is(err, accesstoken.ErrUnknownKey) {
		t.Errorf("Verify(token of the removed key) error = %v, want ErrUnknownKey", err)
	}

	// The endpoint fails from now on, and the set ages past the max stale
	// age.
	env.server.serve(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "down", http.StatusServiceUnavailable)
	})
	env.clock.Advance(24*time.Hour + time.Second)
	if _, err := verifier.Verify(t.Context(), tokenB); !errors.Is(err, accesstoken.ErrKeysUnavailable) {
		t.Errorf("Verify with a stale key set error = %v, want ErrKeysUnavailable", err)
	}
}
