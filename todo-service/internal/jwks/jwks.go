// Package jwks keeps the auth service's public signing keys for the todo
// service. A Cache fetches the JWKS document, refreshes it in the
// background, persists the last good set and resolves key IDs for token
// verification. A request waits on the network only for a refetch caused
// by an unknown kid, and for at most UnknownKidWait.
//
// The Prometheus metrics are todo_jwks_fetches_total by outcome,
// todo_jwks_key_set_age_seconds, todo_jwks_key_set_ready, todo_jwks_keys,
// todo_jwks_keys_rejected_total by reason,
// todo_jwks_unknown_kid_lookups_total,
// todo_jwks_unknown_kid_refetches_suppressed_total and
// todo_jwks_persist_errors_total by operation. An alert on
// todo_jwks_key_set_age_seconds well above the max refresh interval warns
// before the max stale age makes the service fail closed.
package jwks

import (
	"context"
	"crypto/rsa"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"example.com/todoapp/proto/accesstoken"
)

// Config holds the settings of a Cache.
type Config struct {
	URL                string
	MinRefreshInterval time.Duration // lower bound when honouring Cache-Control max-age
	MaxRefreshInterval time.Duration // upper bound, and the refresh period without max-age
	UnknownKidCooldown time.Duration // at most one unknown-kid refetch per cooldown
	UnknownKidWait     time.Duration // max time a request waits for a refetch in flight
	MaxStaleAge        time.Duration // beyond it PublicKey fails with ErrKeysUnavailable
	FetchTimeout       time.Duration // limit for one fetch, and for one Persister call
	MaxBodyBytes       int64         // larger response bodies, counted after gzip decoding, are rejected
	// HTTPClient is the client for fetches. When nil, the Cache builds one
	// with FetchTimeout and a redirect rule that rejects any change of
	// scheme, host or port. A client whose CheckRedirect is nil gets the
	// same redirect rule.
	HTTPClient *http.Client
	Now        func() time.Time // nil: time.Now
}

// DefaultConfig returns the default settings. The URL is empty and must be
// set.
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

// Validate returns an error that lists every invalid setting.
func (cfg Config) Validate() error {
	var errs []error
	if err := validateURL(cfg.URL); err != nil {
		errs = append(errs, err)
	}
	if cfg.MinRefreshInterval <= 0 {
		errs = append(errs, fmt.Errorf("min refresh interval %s must be positive", cfg.MinRefreshInterval))
	}
	if cfg.MaxRefreshInterval < cfg.MinRefreshInterval {
		errs = append(errs, fmt.Errorf("max refresh interval %s must not be less than the min refresh interval %s",
			cfg.MaxRefreshInterval, cfg.MinRefreshInterval))
	}
	if cfg.UnknownKidCooldown <= 0 {
		errs = append(errs, fmt.Errorf("unknown-kid cooldown %s must be positive", cfg.UnknownKidCooldown))
	}
	if cfg.UnknownKidWait < 0 {
		errs = append(errs, fmt.Errorf("unknown-kid wait %s must not be negative", cfg.UnknownKidWait))
	}
	if cfg.MaxStaleAge <= cfg.MaxRefreshInterval {
		errs = append(errs, fmt.Errorf("max stale age %s must be greater than the max refresh interval %s",
			cfg.MaxStaleAge, cfg.MaxRefreshInterval))
	}
	if cfg.FetchTimeout <= 0 {
		errs = append(errs, fmt.Errorf("fetch timeout %s must be positive", cfg.FetchTimeout))
	}
	if cfg.MaxBodyBytes <= 0 {
		errs = append(errs, fmt.Errorf("max body bytes %d must be positive", cfg.MaxBodyBytes))
	}
	if len(errs) > 0 {
		return fmt.Errorf("invalid jwks config: %w", errors.Join(errs...))
	}
	return nil
}

func validateURL(raw string) error {
	if raw == "" {
		return errors.New("jwks URL is missing")
	}
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("invalid jwks URL: %w", err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return fmt.Errorf("invalid jwks URL %q: scheme must be http or https", u.Redacted())
	}
	if u.Host == "" {
		return fmt.Errorf("invalid jwks URL %q: host is missing", u.Redacted())
	}
	return nil
}

// Persister stores the last good key set as JWKS JSON so that a restart
// while the auth service is down still verifies tokens. The Cache saves the
// keys it accepted, re-encoded with only their public members, instead of
// the response body, so that a private member that a broken endpoint
// published never reaches the database.
type Persister interface {
	// LoadKeySet returns a nil body, a zero time and a nil error when no
	// key set is stored.
	LoadKeySet(ctx context.Context) (body []byte, fetchedAt time.Time, err error)
	SaveKeySet(ctx context.Context, body []byte, fetchedAt time.Time) error
}

// Cache is a JWKS cache. It implements accesstoken.KeyResolver.
//
// Only a fetch that returns a valid set with at least one usable key
// replaces the key set. Every other outcome keeps the last good set until it
// is older than MaxStaleAge, counted from its fetch time.
//
// A usable key is an RSA key with alg RS256 and use sig, a kid of 1 to 128
// base64url characters, exponent 65537, a modulus of 2048 to 8192 bits and
// no private member. A key that lacks alg
// or use is ignored, like one with another value, and the rest of the set
// is still used. When two usable keys share a kid, both are ignored.
type Cache struct {
	cfg       Config
	persister Persister
	logger    *slog.Logger
	metrics   *metrics
	client    *http.Client
	now       func() time.Time

	// wait blocks for d or until ctx is done and reports whether d passed.
	// Tests replace it to drive the refresh loop without sleeping.
	wait func(ctx context.Context, d time.Duration) bool

	// set is the key set in use, nil until the first one is loaded.
	set atomic.Pointer[keySet]

	// ctx is cancelled by Close, and by the end of the context given to
	// Start. Fetches and the refresh loop run under it.
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup // the refresh loop and fetches in flight

	mu sync.Mutex // guards the fields below
	// inflight is the fetch in progress. A caller that needs a fetch
	// meanwhile waits for this one instead of starting another.
	inflight *fetchCall
	// lastUnknownRefetch is when the last fetch for an unknown kid started.
	lastUnknownRefetch time.Time
	started            bool
	closed             bool
	stopAfterFunc      func() bool
}

// New validates cfg and returns a Cache that loads and fetches nothing until
// Start. A nil Persister disables persistence, a nil logger discards logs and
// a nil Registerer leaves the metrics unregistered. New returns an error when
// cfg is invalid or when the metrics are already registered with reg.
func New(cfg Config, p Persister, logger *slog.Logger, reg prometheus.Registerer) (*Cache, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}

	c := &Cache{
		cfg:       cfg,
		persister: p,
		logger:    logger,
		client:    newHTTPClient(cfg),
		now:       cfg.Now,
		wait:      waitTimer,
	}
	c.ctx, c.cancel = context.WithCancel(context.Background())

	c.metrics = newMetrics(c)
	if reg != nil {
		if err := c.metrics.register(reg); err != nil {
			c.cancel()
			return nil, err
		}
	}
	return c, nil
}

// Start loads the persisted key set, if any, and starts the background
// refresh, whose first fetch begins at once. Start returns without waiting
// for that fetch. The Persister gets a context that ends after
// FetchTimeout. The refresh runs until ctx is done or Close is called.
// Calls after the first do nothing.
func (c *Cache) Start(ctx context.Context) {
	c.mu.Lock()
	if c.started || c.closed {
		c.mu.Unlock()
		return
	}
	c.started = true
	c.stopAfterFunc = context.AfterFunc(ctx, c.cancel)
	c.wg.Add(1)
	c.mu.Unlock()

	c.loadPersisted(ctx)

	c.logger.Info("starting jwks refresh", "url", redactedURL(c.cfg.URL),
		"min_refresh_interval", c.cfg.MinRefreshInterval, "max_refresh_interval", c.cfg.MaxRefreshInterval,
		"unknown_kid_cooldown", c.cfg.UnknownKidCooldown, "max_stale_age", c.cfg.MaxStaleAge)
	go c.run(c.ctx)
}

// Ready reports whether a key set is loaded and not older than MaxStaleAge.
func (c *Cache) Ready() bool {
	_, err := c.usableSet()
	return err == nil
}

// PublicKey returns the RSA public key with the given key ID. It implements
// accesstoken.KeyResolver. Its errors wrap accesstoken.ErrKeysUnavailable
// when no key set is loaded or the loaded one is older than MaxStaleAge, and
// accesstoken.ErrUnknownKey when the set has no such key.
//
// For a kid that is not in the set, PublicKey starts a refetch unless one
// started less than UnknownKidCooldown ago, and waits at most UnknownKidWait
// for it. A refetch already in flight is joined, never repeated. A kid that
// is empty, longer than 128 bytes or contains characters outside the
// base64url alphabet never starts a fetch.
func (c *Cache) PublicKey(ctx context.Context, kid string) (*rsa.PublicKey, error) {
	set, err := c.usableSet()
	if err != nil {
		return nil, err
	}
	if key, ok := set.keys[kid]; ok {
		return key, nil
	}

	c.metrics.unknownKIDLookups.Inc()
	if err := validateKID(kid); err != nil {
		return nil, fmt.Errorf("%w: %w", accesstoken.ErrUnknownKey, err)
	}

	call := c.refetchForUnknownKID(kid)
	if call == nil {
		c.metrics.refetchesSuppressed.Inc()
		return nil, fmt.Errorf("%w: kid %q is not in the key set, and the last refetch was less than %s ago",
			accesstoken.ErrUnknownKey, kid, c.cfg.UnknownKidCooldown)
	}
	c.waitForFetch(ctx, call)

	// The fetch may have replaced the set, or made it stale by failing.
	set, err = c.usableSet()
	if err != nil {
		return nil, err
	}
	if key, ok := set.keys[kid]; ok {
		return key, nil
	}
	return nil, fmt.Errorf("%w: kid %q is not in the key set", accesstoken.ErrUnknownKey, kid)
}

// Close stops the background refresh, cancels a fetch in flight and waits
// for both to end. It unregisters the metrics. Later calls do nothing.
func (c *Cache) Close() {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	c.closed = true
	started := c.started
	stop := c.stopAfterFunc
	c.mu.Unlock()

	c.cancel()
	if stop != nil {
		stop()
	}
	c.wg.Wait()
	c.client.CloseIdleConnections()
	c.metrics.unregister()
	if started {
		c.logger.Info("stopped jwks refresh")
	}
}

// usableSet returns the key set in use, or an error wrapping
// accesstoken.ErrKeysUnavailable when there is none or it is too old.
func (c *Cache) usableSet() (*keySet, error) {
	set := c.set.Load()
	if set == nil {
		return nil, fmt.Errorf("%w: no key set loaded yet", accesstoken.ErrKeysUnavailable)
	}
	if age := c.now().Sub(set.fetchedAt); age > c.cfg.MaxStaleAge {
		return nil, fmt.Errorf("%w: key set fetched %s ago, more than the max stale age %s",
			accesstoken.ErrKeysUnavailable, age.Round(time.Second), c.cfg.MaxStaleAge)
	}
	return set, nil
}

// refetchForUnknownKID returns the fetch in flight, or starts one if the
// cooldown allows it, or returns nil when the cooldown suppresses it.
func (c *Cache) refetchForUnknownKID(kid string) *fetchCall {
	c.mu.Lock()
	defer c.mu.Unlock()

	if c.inflight != nil {
		return c.inflight
	}
	now := c.now()
	if !c.lastUnknownRefetch.IsZero() && now.Sub(c.lastUnknownRefetch) < c.cfg.UnknownKidCooldown {
		return nil
	}
	c.lastUnknownRefetch = now
	c.logger.Info("refetching key set for an unknown kid", "kid", kid)
	return c.startFetchLocked()
}

// waitForFetch waits until call is done, ctx is done or UnknownKidWait has
// passed, whichever comes first.
func (c *Cache) waitForFetch(ctx context.Context, call *fetchCall) {
	timer := time.NewTimer(c.cfg.UnknownKidWait)
	defer timer.Stop()

	select {
	case <-call.done:
	case <-ctx.Done():
	case <-timer.C:
	}
}

// install makes set the key set in use.
func (c *Cache) install(set *keySet) {
	old := c.set.Swap(set)
	if old == nil || !sameKeyIDs(old, set) {
		c.logger.Info("key set updated", "key_ids", set.keyIDs(), "fetched_at", set.fetchedAt)
	}
}

// loadPersisted installs the persisted key set if it passes the same checks
// as a fetched one. Its age counts from the time it was fetched.
func (c *Cache) loadPersisted(ctx context.Context) {
	if c.persister == nil {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, c.cfg.FetchTimeout)
	defer cancel()

	body, fetchedAt, err := c.persister.LoadKeySet(ctx)
	if err != nil {
		c.metrics.persistErrors.WithLabelValues("load").Inc()
		c.logger.Warn("failed to load the persisted key set", "err", err)
		return
	}
	if body == nil {
		c.logger.Info("no persisted key set")
		return
	}

	parsed, err := parseKeySet(body)
	if err != nil {
		c.metrics.persistErrors.WithLabelValues("load").Inc()
		c.logger.Warn("ignored the persisted key set", "err", err)
		return
	}
	c.logRejectedKeys("persisted", parsed.rejected)

	// A fetch time in the future, from a clock that ran ahead, would
	// otherwise extend the set's life beyond MaxStaleAge.
	if now := c.now(); fetchedAt.After(now) {
		fetchedAt = now
	}
	c.install(&keySet{keys: parsed.keys, fetchedAt: fetchedAt})
	if _, err := c.usableSet(); err != nil {
		c.logger.Warn("persisted key set is too old to use", "err", err)
	}
}

func waitTimer(ctx context.Context, d time.Duration) bool {
	timer := time.NewTimer(d)
	defer timer.Stop()

	select {
	case <-timer.C:
		return true
	case <-ctx.Done():
		return false
	}
}

func redactedURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return ""
	}
	return u.Redacted()
}
