// Package jwks keeps the auth service's public signing keys for the todo
// service: it fetches the JWKS document, refreshes it in the background and
// resolves key ids for token verification.
package jwks

import (
	"context"
	"crypto/rsa"
	"errors"
	"log/slog"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Config holds the settings of a Cache.
type Config struct {
	URL                string
	MinRefreshInterval time.Duration // lower bound when honouring Cache-Control max-age
	MaxRefreshInterval time.Duration // upper bound, and the refresh period without max-age
	UnknownKidCooldown time.Duration // at most one unknown-kid refetch per cooldown
	UnknownKidWait     time.Duration // longest a request waits for a refetch in flight
	MaxStaleAge        time.Duration // beyond it PublicKey fails with ErrKeysUnavailable
	FetchTimeout       time.Duration
	MaxBodyBytes       int64
	HTTPClient         *http.Client // nil: a client with the timeout and the same-host redirect rule
	Now                func() time.Time
}

// DefaultConfig returns the default settings with an empty URL.
func DefaultConfig() Config {
	return Config{
		MinRefreshInterval: time.Minute,
		MaxRefreshInterval: 10 * time.Minute,
		UnknownKidCooldown: 30 * time.Second,
		UnknownKidWait:     time.Second,
		MaxStaleAge:        24 * time.Hour,
		FetchTimeout:       5 * time.Second,
		MaxBodyBytes:       1 << 20,
	}
}

// Persister stores the last good key set (the raw JWKS JSON) so that a
// restart while the auth service is down still verifies tokens.
type Persister interface {
	// LoadKeySet returns a nil body, a zero time and a nil error when no
	// key set is stored.
	LoadKeySet(ctx context.Context) (body []byte, fetchedAt time.Time, err error)
	SaveKeySet(ctx context.Context, body []byte, fetchedAt time.Time) error
}

// Cache is a JWKS cache. It implements accesstoken.KeyResolver.
type Cache struct {
	cfg Config
}

// New validates cfg and returns a Cache that does nothing until Start.
func New(cfg Config, p Persister, logger *slog.Logger, reg prometheus.Registerer) (*Cache, error) {
	return &Cache{cfg: cfg}, nil
}

// Start loads the persisted key set and starts the background refresh.
func (c *Cache) Start(ctx context.Context) {}

// Ready reports whether a usable key set is loaded.
func (c *Cache) Ready() bool { return false }

// PublicKey returns the verification key with the given key id.
func (c *Cache) PublicKey(ctx context.Context, kid string) (*rsa.PublicKey, error) {
	// TODO: return accesstoken.ErrKeysUnavailable once that package lands.
	return nil, errors.New("jwks: no key set loaded")
}

// Close stops the background refresh.
func (c *Cache) Close() {}
