package auth

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"time"
)

// ThrottleConfig sets the brute-force protection of Login and
// ChangePassword. Counters live in the database, so every replica reads
// the same ones.
type ThrottleConfig struct {
	// AccountFreeFailures is how many consecutive failures an account may
	// have before attempts on it are blocked.
	AccountFreeFailures int64
	// AddressFreeFailures is the same for one client address, higher
	// because many users can share an address.
	AddressFreeFailures int64
	// BaseDelay is the first block; each further failure doubles it.
	BaseDelay time.Duration
	// MaxDelay caps the block.
	MaxDelay time.Duration
	// ResetAfter is the quiet period after which a counter restarts.
	ResetAfter time.Duration
}

// DefaultThrottleConfig returns the defaults of the -login-* flags.
func DefaultThrottleConfig() ThrottleConfig {
	return ThrottleConfig{
		AccountFreeFailures: 5,
		AddressFreeFailures: 20,
		BaseDelay:           time.Second,
		MaxDelay:            15 * time.Minute,
		ResetAfter:          time.Hour,
	}
}

func (c ThrottleConfig) validate() error {
	if c.AccountFreeFailures < 1 || c.AddressFreeFailures < 1 {
		return fmt.Errorf("invalid login throttle: free failures (account %d, address %d) must be at least 1",
			c.AccountFreeFailures, c.AddressFreeFailures)
	}
	if c.BaseDelay <= 0 || c.MaxDelay < c.BaseDelay || c.ResetAfter <= 0 {
		return fmt.Errorf("invalid login throttle: need 0 < base delay (%s) <= max delay (%s) and reset after (%s) > 0",
			c.BaseDelay, c.MaxDelay, c.ResetAfter)
	}
	return nil
}

// backoff returns the block after failures consecutive failures when free
// of them are allowed: none up to free, then BaseDelay doubling per failure
// up to MaxDelay.
func (c ThrottleConfig) backoff(failures, free int64) time.Duration {
	over := failures - free
	if over <= 0 {
		return 0
	}
	delay := c.BaseDelay
	for i := int64(1); i < over && delay < c.MaxDelay; i++ {
		delay *= 2
	}
	return min(delay, c.MaxDelay)
}

const (
	accountKeyPrefix = "account:"
	addressKeyPrefix = "address:"
)

func accountThrottleKey(email string) string { return accountKeyPrefix + email }

// addressThrottleKey counts IPv6 clients by their /64 prefix, because one
// client usually controls a whole /64 and could rotate through it.
func addressThrottleKey(addr netip.Addr) string {
	addr = addr.Unmap()
	if addr.Is6() {
		prefix, _ := addr.Prefix(64)
		return addressKeyPrefix + prefix.String()
	}
	return addressKeyPrefix + addr.String()
}

func (s *Service) checkThrottle(ctx context.Context, keys []string) error {
	until, err := s.store.LoginBlockedUntil(ctx, keys)
	if err != nil {
		return err
	}
	if wait := until.Sub(s.now()); wait > 0 {
		return &TooManyAttemptsError{RetryAfter: wait}
	}
	return nil
}

func (s *Service) recordFailure(ctx context.Context, keys []string) error {
	now := s.now()
	for _, key := range keys {
		free := s.cfg.Throttle.AccountFreeFailures
		if strings.HasPrefix(key, addressKeyPrefix) {
			free = s.cfg.Throttle.AddressFreeFailures
		}
		policy := FailurePolicy{
			ResetAfter: s.cfg.Throttle.ResetAfter,
			Delay:      func(failures int64) time.Duration { return s.cfg.Throttle.backoff(failures, free) },
		}
		if _, err := s.store.RecordLoginFailure(ctx, key, now, policy); err != nil {
			return err
		}
	}
	return nil
}
