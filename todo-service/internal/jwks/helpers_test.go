package jwks

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// watchdog bounds every wait for a background event, so that a bug fails
// the test instead of hanging it. No assertion depends on it.
const watchdog = 10 * time.Second

func generateKey(bits int) func() *rsa.PrivateKey {
	return sync.OnceValue(func() *rsa.PrivateKey {
		key, err := rsa.GenerateKey(rand.Reader, bits)
		if err != nil {
			panic(fmt.Sprintf("generate %d-bit RSA key: %v", bits, err))
		}
		return key
	})
}

var (
	keyA    = generateKey(2048)
	keyB    = generateKey(2048)
	keyC    = generateKey(3072)
	weakKey = generateKey(1024)
)

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

// publicJWK returns the JWK of key's public part with alg RS256 and use
// sig, as the auth service publishes it.
func publicJWK(kid string, key *rsa.PrivateKey) map[string]any {
	return map[string]any{
		"kty": "RSA",
		"kid": kid,
		"alg": "RS256",
		"use": "sig",
		"n":   b64(key.N.Bytes()),
		"e":   b64(big.NewInt(int64(key.E)).Bytes()),
	}
}

// privateJWK returns publicJWK plus every private member of key.
func privateJWK(kid string, key *rsa.PrivateKey) map[string]any {
	jwk := publicJWK(kid, key)
	jwk["d"] = b64(key.D.Bytes())
	jwk["p"] = b64(key.Primes[0].Bytes())
	jwk["q"] = b64(key.Primes[1].Bytes())
	jwk["dp"] = b64(key.Precomputed.Dp.Bytes())
	jwk["dq"] = b64(key.Precomputed.Dq.Bytes())
	jwk["qi"] = b64(key.Precomputed.Qinv.Bytes())
	return jwk
}

// with returns a copy of jwk with the given members set, or removed when
// the value is nil.
func with(jwk map[string]any, members map[string]any) map[string]any {
	out := make(map[string]any, len(jwk))
	for name, value := range jwk {
		out[name] = value
	}
	for name, value := range members {
		if value == nil {
			delete(out, name)
			continue
		}
		out[name] = value
	}
	return out
}

func jwksBody(t testing.TB, keys ...map[string]any) []byte {
	t.Helper()
	if keys == nil {
		keys = []map[string]any{}
	}
	body, err := json.Marshal(map[string]any{"keys": keys})
	if err != nil {
		t.Fatalf("json.Marshal(keys) error = %v", err)
	}
	return body
}

// fakeJWKS is a JWKS endpoint on 127.0.0.1 whose behaviour a test sets and
// changes, and which counts the requests it receives.
type fakeJWKS struct {
	srv      *httptest.Server
	requests atomic.Int64
	hung     chan struct{} // receives a value for each request that serveHang holds

	mu      sync.Mutex
	handler http.HandlerFunc // guarded by mu
}

func newFakeJWKS(t *testing.T) *fakeJWKS {
	t.Helper()
	f := &fakeJWKS{hung: make(chan struct{}, 1)}
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.requests.Add(1)
		f.mu.Lock()
		handler := f.handler
		f.mu.Unlock()
		handler(w, r)
	}))
	t.Cleanup(f.srv.Close)
	f.serve(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "no behaviour set", http.StatusInternalServerError)
	})
	return f
}

func (f *fakeJWKS) URL() string { return f.srv.URL + "/.well-known/jwks.json" }

func (f *fakeJWKS) serve(handler http.HandlerFunc) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.handler = handler
}

// serveBody makes f respond with status 200, body and the given
// Cache-Control header, unless cacheControl is empty.
func (f *fakeJWKS) serveBody(cacheControl string, body []byte) {
	f.serve(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		if cacheControl != "" {
			w.Header().Set("Cache-Control", cacheControl)
		}
		_, _ = w.Write(body)
	})
}

// serveHang makes f hold each request until the client gives up or the
// returned release function is called.
func (f *fakeJWKS) serveHang(t *testing.T) (release func()) {
	t.Helper()
	released := make(chan struct{})
	var once sync.Once
	release = func() { once.Do(func() { close(released) }) }
	t.Cleanup(release)

	f.serve(func(w http.ResponseWriter, r *http.Request) {
		select {
		case f.hung <- struct{}{}:
		default:
		}
		select {
		case <-r.Context().Done():
		case <-released:
			http.Error(w, "released", http.StatusServiceUnavailable)
		}
	})
	return release
}

// waitForHungRequest waits until a request reaches the handler that
// serveHang set.
func (f *fakeJWKS) waitForHungRequest(t *testing.T) {
	t.Helper()
	select {
	case <-f.hung:
	case <-time.After(watchdog):
		t.Fatalf("no request reached the hanging handler within %s", watchdog)
	}
}

func (f *fakeJWKS) fetches() int64 { return f.requests.Load() }

// fakeClock is a clock that moves only when the test advances it.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{now: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// fakeTimer replaces Cache.wait. Each time the refresh loop finishes a
// fetch, it sends the delay it requests on delays and then waits until the
// test calls fire.
type fakeTimer struct {
	delays chan time.Duration
	fires  chan struct{}
}

func newFakeTimer() *fakeTimer {
	return &fakeTimer{delays: make(chan time.Duration), fires: make(chan struct{})}
}

func (f *fakeTimer) wait(ctx context.Context, d time.Duration) bool {
	select {
	case f.delays <- d:
	case <-ctx.Done():
		return false
	}
	select {
	case <-f.fires:
		return true
	case <-ctx.Done():
		return false
	}
}

// nextDelay returns the delay the loop requested after its latest fetch,
// which also shows that the fetch has finished.
func (f *fakeTimer) nextDelay(t *testing.T) time.Duration {
	t.Helper()
	select {
	case d := <-f.delays:
		return d
	case <-time.After(watchdog):
		t.Fatalf("refresh loop did not finish a fetch within %s", watchdog)
		return 0
	}
}

// fireAsync ends the loop's wait, so that it starts the next scheduled
// fetch, and returns at once.
func (f *fakeTimer) fireAsync(t *testing.T) {
	t.Helper()
	select {
	case f.fires <- struct{}{}:
	case <-time.After(watchdog):
		t.Fatalf("refresh loop was not waiting within %s", watchdog)
	}
}

// fire ends the loop's wait, so that it starts the next scheduled fetch,
// and returns the delay it requests after that fetch.
func (f *fakeTimer) fire(t *testing.T) time.Duration {
	t.Helper()
	f.fireAsync(t)
	return f.nextDelay(t)
}

// memPersister is an in-memory Persister.
type memPersister struct {
	mu        sync.Mutex
	body      []byte
	fetchedAt time.Time
	saves     int
	loadErr   error
	saveErr   error
}

func (p *memPersister) LoadKeySet(ctx context.Context) ([]byte, time.Time, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.loadErr != nil {
		return nil, time.Time{}, p.loadErr
	}
	return p.body, p.fetchedAt, nil
}

func (p *memPersister) SaveKeySet(ctx context.Context, body []byte, fetchedAt time.Time) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.saves++
	if p.saveErr != nil {
		return p.saveErr
	}
	p.body = append([]byte(nil), body...)
	p.fetchedAt = fetchedAt
	return nil
}

func (p *memPersister) saved() ([]byte, time.Time, int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.body, p.fetchedAt, p.saves
}

// testEnv is a Cache wired to a fake JWKS endpoint, a fake clock and a
// fake timer.
type testEnv struct {
	cache     *Cache
	server    *fakeJWKS
	clock     *fakeClock
	timer     *fakeTimer
	persister *memPersister
	registry  *prometheus.Registry
	logs      *lockedBuffer // the cache's log output, in slog text format
}

// lockedBuffer is a bytes.Buffer that the cache's goroutines and the test
// can use at the same time.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// testConfig returns the default settings with the fake clock, and fetch
// and wait limits long enough that only a bug reaches them.
func testConfig(url string, clock *fakeClock) Config {
	cfg := DefaultConfig()
	cfg.URL = url
	cfg.Now = clock.Now
	cfg.FetchTimeout = watchdog
	cfg.UnknownKidWait = watchdog
	return cfg
}

// newTestEnv returns a Cache that is not started yet. configure, if not
// nil, edits the test settings first.
func newTestEnv(t *testing.T, configure func(*Config)) *testEnv {
	t.Helper()
	env := &testEnv{
		server:    newFakeJWKS(t),
		clock:     newFakeClock(),
		timer:     newFakeTimer(),
		persister: &memPersister{},
		registry:  prometheus.NewRegistry(),
		logs:      &lockedBuffer{},
	}
	cfg := testConfig(env.server.URL(), env.clock)
	if configure != nil {
		configure(&cfg)
	}

	logger := slog.New(slog.NewTextHandler(env.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	cache, err := New(cfg, env.persister, logger, env.registry)
	if err != nil {
		t.Fatalf("New() error = %v", err)
	}
	cache.wait = env.timer.wait
	t.Cleanup(cache.Close)
	env.cache = cache
	return env
}

// start starts the cache and waits until its first fetch has finished.
func (env *testEnv) start(t *testing.T) time.Duration {
	t.Helper()
	env.cache.Start(t.Context())
	return env.timer.nextDelay(t)
}

// mustPublicKey calls PublicKey and fails the test unless it returns the
// public part of want.
func (env *testEnv) mustPublicKey(t *testing.T, kid string, want *rsa.PrivateKey) {
	t.Helper()
	got, err := env.cache.PublicKey(t.Context(), kid)
	if err != nil {
		t.Fatalf("PublicKey(%q) error = %v, want nil", kid, err)
	}
	if !got.Equal(&want.PublicKey) {
		t.Fatalf("PublicKey(%q) returned another key than the published one", kid)
	}
}

// mustFail calls PublicKey and fails the test unless the error wraps want.
func (env *testEnv) mustFail(t *testing.T, kid string, want error) {
	t.Helper()
	got, err := env.cache.PublicKey(t.Context(), kid)
	if !errors.Is(err, want) {
		t.Fatalf("PublicKey(%q) = %v, %v; want error wrapping %v", kid, got, err, want)
	}
}

// waitForInflightFetch waits until no fetch is in flight.
func (env *testEnv) waitForInflightFetch(t *testing.T) {
	t.Helper()
	env.cache.mu.Lock()
	call := env.cache.inflight
	env.cache.mu.Unlock()
	if call == nil {
		return
	}
	select {
	case <-call.done:
	case <-time.After(watchdog):
		t.Fatalf("fetch in flight did not end within %s", watchdog)
	}
}

func (env *testEnv) wantFetches(t *testing.T, want int64) {
	t.Helper()
	if got := env.server.fetches(); got != want {
		t.Fatalf("JWKS endpoint received %d requests, want %d", got, want)
	}
}

// metricValue returns the value of the counter or gauge with the given
// name and label value (empty for a metric without labels) from the
// environment's registry.
func (env *testEnv) metricValue(t *testing.T, name, labelValue string) float64 {
	t.Helper()
	families, err := env.registry.Gather()
	if err != nil {
		t.Fatalf("Gather() error = %v", err)
	}
	for _, family := range families {
		if family.GetName() != name {
			continue
		}
		for _, metric := range family.GetMetric() {
			if labelValue != "" && !hasLabelValue(metric, labelValue) {
				continue
			}
			if metric.GetCounter() != nil {
				return metric.GetCounter().GetValue()
			}
			return metric.GetGauge().GetValue()
		}
	}
	t.Fatalf("metric %s{%q} not found", name, labelValue)
	return 0
}

func hasLabelValue(metric *dto.Metric, value string) bool {
	for _, label := range metric.GetLabel() {
		if label.GetValue() == value {
			return true
		}
	}
	return false
}

// refusingAddr returns a 127.0.0.1 address whose port is bound by this
// test but not listening, so that connections to it are refused, and no
// other program can take the port while the test runs.
func refusingAddr(t *testing.T) string {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatalf("socket() error = %v", err)
	}
	t.Cleanup(func() { _ = syscall.Close(fd) })

	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatalf("bind(127.0.0.1:0) error = %v", err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatalf("getsockname() error = %v", err)
	}
	return fmt.Sprintf("127.0.0.1:%d", sa.(*syscall.SockaddrInet4).Port)
}
