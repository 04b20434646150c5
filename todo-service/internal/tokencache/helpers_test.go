package tokencache

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"example.com/todoapp/proto/accesstoken"
)

const (
	testIssuer   = "http://127.0.0.1:8081"
	testAudience = "todo-service"
	testKid      = "key-one"
)

// testStart is the injected time at which every test begins.
var testStart = time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)

var (
	keysOnce  sync.Once
	firstKey  *rsa.PrivateKey
	secondKey *rsa.PrivateKey
)

// testKeys returns two RSA 2048 keys, generated once per test binary.
func testKeys(tb testing.TB) (first, second *rsa.PrivateKey) {
	tb.Helper()
	keysOnce.Do(func() {
		var err error
		if firstKey, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
			panic(err)
		}
		if secondKey, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
			panic(err)
		}
	})
	return firstKey, secondKey
}

// testClock is an injected clock that tests move by hand.
type testClock struct {
	nanos atomic.Int64
}

func newTestClock() *testClock {
	c := &testClock{}
	c.nanos.Store(testStart.UnixNano())
	return c
}

func (c *testClock) Now() time.Time {
	return time.Unix(0, c.nanos.Load()).UTC()
}

func (c *testClock) Advance(d time.Duration) {
	c.nanos.Add(int64(d))
}

// memoryResolver is an accesstoken.KeyResolver over a map that tests
// change while the cache is in use.
type memoryResolver struct {
	mu   sync.RWMutex
	keys map[string]*rsa.PublicKey // guarded by mu
	err  error                     // returned by every lookup when set; guarded by mu
}

func newMemoryResolver(kid string, key *rsa.PublicKey) *memoryResolver {
	return &memoryResolver{keys: map[string]*rsa.PublicKey{kid: key}}
}

func (r *memoryResolver) PublicKey(_ context.Context, kid string) (*rsa.PublicKey, error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if r.err != nil {
		return nil, r.err
	}
	key, ok := r.keys[kid]
	if !ok {
		return nil, fmt.Errorf("kid %q: %w", kid, accesstoken.ErrUnknownKey)
	}
	return key, nil
}

func (r *memoryResolver) set(kid string, key *rsa.PublicKey) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.keys[kid] = key
}

func (r *memoryResolver) delete(kid string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.keys, kid)
}

func (r *memoryResolver) setError(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.err = err
}

// countingVerifier counts the calls that reach the wrapped verifier.
type countingVerifier struct {
	next  TokenVerifier
	calls atomic.Int64
}

func (v *countingVerifier) Verify(ctx context.Context, token string) (*accesstoken.Claims, error) {
	v.calls.Add(1)
	return v.next.Verify(ctx, token)
}

// fixture is a Cache in front of a real accesstoken.Verifier that shares
// the cache's clock and key resolver.
type fixture struct {
	cache    *Cache
	verifier *countingVerifier
	keys     *memoryResolver
	clock    *testClock
}

func newFixture(tb testing.TB, maxEntries int) *fixture {
	tb.Helper()
	signing, _ := testKeys(tb)
	clock := newTestClock()
	keys := newMemoryResolver(testKid, &signing.PublicKey)

	full, err := accesstoken.NewVerifier(accesstoken.VerifierConfig{
		Issuer:    testIssuer,
		Audiences: []string{testAudience},
		Now:       clock.Now,
		Keys:      keys,
	})
	if err != nil {
		tb.Fatalf("NewVerifier() error = %v", err)
	}
	counting := &countingVerifier{next: full}

	cache, err := New(counting, keys, Config{MaxEntries: maxEntries, Now: clock.Now}, nil)
	if err != nil {
		tb.Fatalf("New() error = %v", err)
	}
	return &fixture{cache: cache, verifier: counting, keys: keys, clock: clock}
}

// claimsFor returns valid claims issued at the test start time that
// expire after lifetime. The jti makes each token distinct.
func claimsFor(jti string, lifetime time.Duration) accesstoken.Claims {
	return accesstoken.Claims{
		Issuer:    testIssuer,
		Subject:   "0b8c6a36-8f7c-4a1e-9d7e-2f1c3b4a5d6e",
		Audience:  []string{testAudience},
		Expiry:    testStart.Add(lifetime),
		IssuedAt:  testStart,
		NotBefore: testStart,
		ID:        jti,
		SessionID: "5f0e1d2c-3b4a-4968-8776-a5b4c3d2e1f0",
		Email:     "ada@example.com",
	}
}

// signToken signs claims with key under kid.
func signToken(tb testing.TB, claims accesstoken.Claims, kid string, key *rsa.PrivateKey) string {
	tb.Helper()
	token, err := accesstoken.Sign(claims, accesstoken.SigningKey{ID: kid, Key: key})
	if err != nil {
		tb.Fatalf("Sign() error = %v", err)
	}
	return token
}

// validToken returns a token signed with the first test key under testKid
// that is valid for 15 minutes from the test start time.
func validToken(tb testing.TB, jti string) string {
	tb.Helper()
	signing, _ := testKeys(tb)
	return signToken(tb, claimsFor(jti, 15*time.Minute), testKid, signing)
}
