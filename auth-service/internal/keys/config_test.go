package keys

import (
	"strings"
	"testing"
	"time"
)

func TestDefaultConfigIsValid(t *testing.T) {
	if err := DefaultConfig().Validate(); err != nil {
		t.Errorf("DefaultConfig().Validate() = %v, want nil", err)
	}
}

func TestConfigValidateRejects(t *testing.T) {
	tests := []struct {
		name   string
		change func(*Config)
		want   string
	}{
		{"key bits below 2048", func(c *Config) { c.KeyBits = 1024 }, "invalid key bits 1024"},
		{"key bits above max", func(c *Config) { c.KeyBits = 8192 }, "invalid key bits 8192"},
		{"zero rotation period", func(c *Config) { c.RotationPeriod = 0 }, "invalid rotation period"},
		{"zero poll interval", func(c *Config) { c.PollInterval = 0 }, "invalid poll interval"},
		{"negative max age", func(c *Config) { c.JWKSMaxAge = -time.Second }, "invalid JWKS max age"},
		{"negative clock skew", func(c *Config) { c.VerifierClockSkew = -time.Second }, "invalid verifier clock skew"},
		{
			"lead shorter than verifier refresh",
			func(c *Config) { c.PublishLead = 5 * time.Minute },
			"publish lead 5m0s is too short",
		},
		{
			// A replica may serve a JWKS loaded two poll intervals ago,
			// so one poll interval is not enough.
			"lead with one poll interval",
			func(c *Config) { c.PublishLead = c.VerifierRefreshInterval + c.JWKSMaxAge + c.PollInterval },
			"publish lead 15m30s is too short",
		},
		{
			"verifier refresh longer than lead",
			func(c *Config) { c.VerifierRefreshInterval = 48 * time.Hour },
			"publish lead 24h0m0s is too short",
		},
		{
			"max age cap longer than lead",
			func(c *Config) { c.JWKSMaxAge = 30 * time.Hour },
			"publish lead 24h0m0s is too short",
		},
		{
			"rotation period not longer than lead",
			func(c *Config) { c.RotationPeriod = c.PublishLead },
			"rotation period 24h0m0s must be longer than the publish lead",
		},
		{
			"retired lifetime shorter than token lifetime",
			func(c *Config) { c.RetiredLifetime = 30 * time.Minute },
			"retired lifetime 30m0s is too short",
		},
		{
			"retired lifetime without skew and cache",
			func(c *Config) { c.RetiredLifetime = c.MaxTokenLifetime },
			"retired lifetime 1h0m0s is too short",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := DefaultConfig()
			tt.change(&cfg)
			err := cfg.Validate()
			if err == nil {
				t.Fatalf("Validate() = nil, want an error containing %q", tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Validate() = %q, want it to contain %q", err, tt.want)
			}
		})
	}
}

func TestConfigValidateAcceptsMinimums(t *testing.T) {
	cfg := DefaultConfig()
	cfg.PublishLead = cfg.MinPublishLead()
	cfg.RetiredLifetime = cfg.MinRetiredLifetime()
	cfg.RotationPeriod = cfg.PublishLead + time.Second
	if err := cfg.Validate(); err != nil {
		t.Errorf("Validate() at the minimums = %v, want nil", err)
	}
}

func TestNewManagerRejectsBadInput(t *testing.T) {
	db := openSQLite(t)

	if _, err := NewManager(db, make([]byte, 16), DefaultConfig(), nil, nil); err == nil {
		t.Error("NewManager() with a 16-byte KEK = nil error, want an error")
	}
	bad := DefaultConfig()
	bad.PublishLead = time.Minute
	if _, err := NewManager(db, testKEK(), bad, nil, nil); err == nil {
		t.Error("NewManager() with an unsafe publish lead = nil error, want an error")
	}
	if _, err := NewManager(nil, testKEK(), DefaultConfig(), nil, nil); err == nil {
		t.Error("NewManager() with a nil database = nil error, want an error")
	}
}

func TestConfigValidateAcceptsFastRotation(t *testing.T) {
	// Settings for an end-to-end test that rotates every few seconds,
	// with verifiers that refetch the JWKS at least every 2 seconds.
	cfg := DefaultConfig()
	cfg.PollInterval = 250 * time.Millisecond
	cfg.JWKSMaxAge = time.Second
	cfg.VerifierRefreshInterval = 2 * time.Second
	cfg.PublishLead = 4 * time.Second
	cfg.RotationPeriod = 10 * time.Second
	cfg.MaxTokenLifetime = time.Minute
	cfg.RetiredLifetime = cfg.MaxTokenLifetime + cfg.VerifierClockSkew + 3*time.Second

	if err := cfg.Validate(); err != nil {
		t.Errorf("Validate() = %v, want nil", err)
	}
}
