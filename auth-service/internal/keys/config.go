package keys

import (
	"errors"
	"fmt"
	"time"
)

// Bounds on Config.KeyBits. The verifiers reject keys below 2048 bits.
// Generating a 4096-bit key took up to 8 s, and an 8192-bit key about
// 3 minutes, with rsa.GenerateKey (Go 1.26) on a 2-core x86-64 machine.
const (
	MinKeyBits = 2048
	MaxKeyBits = 4096
)

// Config sets the key lifecycle. Every duration is checked by Validate
// against the verifiers' settings that the auth service cannot read, so the
// Verifier fields must be at least as large as the real verifiers use.
type Config struct {
	// KeyBits is the RSA modulus size of new keys.
	KeyBits int

	// RotationPeriod is how long a key signs before the next key replaces
	// it.
	RotationPeriod time.Duration

	// PublishLead is how long a next key is published in the JWKS before it
	// starts to sign.
	PublishLead time.Duration

	// RetiredLifetime is how long a retired key stays published after it
	// stops signing. The key is deleted when it ends.
	RetiredLifetime time.Duration

	// MaxTokenLifetime is the maximum lifetime (exp - iat) of an access
	// token signed by these keys.
	MaxTokenLifetime time.Duration

	// VerifierClockSkew is the clock skew that verifiers allow when they
	// check exp and nbf.
	VerifierClockSkew time.Duration

	// VerifierRefreshInterval is the maximum time a verifier keeps a
	// fetched JWKS before it fetches again (the todo-service
	// -jwks-max-refresh-interval).
	VerifierRefreshInterval time.Duration

	// JWKSMaxAge caps the Cache-Control max-age of the JWKS response.
	JWKSMaxAge time.Duration

	// PollInterval is how often each replica reloads the keys from the
	// database and performs the transitions that are due.
	PollInterval time.Duration

	// Now returns the current time. Nil means time.Now.
	Now func() time.Time
}

// DefaultConfig returns the defaults: 2048-bit keys rotated every 30 days,
// each published 24 hours before it signs and 24 hours after it stops.
func DefaultConfig() Config {
	return Config{
		KeyBits:                 2048,
		RotationPeriod:          720 * time.Hour,
		PublishLead:             24 * time.Hour,
		RetiredLifetime:         24 * time.Hour,
		MaxTokenLifetime:        time.Hour,
		VerifierClockSkew:       30 * time.Second,
		VerifierRefreshInterval: 10 * time.Minute,
		JWKSMaxAge:              5 * time.Minute,
		PollInterval:            30 * time.Second,
	}
}

// MinPublishLead returns the minimum safe PublishLead. A replica serves a
// JWKS loaded at most StaleAfter ago, an HTTP cache may keep that response
// for up to JWKSMaxAge, and a verifier may keep it for
// VerifierRefreshInterval more.
func (c Config) MinPublishLead() time.Duration {
	return c.StaleAfter() + c.JWKSMaxAge + c.VerifierRefreshInterval
}

// StaleAfter returns the maximum age of a replica's last load from the
// database at which it still serves the JWKS: two poll intervals, so one
// slow or failed poll is tolerated.
func (c Config) StaleAfter() time.Duration {
	return 2 * c.PollInterval
}

// MinRetiredLifetime returns the minimum safe RetiredLifetime. The last
// token a key signs stays valid for MaxTokenLifetime plus the verifiers'
// clock skew. One more verifier cache lifetime (JWKSMaxAge plus
// VerifierRefreshInterval) is added as a margin.
func (c Config) MinRetiredLifetime() time.Duration {
	return c.MaxTokenLifetime + c.VerifierClockSkew + c.JWKSMaxAge + c.VerifierRefreshInterval
}

// Validate returns an error that lists every invalid setting, including
// any that would let a verifier meet a key that is not yet published or
// already deleted.
func (c Config) Validate() error {
	var errs []error
	add := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf(format, args...))
	}

	if c.KeyBits < MinKeyBits || c.KeyBits > MaxKeyBits {
		add("invalid key bits %d: must be between %d and %d", c.KeyBits, MinKeyBits, MaxKeyBits)
	}

	positive := []struct {
		name  string
		value time.Duration
	}{
		{"rotation period", c.RotationPeriod},
		{"publish lead", c.PublishLead},
		{"retired lifetime", c.RetiredLifetime},
		{"max token lifetime", c.MaxTokenLifetime},
		{"verifier refresh interval", c.VerifierRefreshInterval},
		{"poll interval", c.PollInterval},
	}
	for _, p := range positive {
		if p.value <= 0 {
			add("invalid %s %v: must be greater than zero", p.name, p.value)
		}
	}
	if c.VerifierClockSkew < 0 {
		add("invalid verifier clock skew %v: must not be negative", c.VerifierClockSkew)
	}
	if c.JWKSMaxAge < 0 {
		add("invalid JWKS max age %v: must not be negative", c.JWKSMaxAge)
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}

	if minimum := c.MinPublishLead(); c.PublishLead < minimum {
		add("publish lead %v is too short: verifiers could meet a key before they fetch it; "+
			"it must be at least 2 * poll interval + JWKS max age + verifier refresh interval = %v", c.PublishLead, minimum)
	}
	if c.RotationPeriod <= c.PublishLead {
		add("rotation period %v must be longer than the publish lead %v", c.RotationPeriod, c.PublishLead)
	}
	if minimum := c.MinRetiredLifetime(); c.RetiredLifetime < minimum {
		add("retired lifetime %v is too short: tokens signed by a retired key would outlive it; "+
			"it must be at least max token lifetime + verifier clock skew + JWKS max age + "+
			"verifier refresh interval = %v", c.RetiredLifetime, minimum)
	}
	return errors.Join(errs...)
}

func (c Config) now() time.Time {
	if c.Now != nil {
		return c.Now()
	}
	return time.Now()
}
