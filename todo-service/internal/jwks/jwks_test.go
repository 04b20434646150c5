package jwks

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"example.com/todoapp/proto/accesstoken"
)

func TestCacheBeforeStartHasNoKeys(t *testing.T) {
	env := newTestEnv(t, nil)

	env.mustFail(t, "a", accesstoken.ErrKeysUnavailable)
	if env.cache.Ready() {
		t.Errorf("Ready() = true before Start, want false")
	}
	env.wantFetches(t, 0)
	if got := env.metricValue(t, "todo_jwks_key_set_age_seconds", ""); !math.IsNaN(got) {
		t.Errorf("key set age = %v before any key set, want NaN", got)
	}
}

func TestCacheStartLoadsKeySet(t *testing.T) {
	env := newTestEnv(t, nil)
	env.server.serveBody("", jwksBody(t, publicJWK("a", keyA()), publicJWK("b", keyB())))

	env.start(t)

	env.mustPublicKey(t, "a", keyA())
	env.mustPublicKey(t, "b", keyB())
	if !env.cache.Ready() {
		t.Errorf("Ready() = false after a successful fetch, want true")
	}
	env.wantFetches(t, 1)
	if got := env.metricValue(t, "todo_jwks_fetches_total", outcomeOK); got != 1 {
		t.Errorf("fetches{outcome=ok} = %v, want 1", got)
	}
	if got := env.metricValue(t, "todo_jwks_keys", ""); got != 2 {
		t.Errorf("keys gauge = %v, want 2", got)
	}
	if got := env.metricValue(t, "todo_jwks_key_set_ready", ""); got != 1 {
		t.Errorf("ready gauge = %v, want 1", got)
	}
}

func TestCacheStartReturnsWhileServerHangs(t *testing.T) {
	env := newTestEnv(t, nil)
	env.server.serveHang(t)

	started := make(chan struct{})
	go func() {
		env.cache.Start(t.Context())
		close(started)
	}()
	select {
	case <-started:
	case <-time.After(watchdog):
		t.Fatalf("Start did not return within %s while the JWKS endpoint hangs", watchdog)
	}

	env.mustFail(t, "a", accesstoken.ErrKeysUnavailable)
	if env.cache.Ready() {
		t.Errorf("Ready() = true while the first fetch hangs, want false")
	}
	// Close cancels the hanging fetch; goleak in TestMain checks that
	// nothing is left behind.
	env.cache.Close()
}

func TestCacheStartLoadsPersistedSetWhenServerDown(t *testing.T) {
	tests := []struct {
		name     string
		outcome  string
		requests int64
		refuse   bool
		hang     bool
	}{
		{name: "status 503", outcome: outcomeStatus, requests: 1},
		{name: "connection refused", outcome: outcomeNetworkError, requests: 0, refuse: true},
		{name: "hanging", outcome: outcomeTimeout, requests: 1, hang: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var refuse atomic.Bool
			refuse.Store(tt.refuse)
			env := newTestEnv(t, func(cfg *Config) {
				if tt.refuse {
					cfg.HTTPClient = refusableClient(t, &refuse)
				}
				if tt.hang {
					cfg.FetchTimeout = 100 * time.Millisecond
				}
			})
			if tt.hang {
				env.server.serveHang(t)
			} else {
				env.server.serve(func(w http.ResponseWriter, r *http.Request) {
					http.Error(w, "down", http.StatusServiceUnavailable)
				})
			}
			env.persister.body = jwksBody(t, publicJWK("a", keyA()))
			env.persister.fetchedAt = env.clock.Now().Add(-time.Hour)

			// The persisted set is usable as soon as Start returns, while
			// the first fetch may still be in flight.
			env.cache.Start(t.Context())
			env.mustPublicKey(t, "a", keyA())
			if !env.cache.Ready() {
				t.Errorf("Ready() = false with a persisted set one hour old, want true")
			}

			env.timer.nextDelay(t)
			if got := env.metricValue(t, "todo_jwks_fetches_total", tt.outcome); got != 1 {
				t.Errorf("fetches{outcome=%s} = %v, want 1", tt.outcome, got)
			}
			env.wantFetches(t, tt.requests)
			env.mustPublicKey(t, "a", keyA())
			if got := env.metricValue(t, "todo_jwks_key_set_age_seconds", ""); got != time.Hour.Seconds() {
				t.Errorf("key set age = %vs, want %vs counted from the persisted fetch time", got, time.Hour.Seconds())
			}

			// The stale age counts from the persisted fetch time, not from
			// Start.
			env.clock.Advance(24*time.Hour - time.Hour)
			env.mustPublicKey(t, "a", keyA())
			env.clock.Advance(time.Second)
			env.mustFail(t, "a", accesstoken.ErrKeysUnavailable)
			if env.cache.Ready() {
				t.Errorf("Ready() = true with a persisted set older than the max stale age, want false")
			}
		})
	}
}

func TestCacheIgnoresInvalidPersistedSet(t *testing.T) {
	tests := []struct {
		name string
		body []byte
	}{
		{"not json", []byte("<html>oops</html>")},
		{"empty set", []byte(`{"keys":[]}`)},
		{"weak key", jwksBody(t, publicJWK("a", weakKey()))},
		{"private members", jwksBody(t, privateJWK("a", keyA()))},
		{"missing alg", jwksBody(t, with(publicJWK("a", keyA()), map[string]any{"alg": nil}))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := newTestEnv(t, nil)
			env.server.serve(func(w http.ResponseWriter, r *http.Request) {
				http.Error(w, "down", http.StatusServiceUnavailable)
			})
			env.persister.body = tt.body
			env.persister.fetchedAt = env.clock.Now()

			env.start(t)

			env.mustFail(t, "a", accesstoken.ErrKeysUnavailable)
			if got := env.metricValue(t, "todo_jwks_persist_errors_total", "load"); got != 1 {
				t.Errorf("persist errors{operation=load} = %v, want 1", got)
			}
		})
	}
}

func TestCachePersistLoadErrorIsNotFatal(t *testing.T) {
	env := newTestEnv(t, nil)
	env.persister.loadErr = errors.New("database is locked")
	env.server.serveBody("", jwksBody(t, publicJWK("a", keyA())))

	env.start(t)

	env.mustPublicKey(t, "a", keyA())
	if got := env.metricValue(t, "todo_jwks_persist_errors_total", "load"); got != 1 {
		t.Errorf("persist errors{operation=load} = %v, want 1", got)
	}
}

func TestCacheSavesEachFetchedSet(t *testing.T) {
	env := newTestEnv(t, nil)
	// The second key has private members: the cache must ignore it and
	// must not write its private part to the database.
	env.server.serveBody("", jwksBody(t, publicJWK("a", keyA()), privateJWK("b", keyB())))

	env.start(t)

	body, fetchedAt, saves := env.persister.saved()
	if saves != 1 {
		t.Fatalf("SaveKeySet calls = %d after one fetch, want 1", saves)
	}
	if !fetchedAt.Equal(env.clock.Now()) {
		t.Errorf("saved fetchedAt = %v, want the fetch time %v", fetchedAt, env.clock.Now())
	}
	for _, member := range []string{`"d"`, `"p"`, `"q"`, `"dp"`, `"dq"`, `"qi"`} {
		if bytes.Contains(body, []byte(member)) {
			t.Errorf("saved body contains the private member %s: %s", member, body)
		}
	}
	parsed, err := parseKeySet(body)
	if err != nil {
		t.Fatalf("parseKeySet(saved body) error = %v", err)
	}
	if len(parsed.keys) != 1 || !parsed.keys["a"].Equal(&keyA().PublicKey) {
		t.Errorf("saved body has keys %v, want only kid a with its public key", (&keySet{keys: parsed.keys}).keyIDs())
	}

	// Every later success saves again with its own fetch time.
	env.clock.Advance(10 * time.Minute)
	env.timer.fire(t)
	_, fetchedAt, saves = env.persister.saved()
	if saves != 2 || !fetchedAt.Equal(env.clock.Now()) {
		t.Errorf("after the second fetch: saves = %d, fetchedAt = %v; want 2, %v", saves, fetchedAt, env.clock.Now())
	}
}

func TestCacheNeverLogsPrivateMembers(t *testing.T) {
	env := newTestEnv(t, nil)
	private := privateJWK("leaked", keyB())
	env.server.serveBody("", jwksBody(t, publicJWK("a", keyA()), private))

	env.start(t)
	env.mustFail(t, "leaked", accesstoken.ErrUnknownKey)

	logs := env.logs.String()
	if !strings.Contains(logs, `kid \"leaked\": key has the private member`) {
		t.Errorf("logs do not report the key with private members:\n%s", logs)
	}
	for _, member := range []string{"d", "p", "q", "dp", "dq", "qi"} {
		if value := private[member].(string); strings.Contains(logs, value[:32]) {
			t.Errorf("logs contain the private member %q of a published key", member)
		}
	}
}

func TestCacheLogsRejectedKeysBriefly(t *testing.T) {
	env := newTestEnv(t, nil)
	keys := []map[string]any{publicJWK("a", keyA())}
	for i := range 20 {
		keys = append(keys, with(publicJWK(fmt.Sprintf("bad-%d", i), keyB()),
			map[string]any{"kty": strings.Repeat("X", 50_000)}))
	}
	env.server.serveBody("", jwksBody(t, keys...))

	env.start(t)

	env.mustPublicKey(t, "a", keyA())
	if got := env.metricValue(t, "todo_jwks_keys_rejected_total", reasonMalformed); got != 20 {
		t.Errorf("keys rejected{reason=malformed} = %v, want 20", got)
	}
	logs := env.logs.String()
	if !strings.Contains(logs, "count=20") {
		t.Errorf("logs lack the count of 20 rejected keys:\n%.2000s", logs)
	}
	if len(logs) > 10_000 {
		t.Errorf("logs have %d bytes for one fetch, want at most 10000 with 10 entries of 200 bytes listed", len(logs))
	}
}

func TestCacheSaveErrorKeepsSet(t *testing.T) {
	env := newTestEnv(t, nil)
	env.persister.saveErr = errors.New("disk full")
	env.server.serveBody("", jwksBody(t, publicJWK("a", keyA())))

	env.start(t)

	env.mustPublicKey(t, "a", keyA())
	if got := env.metricValue(t, "todo_jwks_persist_errors_total", "save"); got != 1 {
		t.Errorf("persist errors{operation=save} = %v, want 1", got)
	}
}

func TestCacheRestartUsesSavedSet(t *testing.T) {
	env := newTestEnv(t, nil)
	env.server.serveBody("", jwksBody(t, publicJWK("a", keyA())))
	env.start(t)
	env.cache.Close()

	// A second cache shares the persister; its endpoint refuses every
	// request, as an auth service that is down.
	env.server.serve(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "down", http.StatusBadGateway)
	})
	restarted, err := New(testConfig(env.server.URL(), env.clock), env.persister, nil, prometheus.NewRegistry())
	if err != nil {
		t.Fatalf("New() error = %v", err)
	}
	timer := newFakeTimer()
	restarted.wait = timer.wait
	t.Cleanup(restarted.Close)
	restarted.Start(t.Context())
	timer.nextDelay(t)

	got, err := restarted.PublicKey(t.Context(), "a")
	if err != nil || !got.Equal(&keyA().PublicKey) {
		t.Fatalf("restarted PublicKey(a) = %v, %v; want the saved key", got, err)
	}
	env.wantFetches(t, 2)
}

func TestCacheSuccessfulFetchReplacesSet(t *testing.T) {
	env := newTestEnv(t, nil)
	env.server.serveBody("", jwksBody(t, publicJWK("a", keyA()), publicJWK("b", keyB())))
	env.start(t)
	env.mustPublicKey(t, "b", keyB())

	// Key b is removed, key c is added.
	env.server.serveBody("", jwksBody(t, publicJWK("a", keyA()), publicJWK("c", keyC())))
	env.mustPublicKey(t, "b", keyB()) // no fetch yet: b still verifies
	env.wantFetches(t, 1)

	env.clock.Advance(10 * time.Minute)
	env.timer.fire(t)

	env.wantFetches(t, 2)
	env.mustPublicKey(t, "a", keyA())
	env.mustPublicKey(t, "c", keyC())
	// The lookup of b starts an unknown-kid refetch, which still lacks b.
	env.mustFail(t, "b", accesstoken.ErrUnknownKey)
	env.wantFetches(t, 3)
	env.mustFail(t, "b", accesstoken.ErrUnknownKey)
	env.wantFetches(t, 3)
}

func TestCacheUnknownKidRefetch(t *testing.T) {
	env := newTestEnv(t, nil)
	env.server.serveBody("", jwksBody(t, publicJWK("a", keyA())))
	env.start(t)

	// A key published after the last fetch is found by one refetch.
	env.server.serveBody("", jwksBody(t, publicJWK("a", keyA()), publicJWK("b", keyB())))
	env.mustPublicKey(t, "b", keyB())
	env.wantFetches(t, 2)

	// Within the cooldown another unknown kid fails at once, without a
	// fetch.
	env.server.serveBody("", jwksBody(t, publicJWK("a", keyA()), publicJWK("b", keyB()), publicJWK("c", keyC())))
	env.clock.Advance(30*time.Second - time.Nanosecond)
	env.mustFail(t, "c", accesstoken.ErrUnknownKey)
	env.wantFetches(t, 2)
	if got := env.metricValue(t, "todo_jwks_unknown_kid_refetches_suppressed_total", ""); got != 1 {
		t.Errorf("refetches suppressed = %v, want 1", got)
	}

	// Once the cooldown has passed, the next unknown kid refetches.
	env.clock.Advance(time.Nanosecond)
	env.mustPublicKey(t, "c", keyC())
	env.wantFetches(t, 3)
	if got := env.metricValue(t, "todo_jwks_unknown_kid_lookups_total", ""); got != 3 {
		t.Errorf("unknown-kid lookups = %v, want 3", got)
	}
}

func TestCacheInvalidKidNeverFetches(t *testing.T) {
	env := newTestEnv(t, nil)
	env.server.serveBody("", jwksBody(t, publicJWK("a", keyA())))
	env.start(t)

	kids := []string{
		"",
		strings.Repeat("k", 129),
		strings.Repeat("k", 4096),
		"has space",
		"dotted.kid",
		"path/kid",
		"kid=",
		"tab\tkid",
		"nul\x00kid",
		"caf\u00e9",
		"\xff\xfe",
	}
	for _, kid := range kids {
		env.mustFail(t, kid, accesstoken.ErrUnknownKey)
	}
	env.wantFetches(t, 1)
	if got := env.metricValue(t, "todo_jwks_unknown_kid_refetches_suppressed_total", ""); got != 0 {
		t.Errorf("refetches suppressed = %v, want 0 because invalid kids never reach the cooldown", got)
	}

	// A kid of exactly 128 base64url bytes is valid and may refetch.
	env.mustFail(t, strings.Repeat("k", 128), accesstoken.ErrUnknownKey)
	env.wantFetches(t, 2)
}

func TestCacheUnknownKidWaitIsBounded(t *testing.T) {
	env := newTestEnv(t, func(cfg *Config) { cfg.UnknownKidWait = 20 * time.Millisecond })
	env.server.serveBody("", jwksBody(t, publicJWK("a", keyA())))
	env.start(t)

	release := env.server.serveHang(t)
	env.mustFail(t, "b", accesstoken.ErrUnknownKey)
	// The refetch is still in flight: more unknown kids join it instead of
	// starting another, and known keys still resolve without waiting.
	env.mustFail(t, "c", accesstoken.ErrUnknownKey)
	env.mustPublicKey(t, "a", keyA())
	env.wantFetches(t, 2)

	// The endpoint now publishes b and responds at once. The refetch in
	// flight still fails, and the cooldown suppresses the next one until it
	// has passed.
	env.server.serveBody("", jwksBody(t, publicJWK("a", keyA()), publicJWK("b", keyB())))
	release()
	env.waitForInflightFetch(t)
	env.mustFail(t, "b", accesstoken.ErrUnknownKey)
	env.wantFetches(t, 2)

	// After the cooldown a lookup of b refetches. Whether or not that
	// fetch ends within the 20ms wait, b resolves once it has ended.
	env.clock.Advance(30 * time.Second)
	_, _ = env.cache.PublicKey(t.Context(), "b")
	env.waitForInflightFetch(t)
	env.mustPublicKey(t, "b", keyB())
	env.wantFetches(t, 3)
}

func TestCacheUnknownKidJoinsScheduledFetch(t *testing.T) {
	env := newTestEnv(t, func(cfg *Config) { cfg.UnknownKidWait = 20 * time.Millisecond })
	env.server.serveBody("", jwksBody(t, publicJWK("a", keyA())))
	env.start(t)

	release := env.server.serveHang(t)
	env.timer.fireAsync(t)
	env.server.waitForHungRequest(t)

	// The lookup waits for the scheduled fetch instead of starting one,
	// so it does not use up the cooldown.
	env.mustFail(t, "b", accesstoken.ErrUnknownKey)
	env.wantFetches(t, 2)

	env.server.serveBody("", jwksBody(t, publicJWK("a", keyA()), publicJWK("b", keyB())))
	release()
	env.timer.nextDelay(t)
	_, _ = env.cache.PublicKey(t.Context(), "b")
	env.waitForInflightFetch(t)
	env.mustPublicKey(t, "b", keyB())
	env.wantFetches(t, 3)
}

func TestCacheUnknownKidFlood(t *testing.T) {
	const goroutines = 5000

	env := newTestEnv(t, nil)
	env.server.serveBody("max-age=600", jwksBody(t, publicJWK("a", keyA())))
	env.start(t)

	flood := func(t *testing.T) {
		t.Helper()
		var wg sync.WaitGroup
		errs := make(chan error, goroutines)
		for i := range goroutines {
			wg.Go(func() {
				// Every tenth call requests the known key, which must
				// keep resolving during the flood.
				if i%10 == 0 {
					key, err := env.cache.PublicKey(context.Background(), "a")
					if err != nil || !key.Equal(&keyA().PublicKey) {
						errs <- fmt.Errorf("PublicKey(a) during the flood = %v, %v", key, err)
					}
					return
				}
				kid := fmt.Sprintf("random-%016x", rand.Uint64())
				if _, err := env.cache.PublicKey(context.Background(), kid); !errors.Is(err, accesstoken.ErrUnknownKey) {
					errs <- fmt.Errorf("PublicKey(%q) error = %v, want ErrUnknownKey", kid, err)
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
	}

	// First cooldown window: one refetch at most, shared by every request.
	flood(t)
	env.wantFetches(t, 2)

	// The scheduled refresh still runs on its own timer.
	env.clock.Advance(10 * time.Second)
	env.timer.fire(t)
	env.wantFetches(t, 3)

	// Still inside the window: no unknown-kid refetch at all.
	flood(t)
	env.wantFetches(t, 3)

	// Next window: one more.
	env.clock.Advance(30 * time.Second)
	flood(t)
	env.wantFetches(t, 4)

	lookups := env.metricValue(t, "todo_jwks_unknown_kid_lookups_total", "")
	if want := float64(3 * goroutines * 9 / 10); lookups != want {
		t.Errorf("unknown-kid lookups = %v, want %v", lookups, want)
	}
	suppressed := env.metricValue(t, "todo_jwks_unknown_kid_refetches_suppressed_total", "")
	if suppressed < float64(goroutines*9/10) || suppressed >= lookups {
		t.Errorf("refetches suppressed = %v, want at least one flood's worth (%d) and fewer than the lookups (%v)",
			suppressed, goroutines*9/10, lookups)
	}
}

func TestCacheUnknownKidFloodWhileEndpointHangs(t *testing.T) {
	const goroutines = 2000

	env := newTestEnv(t, func(cfg *Config) { cfg.UnknownKidWait = 10 * time.Millisecond })
	env.server.serveBody("", jwksBody(t, publicJWK("a", keyA())))
	env.start(t)
	env.server.serveHang(t)

	var wg sync.WaitGroup
	for i := range goroutines {
		wg.Go(func() {
			kid := fmt.Sprintf("hang-%d", i)
			if _, err := env.cache.PublicKey(context.Background(), kid); !errors.Is(err, accesstoken.ErrUnknownKey) {
				t.Errorf("PublicKey(%q) error = %v, want ErrUnknownKey", kid, err)
			}
		})
	}
	wg.Wait()

	env.wantFetches(t, 2)
	env.mustPublicKey(t, "a", keyA())
}

func TestCacheStaleSetFailsClosed(t *testing.T) {
	env := newTestEnv(t, nil)
	env.server.serveBody("", jwksBody(t, publicJWK("a", keyA())))
	env.start(t)

	env.server.serve(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "broken", http.StatusInternalServerError)
	})
	env.clock.Advance(24 * time.Hour)
	env.timer.fire(t)
	env.mustPublicKey(t, "a", keyA()) // exactly the max stale age: still usable
	if !env.cache.Ready() {
		t.Errorf("Ready() = false at exactly the max stale age, want true")
	}

	env.clock.Advance(time.Second)
	env.mustFail(t, "a", accesstoken.ErrKeysUnavailable)
	env.mustFail(t, "unknown", accesstoken.ErrKeysUnavailable)
	if env.cache.Ready() {
		t.Errorf("Ready() = true beyond the max stale age, want false")
	}
	if got := env.metricValue(t, "todo_jwks_key_set_ready", ""); got != 0 {
		t.Errorf("ready gauge = %v, want 0", got)
	}
	wantAge := (24*time.Hour + time.Second).Seconds()
	if got := env.metricValue(t, "todo_jwks_key_set_age_seconds", ""); got != wantAge {
		t.Errorf("key set age = %v, want %v", got, wantAge)
	}
	env.wantFetches(t, 2)

	// A successful fetch makes the cache usable again.
	env.server.serveBody("", jwksBody(t, publicJWK("a", keyA())))
	env.timer.fire(t)
	env.mustPublicKey(t, "a", keyA())
	if !env.cache.Ready() {
		t.Errorf("Ready() = false after a successful fetch, want true")
	}
}

func TestNewRejectsInvalidConfig(t *testing.T) {
	tests := []struct {
		name string
		edit func(*Config)
		want string
	}{
		{"missing url", func(c *Config) { c.URL = "" }, "jwks URL is missing"},
		{"ftp url", func(c *Config) { c.URL = "ftp://127.0.0.1/jwks.json" }, "scheme must be http or https"},
		{"url without host", func(c *Config) { c.URL = "http:///jwks.json" }, "host is missing"},
		{"zero min refresh", func(c *Config) { c.MinRefreshInterval = 0 }, "min refresh interval"},
		{"max below min", func(c *Config) { c.MaxRefreshInterval = 30 * time.Second }, "max refresh interval"},
		{"zero cooldown", func(c *Config) { c.UnknownKidCooldown = 0 }, "unknown-kid cooldown"},
		{"negative wait", func(c *Config) { c.UnknownKidWait = -time.Second }, "unknown-kid wait"},
		{"stale age below refresh", func(c *Config) { c.MaxStaleAge = 10 * time.Minute }, "max stale age"},
		{"zero fetch timeout", func(c *Config) { c.FetchTimeout = 0 }, "fetch timeout"},
		{"zero body cap", func(c *Config) { c.MaxBodyBytes = 0 }, "max body bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.URL = "http://127.0.0.1:8081/.well-known/jwks.json"
			tt.edit(&cfg)

			_, err := New(cfg, nil, nil, nil)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("New() error = %v, want one containing %q", err, tt.want)
			}
		})
	}
}

func TestNewAcceptsDefaultConfig(t *testing.T) {
	cfg := DefaultConfig()
	cfg.URL = "http://127.0.0.1:8081/.well-known/jwks.json"

	cache, err := New(cfg, nil, nil, nil)
	if err != nil {
		t.Fatalf("New(DefaultConfig) error = %v", err)
	}
	cache.Close()
}

func TestNewRegistersMetricsOnce(t *testing.T) {
	reg := prometheus.NewRegistry()
	cfg := DefaultConfig()
	cfg.URL = "http://127.0.0.1:8081/.well-known/jwks.json"

	first, err := New(cfg, nil, nil, reg)
	if err != nil {
		t.Fatalf("first New() error = %v", err)
	}
	if _, err := New(cfg, nil, nil, reg); err == nil {
		t.Errorf("second New() with the same registry error = nil, want a registration error")
	}

	// Close unregisters, so a new cache can use the registry again.
	first.Close()
	second, err := New(cfg, nil, nil, reg)
	if err != nil {
		t.Fatalf("New() after Close error = %v", err)
	}
	second.Close()
}

func TestCacheCloseIsIdempotent(t *testing.T) {
	env := newTestEnv(t, nil)
	env.server.serveBody("", jwksBody(t, publicJWK("a", keyA())))
	env.start(t)

	env.cache.Close()
	env.cache.Close()

	// The set loaded before Close stays readable, but nothing fetches.
	env.mustPublicKey(t, "a", keyA())
	env.mustFail(t, "b", accesstoken.ErrUnknownKey)
	env.wantFetches(t, 1)
}

func BenchmarkCachePublicKey(b *testing.B) {
	cfg := DefaultConfig()
	cfg.URL = "http://127.0.0.1:0/.well-known/jwks.json" // never fetched: the benchmark installs the set itself
	cache, err := New(cfg, nil, nil, nil)
	if err != nil {
		b.Fatalf("New() error = %v", err)
	}
	b.Cleanup(cache.Close)
	parsed, err := parseKeySet(jwksBody(b, publicJWK("a", keyA()), publicJWK("b", keyB())))
	if err != nil {
		b.Fatalf("parseKeySet() error = %v", err)
	}
	cache.install(&keySet{keys: parsed.keys, fetchedAt: time.Now()})

	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := cache.PublicKey(context.Background(), "a"); err != nil {
				b.Fatalf("PublicKey(a) error = %v", err)
			}
		}
	})
}
