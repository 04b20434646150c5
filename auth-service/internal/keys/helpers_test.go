package keys

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/prometheus/client_golang/prometheus"

	"example.com/todoapp/auth-service/internal/store/storetest"
)

// testClock is a settable clock shared by the managers of one test.
type testClock struct {
	mu  sync.Mutex
	now time.Time // guarded by mu
}

func newTestClock() *testClock {
	return &testClock{now: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
}

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *testClock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = t
}

func (c *testClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// Pool of 2048-bit keys generated once per test binary, because one
// generation can take a large part of a second and the race test rotates
// dozens of times. Several kids may share one RSA key, which does not
// matter to the lifecycle logic.
var (
	keyPoolOnce sync.Once
	keyPool     []*rsa.PrivateKey
	keyPoolNext atomic.Uint64
)

const keyPoolSize = 6

func pooledKey(tb testing.TB) func(bits int) (*rsa.PrivateKey, error) {
	tb.Helper()
	keyPoolOnce.Do(func() {
		keyPool = make([]*rsa.PrivateKey, keyPoolSize)
		var wg sync.WaitGroup
		for i := range keyPool {
			wg.Go(func() {
				key, err := rsa.GenerateKey(rand.Reader, 2048)
				if err != nil {
					panic(err)
				}
				keyPool[i] = key
			})
		}
		wg.Wait()
	})
	return func(int) (*rsa.PrivateKey, error) {
		return keyPool[keyPoolNext.Add(1)%keyPoolSize], nil
	}
}

func testKEK() []byte {
	kek := make([]byte, KEKSize)
	for i := range kek {
		kek[i] = byte(i + 1)
	}
	return kek
}

// testConfig is DefaultConfig with the test clock.
func testConfig(clock *testClock) Config {
	cfg := DefaultConfig()
	cfg.Now = clock.Now
	return cfg
}

// newTestManager returns a manager with pooled keys that is closed when
// the test ends. It is not started.
func newTestManager(tb testing.TB, db *sqlx.DB, kek []byte, cfg Config, reg prometheus.Registerer) *Manager {
	tb.Helper()

	m, err := NewManager(db, kek, cfg, nil, reg)
	if err != nil {
		tb.Fatalf("NewManager() = %v", err)
	}
	m.generateKey = pooledKey(tb)
	tb.Cleanup(m.Close)
	return m
}

// startTestManager is newTestManager followed by Start.
func startTestManager(tb testing.TB, db *sqlx.DB, cfg Config) *Manager {
	tb.Helper()

	m := newTestManager(tb, db, testKEK(), cfg, nil)
	if err := m.Start(testContext(tb)); err != nil {
		tb.Fatalf("Start() = %v", err)
	}
	return m
}

func testContext(tb testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	tb.Cleanup(cancel)
	return ctx
}

// eachStore runs fn against a fresh SQLite database and a fresh PostgreSQL
// database. The PostgreSQL subtest skips visibly without TEST_DATABASE_URL.
func eachStore(t *testing.T, fn func(t *testing.T, open func(testing.TB) *sqlx.DB)) {
	t.Run("sqlite", func(t *testing.T) {
		fn(t, openSQLite)
	})
	t.Run("postgres", func(t *testing.T) {
		fn(t, openPostgres)
	})
}

func openSQLite(tb testing.TB) *sqlx.DB {
	tb.Helper()
	return storetest.NewSQLite(tb).DB()
}

func openPostgres(tb testing.TB) *sqlx.DB {
	tb.Helper()
	return storetest.NewPostgres(tb).DB()
}

// listKeys returns List(), failing the test on error.
func listKeys(tb testing.TB, m *Manager) []KeyInfo {
	tb.Helper()
	infos, err := m.List(testContext(tb))
	if err != nil {
		tb.Fatalf("List() = %v", err)
	}
	return infos
}

// keyWithState returns the one stored key in state, failing the test when
// there is not exactly one.
func keyWithState(tb testing.TB, infos []KeyInfo, state State) KeyInfo {
	tb.Helper()
	var found []KeyInfo
	for _, info := range infos {
		if info.State == state {
			found = append(found, info)
		}
	}
	if len(found) != 1 {
		tb.Fatalf("keys in state %s = %d (%+v), want 1", state, len(found), infos)
	}
	return found[0]
}

func countState(infos []KeyInfo, state State) int {
	n := 0
	for _, info := range infos {
		if info.State == state {
			n++
		}
	}
	return n
}

func signingKeyID(tb testing.TB, m *Manager) string {
	tb.Helper()
	key, err := m.SigningKey(testContext(tb))
	if err != nil {
		tb.Fatalf("SigningKey() = %v", err)
	}
	return key.ID
}

func refresh(tb testing.TB, m *Manager) []transition {
	tb.Helper()
	done, err := m.refresh(testContext(tb))
	if err != nil {
		tb.Fatalf("refresh() = %v", err)
	}
	return done
}

// reload loads the stored keys without performing due transitions.
func reload(tb testing.TB, m *Manager) {
	tb.Helper()
	now := m.cfg.now()
	records, err := selectKeys(testContext(tb), m.db)
	if err != nil {
		tb.Fatalf("selectKeys() = %v", err)
	}
	if err := m.load(records, now); err != nil {
		tb.Fatalf("load() = %v", err)
	}
}
