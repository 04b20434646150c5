package tokencache

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"example.com/todoapp/proto/accesstoken"
)

func TestVerifyHitReturnsSameClaims(t *testing.T) {
	f := newFixture(t, 0)
	token := validToken(t, "jti-hit")

	first, err := f.cache.Verify(t.Context(), token)
	if err != nil {
		t.Fatalf("first Verify() error = %v", err)
	}
	second, err := f.cache.Verify(t.Context(), token)
	if err != nil {
		t.Fatalf("second Verify() error = %v", err)
	}

	if diff := cmp.Diff(first, second); diff != "" {
		t.Errorf("claims of the hit differ from the first verification (-first +second):\n%s", diff)
	}
	if want := claimsFor("jti-hit", 15*time.Minute); !first.Expiry.Equal(want.Expiry) || first.ID != want.ID {
		t.Errorf("Verify() = exp %v, jti %q; want exp %v, jti %q", first.Expiry, first.ID, want.Expiry, want.ID)
	}
	if got := f.verifier.calls.Load(); got != 1 {
		t.Errorf("full verifications = %d, want 1", got)
	}
	if got := f.cache.Len(); got != 1 {
		t.Errorf("Len() = %d, want 1", got)
	}
}

func TestVerifyHitReturnsCopy(t *testing.T) {
	f := newFixture(t, 0)
	token := validToken(t, "jti-copy")

	first, err := f.cache.Verify(t.Context(), token)
	if err != nil {
		t.Fatalf("first Verify() error = %v", err)
	}
	first.Subject = "changed by the caller"
	first.Audience[0] = "changed by the caller"

	second, err := f.cache.Verify(t.Context(), token)
	if err != nil {
		t.Fatalf("second Verify() error = %v", err)
	}
	second.Audience[0] = "changed again"

	third, err := f.cache.Verify(t.Context(), token)
	if err != nil {
		t.Fatalf("third Verify() error = %v", err)
	}
	want := claimsFor("jti-copy", 15*time.Minute)
	if third.Subject != want.Subject {
		t.Errorf("Verify() subject = %q, want %q", third.Subject, want.Subject)
	}
	if diff := cmp.Diff(want.Audience, third.Audience); diff != "" {
		t.Errorf("Verify() audience mismatch (-want +got):\n%s", diff)
	}
}

func TestVerifyExpiredEntryNotServed(t *testing.T) {
	f := newFixture(t, 0)
	token := validToken(t, "jti-expiry")

	if _, err := f.cache.Verify(t.Context(), token); err != nil {
		t.Fatalf("Verify() before exp error = %v", err)
	}

	// At exp the verifier still accepts the token within its clock skew,
	// but the cache must not serve it and must not store it again.
	f.clock.Advance(15 * time.Minute)
	if _, err := f.cache.Verify(t.Context(), token); err != nil {
		t.Fatalf("Verify() at exp, within the clock skew, error = %v", err)
	}
	if got := f.verifier.calls.Load(); got != 2 {
		t.Errorf("full verifications after exp = %d, want 2", got)
	}
	if got := f.cache.Len(); got != 0 {
		t.Errorf("Len() after exp = %d, want 0", got)
	}

	f.clock.Advance(time.Minute)
	_, err := f.cache.Verify(t.Context(), token)
	if !errors.Is(err, accesstoken.ErrInvalidToken) {
		t.Errorf("Verify() after exp and skew error = %v, want ErrInvalidToken", err)
	}
}

func TestVerifyKeyRemovedDropsEntry(t *testing.T) {
	f := newFixture(t, 0)
	token := validToken(t, "jti-removed")

	if _, err := f.cache.Verify(t.Context(), token); err != nil {
		t.Fatalf("Verify() error = %v", err)
	}
	f.keys.delete(testKid)

	_, err := f.cache.Verify(t.Context(), token)
	if !errors.Is(err, accesstoken.ErrInvalidToken) {
		t.Errorf("Verify() after the key left the set error = %v, want ErrInvalidToken", err)
	}
	if got := f.cache.Len(); got != 0 {
		t.Errorf("Len() = %d, want 0", got)
	}
	if got := f.verifier.calls.Load(); got != 2 {
		t.Errorf("full verifications = %d, want 2", got)
	}
}

func TestVerifyKeyReplacedDropsEntry(t *testing.T) {
	f := newFixture(t, 0)
	token := validToken(t, "jti-replaced")

	if _, err := f.cache.Verify(t.Context(), token); err != nil {
		t.Fatalf("Verify() error = %v", err)
	}
	_, other := testKeys(t)
	f.keys.set(testKid, &other.PublicKey)

	_, err := f.cache.Verify(t.Context(), token)
	if !errors.Is(err, accesstoken.ErrInvalidToken) {
		t.Errorf("Verify() after the kid got another key error = %v, want ErrInvalidToken", err)
	}
	if got := f.cache.Len(); got != 0 {
		t.Errorf("Len() = %d, want 0", got)
	}
}

func TestVerifyEqualKeyKeepsEntry(t *testing.T) {
	f := newFixture(t, 0)
	token := validToken(t, "jti-refetched")

	if _, err := f.cache.Verify(t.Context(), token); err != nil {
		t.Fatalf("Verify() error = %v", err)
	}

	// A JWKS refetch parses the same key into a new value.
	signing, _ := testKeys(t)
	copied := signing.PublicKey
	f.keys.set(testKid, &copied)

	if _, err := f.cache.Verify(t.Context(), token); err != nil {
		t.Fatalf("Verify() after the refetch error = %v", err)
	}
	if got := f.verifier.calls.Load(); got != 1 {
		t.Errorf("full verifications = %d, want 1", got)
	}
}

func TestVerifyKeysUnavailableNotServed(t *testing.T) {
	f := newFixture(t, 0)
	token := validToken(t, "jti-unavailable")

	if _, err := f.cache.Verify(t.Context(), token); err != nil {
		t.Fatalf("Verify() error = %v", err)
	}
	f.keys.setError(fmt.Errorf("%w: key set is too stale", accesstoken.ErrKeysUnavailable))

	_, err := f.cache.Verify(t.Context(), token)
	if !errors.Is(err, accesstoken.ErrKeysUnavailable) {
		t.Errorf("Verify() with a stale key set error = %v, want ErrKeysUnavailable", err)
	}
	if errors.Is(err, accesstoken.ErrInvalidToken) {
		t.Errorf("Verify() with a stale key set error = %v, must not wrap ErrInvalidToken", err)
	}
	if got := f.cache.Len(); got != 0 {
		t.Errorf("Len() = %d, want 0", got)
	}
}

func TestVerifyFailuresNotCached(t *testing.T) {
	signing, other := testKeys(t)
	wrongAudience := claimsFor("jti-audience", 15*time.Minute)
	wrongAudience.Audience = []string{"billing-service"}

	tests := []struct {
		name    string
		token   func(t *testing.T) string
		keysErr error
		want    error
	}{
		{
			name:  "bad signature",
			token: func(t *testing.T) string { return signToken(t, claimsFor("jti-sig", 15*time.Minute), testKid, other) },
			want:  accesstoken.ErrInvalidToken,
		},
		{
			name:  "wrong audience",
			token: func(t *testing.T) string { return signToken(t, wrongAudience, testKid, signing) },
			want:  accesstoken.ErrInvalidToken,
		},
		{
			name: "unknown kid",
			token: func(t *testing.T) string {
				return signToken(t, claimsFor("jti-kid", 15*time.Minute), "key-two", signing)
			},
			want: accesstoken.ErrInvalidToken,
		},
		{
			name:  "malformed",
			token: func(*testing.T) string { return "not.a.token" },
			want:  accesstoken.ErrInvalidToken,
		},
		{
			name:    "keys unavailable",
			token:   func(t *testing.T) string { return validToken(t, "jti-keys") },
			keysErr: fmt.Errorf("%w: no key set loaded yet", accesstoken.ErrKeysUnavailable),
			want:    accesstoken.ErrKeysUnavailable,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, 0)
			token := tt.token(t)
			if tt.keysErr != nil {
				f.keys.setError(tt.keysErr)
			}

			for i := range 2 {
				claims, err := f.cache.Verify(t.Context(), token)
				if !errors.Is(err, tt.want) {
					t.Errorf("Verify() call %d error = %v, want %v", i+1, err, tt.want)
				}
				if claims != nil {
					t.Errorf("Verify() call %d claims = %+v, want nil", i+1, claims)
				}
			}
			if got := f.verifier.calls.Load(); got != 2 {
				t.Errorf("full verifications = %d, want 2", got)
			}
			if got := f.cache.Len(); got != 0 {
				t.Errorf("Len() = %d, want 0", got)
			}
		})
	}
}

func TestVerifyUnavailableThenRecovered(t *testing.T) {
	f := newFixture(t, 0)
	token := validToken(t, "jti-recovered")
	f.keys.setError(fmt.Errorf("%w: no key set loaded yet", accesstoken.ErrKeysUnavailable))

	if _, err := f.cache.Verify(t.Context(), token); !errors.Is(err, accesstoken.ErrKeysUnavailable) {
		t.Fatalf("Verify() without keys error = %v, want ErrKeysUnavailable", err)
	}
	f.keys.setError(nil)

	if _, err := f.cache.Verify(t.Context(), token); err != nil {
		t.Fatalf("Verify() after the keys loaded error = %v", err)
	}
	if got := f.cache.Len(); got != 1 {
		t.Errorf("Len() = %d, want 1", got)
	}
}

func TestSizeBoundHolds(t *testing.T) {
	const (
		maxEntries = 50
		tokens     = 300
	)
	f := newFixture(t, maxEntries)
	reg := prometheus.NewRegistry()
	if err := f.cache.metrics.register(reg); err != nil {
		t.Fatalf("register metrics: %v", err)
	}

	var last string
	for i := range tokens {
		last = validToken(t, fmt.Sprintf("jti-bound-%d", i))
		if _, err := f.cache.Verify(t.Context(), last); err != nil {
			t.Fatalf("Verify() of token %d error = %v", i, err)
		}
		if got := f.cache.Len(); got > maxEntries {
			t.Fatalf("Len() after %d tokens = %d, want at most %d", i+1, got, maxEntries)
		}
	}

	stored := float64(f.cache.Len())
	evicted := testutil.ToFloat64(f.cache.metrics.evictions.WithLabelValues(reasonCapacity))
	if stored+evicted != tokens {
		t.Errorf("entries %v + capacity evictions %v = %v, want %d", stored, evicted, stored+evicted, tokens)
	}

	// The newest token is the most recently used entry of its shard.
	calls := f.verifier.calls.Load()
	if _, err := f.cache.Verify(t.Context(), last); err != nil {
		t.Fatalf("Verify() of the newest token error = %v", err)
	}
	if got := f.verifier.calls.Load(); got != calls {
		t.Errorf("full verifications after the newest token = %d, want %d (a hit)", got, calls)
	}
}

func TestLeastRecentlyUsedEvictedFirst(t *testing.T) {
	f := newFixture(t, 1)
	first := validToken(t, "jti-lru-1")
	second := validToken(t, "jti-lru-2")

	for _, token := range []string{first, second, second} {
		if _, err := f.cache.Verify(t.Context(), token); err != nil {
			t.Fatalf("Verify() error = %v", err)
		}
	}
	if got := f.verifier.calls.Load(); got != 2 {
		t.Errorf("full verifications = %d, want 2", got)
	}

	if _, err := f.cache.Verify(t.Context(), first); err != nil {
		t.Fatalf("Verify() error = %v", err)
	}
	if got := f.verifier.calls.Load(); got != 3 {
		t.Errorf("full verifications after the evicted token = %d, want 3", got)
	}
	if got := f.cache.Len(); got != 1 {
		t.Errorf("Len() = %d, want 1", got)
	}
}

func TestNewShardsCapacity(t *testing.T) {
	for _, maxEntries := range []int{1, 2, 3, 31, 32, 33, 50, 1000, DefaultMaxEntries} {
		t.Run(fmt.Sprint(maxEntries), func(t *testing.T) {
			shards := newShards(maxEntries)

			n := len(shards)
			if n < 1 || n > maxShards || n&(n-1) != 0 {
				t.Errorf("newShards(%d) made %d shards, want a power of two from 1 to %d", maxEntries, n, maxShards)
			}
			total := 0
			for i := range shards {
				capacity := shards[i].capacity
				if capacity < 1 {
					t.Errorf("shard %d capacity = %d, want at least 1", i, capacity)
				}
				total += capacity
			}
			if total != maxEntries {
				t.Errorf("sum of shard capacities = %d, want %d", total, maxEntries)
			}
		})
	}
}

func TestConcurrentVerify(t *testing.T) {
	const (
		workers    = 8
		iterations = 60
		tokens     = 24
		maxEntries = 8
	)
	f := newFixture(t, maxEntries)
	signing, _ := testKeys(t)

	pool := make([]string, tokens)
	for i := range pool {
		pool[i] = validToken(t, fmt.Sprintf("jti-concurrent-%d", i))
	}

	var wg sync.WaitGroup
	errs := make(chan error, workers*iterations)
	for w := range workers {
		wg.Go(func() {
			for i := range iterations {
				n := (w*7 + i) % tokens
				claims, err := f.cache.Verify(t.Context(), pool[n])
				switch {
				case errors.Is(err, accesstoken.ErrInvalidToken):
					// The key may be out of the set right now.
				case err != nil:
					errs <- fmt.Errorf("Verify() of token %d error = %v", n, err)
				case claims.ID != fmt.Sprintf("jti-concurrent-%d", n):
					errs <- fmt.Errorf("Verify() of token %d returned jti %q", n, claims.ID)
				}
			}
		})
	}
	wg.Go(func() {
		for range 5 {
			f.keys.delete(testKid)
			f.keys.set(testKid, &signing.PublicKey)
		}
	})
	wg.Wait()
	close(errs)

	for err := range errs {
		t.Error(err)
	}
	if got := f.cache.Len(); got > maxEntries {
		t.Errorf("Len() = %d, want at most %d", got, maxEntries)
	}

	// With the key back in the set every token verifies again.
	for n, token := range pool {
		if _, err := f.cache.Verify(t.Context(), token); err != nil {
			t.Errorf("Verify() of token %d after the run error = %v", n, err)
		}
	}
}

func TestMetricsCount(t *testing.T) {
	f := newFixture(t, 0)
	reg := prometheus.NewRegistry()
	if err := f.cache.metrics.register(reg); err != nil {
		t.Fatalf("register metrics: %v", err)
	}
	token := validToken(t, "jti-metrics")
	other := validToken(t, "jti-metrics-other")

	for _, tok := range []string{token, token, token, other} {
		if _, err := f.cache.Verify(t.Context(), tok); err != nil {
			t.Fatalf("Verify() error = %v", err)
		}
	}
	f.keys.delete(testKid)
	if _, err := f.cache.Verify(t.Context(), token); err == nil {
		t.Fatal("Verify() after the key left the set succeeded")
	}
	signing, _ := testKeys(t)
	f.keys.set(testKid, &signing.PublicKey)
	f.clock.Advance(15 * time.Minute)
	_, _ = f.cache.Verify(t.Context(), other)

	want := `
# HELP todo_token_cache_entries Tokens held in the verified-token cache.
# TYPE todo_token_cache_entries gauge
todo_token_cache_entries 0
# HELP todo_token_cache_evictions_total Entries dropped from the verified-token cache, by reason: capacity, expired, key_changed.
# TYPE todo_token_cache_evictions_total counter
todo_token_cache_evictions_total{reason="capacity"} 0
todo_token_cache_evictions_total{reason="expired"} 1
todo_token_cache_evictions_total{reason="key_changed"} 1
# HELP todo_token_cache_hits_total Token verifications served from the verified-token cache.
# TYPE todo_token_cache_hits_total counter
todo_token_cache_hits_total 2
# HELP todo_token_cache_misses_total Token verifications passed to the full verifier, whatever their result.
# TYPE todo_token_cache_misses_total counter
todo_token_cache_misses_total 4
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want)); err != nil {
		t.Error(err)
	}
}

func TestNewRejectsInvalidArguments(t *testing.T) {
	signing, _ := testKeys(t)
	keys := newMemoryResolver(testKid, &signing.PublicKey)
	full, err := accesstoken.NewVerifier(accesstoken.VerifierConfig{
		Issuer: testIssuer, Audiences: []string{testAudience}, Keys: keys,
	})
	if err != nil {
		t.Fatalf("NewVerifier() error = %v", err)
	}

	tests := []struct {
		name string
		next TokenVerifier
		keys accesstoken.KeyResolver
		cfg  Config
	}{
		{name: "nil verifier", keys: keys},
		{name: "nil resolver", next: full},
		{name: "negative max entries", next: full, keys: keys, cfg: Config{MaxEntries: -1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if c, err := New(tt.next, tt.keys, tt.cfg, nil); err == nil {
				t.Errorf("New() = %v, want an error", c)
			}
		})
	}
}

func TestNewRegistersMetricsOnce(t *testing.T) {
	f := newFixture(t, 0)
	reg := prometheus.NewRegistry()

	if _, err := New(f.verifier, f.keys, Config{}, reg); err != nil {
		t.Fatalf("first New() error = %v", err)
	}
	if _, err := New(f.verifier, f.keys, Config{}, reg); err == nil {
		t.Error("second New() with the same registry succeeded, want a duplicate registration error")
	}
}

func TestNewDefaults(t *testing.T) {
	f := newFixture(t, 0)
	c, err := New(f.verifier, f.keys, Config{}, nil)
	if err != nil {
		t.Fatalf("New() error = %v", err)
	}

	total := 0
	for i := range c.shards {
		total += c.shards[i].capacity
	}
	if total != DefaultMaxEntries {
		t.Errorf("capacity with a zero MaxEntries = %d, want %d", total, DefaultMaxEntries)
	}
	if c.now == nil {
		t.Error("Now is nil with a zero Config, want time.Now")
	}
}
