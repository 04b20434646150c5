package tokencache

import (
	"context"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"example.com/todoapp/proto/accesstoken"
)

// DefaultMaxEntries is the capacity that New uses when Config.MaxEntries
// is zero.
const DefaultMaxEntries = 10000

// maxShards is the largest number of shards. Each shard has its own mutex
// and LRU list, so requests for different tokens rarely wait on each
// other.
const maxShards = 32

// TokenVerifier is the interface that the todo-service auth interceptor
// calls per request. *accesstoken.Verifier and *Cache implement it.
type TokenVerifier interface {
	Verify(ctx context.Context, token string) (*accesstoken.Claims, error)
}

// Config configures a Cache. Zero values select the defaults.
type Config struct {
	// MaxEntries is the maximum number of cached tokens, default
	// DefaultMaxEntries. The entries are split over up to 32 shards that
	// each evict on their own, so a shard may evict while the cache as a
	// whole holds fewer than MaxEntries tokens.
	MaxEntries int

	// Now returns the current time, default time.Now. An entry is served
	// only while Now is before the token's exp.
	Now func() time.Time
}

// Cache is a bounded cache of verified tokens in front of a TokenVerifier.
// It is safe for concurrent use.
type Cache struct {
	next    TokenVerifier
	keys    accesstoken.KeyResolver
	now     func() time.Time
	shards  []shard
	mask    uint64 // len(shards)-1, because len(shards) is a power of two
	metrics *metrics
}

// New returns a Cache that verifies misses with next and checks on every
// hit that keys still returns the key recorded for the token's kid. keys
// must be the resolver that next verifies signatures with.
//
// The hit, miss and eviction counters are registered with reg, which may
// be nil. New returns an error when next or keys is nil, when
// cfg.MaxEntries is negative, or when the counters cannot be registered.
func New(next TokenVerifier, keys accesstoken.KeyResolver, cfg Config, reg prometheus.Registerer) (*Cache, error) {
	if next == nil {
		return nil, errors.New("tokencache: verifier is nil")
	}
	if keys == nil {
		return nil, errors.New("tokencache: key resolver is nil")
	}
	if cfg.MaxEntries < 0 {
		return nil, fmt.Errorf("tokencache: max entries %d is negative", cfg.MaxEntries)
	}
	if cfg.MaxEntries == 0 {
		cfg.MaxEntries = DefaultMaxEntries
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}

	c := &Cache{
		next:   next,
		keys:   keys,
		now:    cfg.Now,
		shards: newShards(cfg.MaxEntries),
	}
	c.mask = uint64(len(c.shards) - 1)
	c.metrics = newMetrics(c)
	if reg != nil {
		if err := c.metrics.register(reg); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// newShards splits maxEntries over a power of two of shards, at most
// maxShards, so that the shard capacities add up to exactly maxEntries and
// every shard has room for at least one entry.
func newShards(maxEntries int) []shard {
	n := 1
	for n*2 <= maxShards && n*2 <= maxEntries {
		n *= 2
	}
	shards := make([]shard, n)
	for i := range shards {
		shards[i].capacity = maxEntries / n
		if i < maxEntries%n {
			shards[i].capacity++
		}
		shards[i].items = make(map[[sha256.Size]byte]*entry)
	}
	return shards
}

// Verify returns the claims of token. A token verified before is served
// from the cache while it has not expired and its signing key is still in
// the key set. Otherwise Verify calls the wrapped verifier, returns its
// error unchanged, and stores the claims of a token it accepts.
func (c *Cache) Verify(ctx context.Context, token string) (*accesstoken.Claims, error) {
	sum := sha256.Sum256([]byte(token))
	s := c.shard(sum)

	e, expired := s.get(sum, c.now())
	switch {
	case e != nil && c.keyStillValid(ctx, e):
		c.metrics.hits.Inc()
		return e.cloneClaims(), nil
	case e != nil:
		if s.remove(e) {
			c.metrics.evictions.WithLabelValues(reasonKeyChanged).Inc()
		}
	case expired:
		c.metrics.evictions.WithLabelValues(reasonExpired).Inc()
	}

	c.metrics.misses.Inc()
	claims, err := c.next.Verify(ctx, token)
	if err != nil {
		return nil, err
	}
	c.store(ctx, sum, token, claims)
	return claims, nil
}

// Len returns the number of cached tokens, including expired entries that
// have not been dropped yet.
func (c *Cache) Len() int {
	n := 0
	for i := range c.shards {
		n += c.shards[i].len()
	}
	return n
}

func (c *Cache) shard(sum [sha256.Size]byte) *shard {
	return &c.shards[binary.LittleEndian.Uint64(sum[:8])&c.mask]
}

// keyStillValid reports whether the resolver returns the same key for the
// entry's kid as when the entry was stored. A resolver error, such as
// accesstoken.ErrUnknownKey after the key left the set or
// accesstoken.ErrKeysUnavailable when the set is too stale, makes it
// false, so the token goes to the wrapped verifier, which returns the
// matching error.
func (c *Cache) keyStillValid(ctx context.Context, e *entry) bool {
	key, err := c.keys.PublicKey(ctx, e.kid)
	if err != nil || key == nil {
		return false
	}
	return key == e.key || key.Equal(e.key)
}

// store adds the claims of a token that the wrapped verifier accepted. It
// stores nothing when the token has already expired by the injected clock
// or when its key cannot be looked up again.
func (c *Cache) store(ctx context.Context, sum [sha256.Size]byte, token string, claims *accesstoken.Claims) {
	if !c.now().Before(claims.Expiry) {
		return
	}
	kid, err := headerKeyID(token)
	if err != nil {
		return
	}

	// NOTE: this lookup happens after the wrapped verifier's own lookup.
	// If the issuer reused a kid for new key material in between, the
	// entry would record the new key for a token signed by the old one.
	// The auth service draws every kid from 128 random bits, so such a
	// reuse is not expected from it.
	key, err := c.keys.PublicKey(ctx, kid)
	if err != nil || key == nil {
		return
	}

	e := &entry{
		sum:    sum,
		claims: *claims,
		kid:    kid,
		key:    key,
	}
	e.claims.Audience = slices.Clone(claims.Audience)

	if evicted := c.shard(sum).add(e); evicted {
		c.metrics.evictions.WithLabelValues(reasonCapacity).Inc()
	}
}

// headerKeyID returns the kid of the token's protected header. It is
// called only for tokens that the wrapped verifier accepted, so the header
// is known to be well formed.
func headerKeyID(token string) (string, error) {
	end := strings.IndexByte(token, '.')
	if end < 0 {
		return "", errors.New("token has no header segment")
	}
	header, err := base64.RawURLEncoding.DecodeString(token[:end])
	if err != nil {
		return "", fmt.Errorf("decode header: %w", err)
	}
	var h struct {
		KeyID string `json:"kid"`
	}
	if err := json.Unmarshal(header, &h); err != nil {
		return "", fmt.Errorf("parse header: %w", err)
	}
	if h.KeyID == "" {
		return "", errors.New("header has no kid")
	}
	return h.KeyID, nil
}

// entry is one verified token. Its fields other than prev and next are
// never changed after the entry is added, so they may be read without the
// shard's lock once the entry has been returned by get.
type entry struct {
	sum    [sha256.Size]byte
	claims accesstoken.Claims
	kid    string
	key    *rsa.PublicKey

	prev, next *entry // LRU list links, guarded by the shard's mutex
}

// cloneClaims returns a copy of the stored claims that the caller may
// change without affecting the cache.
func (e *entry) cloneClaims() *accesstoken.Claims {
	claims := e.claims
	claims.Audience = slices.Clone(e.claims.Audience)
	return &claims
}
