package keys

import (
	"context"
	"crypto/rsa"
	"net/http"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwk"

	"example.com/todoapp/proto/accesstoken"
)

// cachedKeySet is a verifier's copy of the JWKS, fetched through an HTTP
// cache that honours max-age, as the todo service would see it.
type cachedKeySet struct {
	keys map[string]*rsa.PublicKey
}

func (c *cachedKeySet) PublicKey(_ context.Context, kid string) (*rsa.PublicKey, error) {
	key, ok := c.keys[kid]
	if !ok {
		return nil, accesstoken.ErrUnknownKey
	}
	return key, nil
}

// simulationResult counts what happened in simulateRotation.
type simulationResult struct {
	verified, failed int
	activations      int
	deletions        int
}

// simulateRotation runs one replica and one verifier in steps of
// cfg.PollInterval/2 over duration. The verifier refetches the JWKS
// exactly every cfg.VerifierRefreshInterval (the latest it may), through
// a cache that serves a stored response until its max-age ends. Every
// step signs a token and verifies every token that has not expired.
func simulateRotation(t *testing.T, cfg Config, duration time.Duration) simulationResult {
	t.Helper()
	ctx := testContext(t)
	clock := newTestClock()
	cfg.Now = clock.Now

	m := newTestManager(t, openSQLite(t), testKEK(), DefaultConfig(), nil)
	m.cfg = cfg // may be unsafe on purpose, so NewManager would reject it
	if _, err := m.refresh(ctx); err != nil {
		t.Fatalf("refresh() = %v", err)
	}

	verifierKeys := &cachedKeySet{}
	verifier, err := accesstoken.NewVerifier(accesstoken.VerifierConfig{
		Issuer:      "http://127.0.0.1:8081",
		Audiences:   []string{"todo-service"},
		ClockSkew:   cfg.VerifierClockSkew,
		MaxLifetime: cfg.MaxTokenLifetime,
		Now:         clock.Now,
		Keys:        verifierKeys,
	})
	if err != nil {
		t.Fatalf("NewVerifier() = %v", err)
	}

	var cacheBody []byte
	var cacheStored time.Time
	var cacheMaxAge time.Duration
	var verifierFetched time.Time
	fetch := func(now time.Time) {
		if cacheBody == nil || now.Sub(cacheStored) >= cacheMaxAge {
			resp := getJWKS(t, m)
			if resp.status != http.StatusOK {
				t.Fatalf("GET JWKS at %v status = %d", now, resp.status)
			}
			cacheBody, cacheStored = resp.body, now
			cacheMaxAge = time.Duration(resp.maxAge(t)) * time.Second
		}
		set, err := jwk.Parse(cacheBody)
		if err != nil {
			t.Fatalf("jwk.Parse() = %v", err)
		}
		keys := map[string]*rsa.PublicKey{}
		for i := range set.Len() {
			key, _ := set.Key(i)
			var public rsa.PublicKey
			if err := key.Raw(&public); err != nil {
				t.Fatalf("JWK Raw() = %v", err)
			}
			keys[key.KeyID()] = &public
		}
		verifierKeys.keys = keys
		verifierFetched = now
	}

	type issued struct {
		token  string
		expiry time.Time
	}
	var tokens []issued
	var result simulationResult
	step := cfg.PollInterval / 2
	start := clock.Now()
	fetch(start)
	lastPoll := start

	for now := start; now.Sub(start) < duration; now = now.Add(step) {
		clock.Set(now)
		if now.Sub(lastPoll) >= cfg.PollInterval {
			done, err := m.refresh(ctx)
			if err != nil {
				t.Fatalf("refresh() at %v = %v", now.Sub(start), err)
			}
			for _, tr := range done {
				switch tr.Kind {
				case transitionActivate:
					result.activations++
				case transitionDelete:
					result.deletions++
				}
			}
			lastPoll = now
		}
		if now.Sub(verifierFetched) >= cfg.VerifierRefreshInterval {
			fetch(now)
		}

		// exp is whole seconds, so a token expires at the second its
		// lifetime ends in, plus the skew. Tokens within a second of that
		// are left out, because only unknown-key failures matter here.
		token := signTestTokenFor(t, m, now, cfg.MaxTokenLifetime)
		tokens = append(tokens, issued{token, now.Add(cfg.MaxTokenLifetime).Truncate(time.Second)})

		live := tokens[:0]
		for _, tok := range tokens {
			if !now.Add(time.Second).Before(tok.expiry.Add(cfg.VerifierClockSkew)) {
				continue
			}
			live = append(live, tok)
			if _, err := verifier.Verify(ctx, tok.token); err != nil {
				result.failed++
				t.Logf("at %v: Verify(token expiring at %v) = %v", now.Sub(start), tok.expiry.Sub(start), err)
			} else {
				result.verified++
			}
		}
		tokens = live
	}
	return result
}

func signTestTokenFor(tb testing.TB, m *Manager, now time.Time, lifetime time.Duration) string {
	tb.Helper()
	key, err := m.SigningKey(testContext(tb))
	if err != nil {
		tb.Fatalf("SigningKey() = %v", err)
	}
	token, err := accesstoken.Sign(accesstoken.Claims{
		Issuer:    "http://127.0.0.1:8081",
		Subject:   "5f0c4b8e-8a5e-4c1e-9d3a-2b7f6e1d4c3a",
		Audience:  []string{"todo-service"},
		Expiry:    now.Add(lifetime),
		IssuedAt:  now,
		NotBefore: now,
		ID:        newKeyID(),
		SessionID: "0b6f1f4e-2c1d-4c8a-9e3b-7a5d6c4b3a29",
	}, key)
	if err != nil {
		tb.Fatalf("Sign() = %v", err)
	}
	return token
}

// fastRotationConfig rotates every 10 seconds with the minimum safe lead
// and retired lifetime.
func fastRotationConfig() Config {
	cfg := DefaultConfig()
	cfg.PollInterval = 500 * time.Millisecond
	cfg.JWKSMaxAge = 2 * time.Second
	cfg.VerifierRefreshInterval = 3 * time.Second
	cfg.VerifierClockSkew = 2 * time.Second
	cfg.MaxTokenLifetime = 5 * time.Second
	cfg.PublishLead = cfg.MinPublishLead()
	cfg.RetiredLifetime = cfg.MinRetiredLifetime()
	cfg.RotationPeriod = 10 * time.Second
	return cfg
}

func TestRotationVerifiersNeverFail(t *testing.T) {
	cfg := fastRotationConfig()
	if err := cfg.Validate(); err != nil {
		t.Fatalf("Validate() = %v", err)
	}

	got := simulateRotation(t, cfg, 60*time.Second)
	if got.failed != 0 {
		t.Errorf("failed verifications = %d of %d, want 0", got.failed, got.failed+got.verified)
	}
	if got.activations < 4 {
		t.Errorf("activations in 60s = %d, want at least 4", got.activations)
	}
	if got.deletions < 3 {
		t.Errorf("deletions in 60s = %d, want at least 3", got.deletions)
	}
}

func TestRotationUnsafeSettingsFail(t *testing.T) {
	// Each setting fails Validate, and the simulation shows why: a
	// verifier meets a key it has not fetched, or one already deleted.
	tests := []struct {
		name   string
		change func(*Config)
	}{
		{"publish lead too short", func(c *Config) { c.PublishLead = c.PollInterval }},
		{"retired lifetime too short", func(c *Config) { c.RetiredLifetime = c.MaxTokenLifetime / 2 }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := fastRotationConfig()
			tt.change(&cfg)
			if err := cfg.Validate(); err == nil {
				t.Fatal("Validate() = nil, want an error")
			}

			got := simulateRotation(t, cfg, 60*time.Second)
			if got.failed == 0 {
				t.Errorf("failed verifications = 0 of %d, want some", got.verified)
			}
		})
	}
}
