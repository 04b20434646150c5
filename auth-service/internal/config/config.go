// Package config reads the auth service's settings from flags and AUTH_*
// environment variables and validates them before anything is opened.
package config

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"example.com/todoapp/auth-service/internal/auth"
	"example.com/todoapp/auth-service/internal/keys"
	"example.com/todoapp/auth-service/internal/store"
)

// EnvPrefix is prepended to the upper-cased flag name, with dashes turned
// into underscores, to form a flag's environment variable.
const EnvPrefix = "AUTH_"

// KEKEnv is the environment variable that carries the key-encryption key.
// There is no flag for the value, so it never shows in a process list.
const KEKEnv = "AUTH_KEK"

// PreviousKEKEnv is the environment variable that carries the previous
// key-encryption key, which opens the stored signing keys until
// `keys rewrap` re-seals them under the current KEK.
const PreviousKEKEnv = "AUTH_PREVIOUS_KEK"

// KEKBytes is the size of the key-encryption key (AES-256).
const KEKBytes = 32

// MaxAccessTokenTTL is the hard upper bound of -access-token-ttl.
const MaxAccessTokenTTL = time.Hour

// MaxRefreshReuseGrace bounds -refresh-reuse-grace, because a long grace
// window gives a thief the same window to use a stolen token unnoticed.
const MaxRefreshReuseGrace = 5 * time.Minute

// Config contains every setting of the auth service.
type Config struct {
	GRPCAddr    string
	HTTPAddr    string
	DatabaseURL string // empty: SQLite at SQLitePath()
	// DatabaseURLFile names a file that Parse reads DatabaseURL from, so
	// that a URL with a password can come from a mounted secret.
	DatabaseURLFile string
	DataDir         string
	Dev             bool
	KEKFile         string
	// PreviousKEKFile names a file with the KEK that sealed the stored
	// signing keys before the current KEK. It is needed only between a KEK
	// change and the end of `keys rewrap`.
	PreviousKEKFile string
	Issuer          string
	Audiences       []string
	AccessTokenTTL  time.Duration
	RefreshTokenTTL time.Duration
	// RefreshReuseGrace is how long a second use of a refresh token is
	// taken for a client retry instead of theft.
	RefreshReuseGrace   time.Duration
	ShutdownTimeout     time.Duration
	LogFormat           string // json or text
	LogLevel            slog.Level
	TrustedProxies      []netip.Prefix
	MaxConcurrentHashes int
	Throttle            auth.ThrottleConfig
	Keys                keys.Config

	// kekBase64 is the value of AUTH_KEK, kept out of logs.
	kekBase64 string
	// previousKEKBase64 is the value of AUTH_PREVIOUS_KEK, kept out of logs.
	previousKEKBase64 string
}

// SQLitePath returns the SQLite file used when DatabaseURL is empty.
func (c Config) SQLitePath() string {
	return filepath.Join(c.DataDir, "auth.db")
}

// DevKEKPath returns the file that -dev generates the KEK into.
func (c Config) DevKEKPath() string {
	return filepath.Join(c.DataDir, "kek")
}

// FlagSet returns a flag set named name whose flags fill c, starting from
// the defaults. Parse it with Parse, which also applies the environment.
func (c *Config) FlagSet(name string, output io.Writer) *flag.FlagSet {
	*c = Config{
		Throttle: auth.DefaultThrottleConfig(),
		Keys:     keys.DefaultConfig(),
	}
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(output)

	fs.StringVar(&c.GRPCAddr, "grpc-addr", "127.0.0.1:50051", "`address` of the gRPC listener")
	fs.StringVar(&c.HTTPAddr, "http-addr", "127.0.0.1:8081", "`address` of the HTTP listener for the JWKS, discovery and /metrics")
	fs.StringVar(&c.DatabaseURL, "database-url", "", "PostgreSQL `URL` (postgres://...); empty uses SQLite at <data-dir>/auth.db")
	fs.StringVar(&c.DatabaseURLFile, "database-url-file", "", "`file` containing the PostgreSQL URL, surrounding whitespace trimmed; use instead of -database-url")
	fs.StringVar(&c.DataDir, "data-dir", "data/auth", "`directory` for the SQLite database and the -dev key-encryption key")
	fs.BoolVar(&c.Dev, "dev", false, "local mode: generate a missing key-encryption key into <data-dir>/kek while the database contains no signing keys")
	fs.StringVar(&c.KEKFile, "kek-file", "", "`file` with the key-encryption key, base64 of 32 bytes (or set "+KEKEnv+")")
	fs.StringVar(&c.PreviousKEKFile, "previous-kek-file", "",
		"`file` with the previous key-encryption key, which opens stored signing keys until `keys rewrap` re-seals them under the current one (or set "+PreviousKEKEnv+")")
	fs.StringVar(&c.Issuer, "issuer", "http://127.0.0.1:8081", "issuer `URL`, the iss claim of access tokens")
	fs.Func("audience", "comma-separated `list` of audiences put in the aud claim (default todo-service)", func(s string) error {
		c.Audiences = splitList(s)
		return nil
	})
	c.Audiences = []string{"todo-service"}
	fs.DurationVar(&c.AccessTokenTTL, "access-token-ttl", 15*time.Minute, "lifetime of access tokens, at most 1h")
	fs.DurationVar(&c.RefreshTokenTTL, "refresh-token-ttl", 720*time.Hour, "lifetime of each refresh token; every refresh issues a new one")
	fs.DurationVar(&c.RefreshReuseGrace, "refresh-reuse-grace", 10*time.Second,
		"time after a refresh during which reusing the old refresh token is rejected without revoking the session, at most 5m")
	fs.DurationVar(&c.ShutdownTimeout, "shutdown-timeout", 15*time.Second, "longest wait for in-flight requests on SIGTERM")
	fs.StringVar(&c.LogFormat, "log-format", "json", "log `format`: json or text")
	fs.TextVar(&c.LogLevel, "log-level", slog.LevelInfo, "log `level`: debug, info, warn or error")
	fs.Func("trusted-proxies", "comma-separated `CIDRs` of proxies whose x-forwarded-for header gives the client address (default none)", func(s string) error {
		prefixes, err := parsePrefixes(s)
		c.TrustedProxies = prefixes
		return err
	})
	fs.IntVar(&c.MaxConcurrentHashes, "max-concurrent-hashes", 8, "max argon2id computations at once; each uses 19 MiB")

	fs.Int64Var(&c.Throttle.AccountFreeFailures, "login-account-free-failures", c.Throttle.AccountFreeFailures,
		"failed logins an account may have before it is blocked; a successful login resets the count")
	fs.Int64Var(&c.Throttle.AddressFreeFailures, "login-address-free-failures", c.Throttle.AddressFreeFailures,
		"failed logins a client address (IPv6: its /64) may have before it is blocked; successes do not reset the count")
	fs.DurationVar(&c.Throttle.BaseDelay, "login-backoff-base", c.Throttle.BaseDelay, "first block after the free failures; doubles with each further failure")
	fs.DurationVar(&c.Throttle.MaxDelay, "login-backoff-max", c.Throttle.MaxDelay, "longest block")
	fs.DurationVar(&c.Throttle.ResetAfter, "login-failure-reset", c.Throttle.ResetAfter, "time without failures after which a counter starts again")

	fs.IntVar(&c.Keys.KeyBits, "key-bits", c.Keys.KeyBits, "RSA modulus size of new signing keys")
	fs.DurationVar(&c.Keys.RotationPeriod, "key-rotation-period", c.Keys.RotationPeriod, "how long a signing key signs before the next one replaces it")
	fs.DurationVar(&c.Keys.PublishLead, "key-publish-lead", c.Keys.PublishLead, "how long a new key is published in the JWKS before it signs")
	fs.DurationVar(&c.Keys.RetiredLifetime, "key-retired-lifetime", c.Keys.RetiredLifetime, "how long a retired key stays published after it stops signing")
	fs.DurationVar(&c.Keys.VerifierClockSkew, "key-verifier-clock-skew", c.Keys.VerifierClockSkew, "clock skew the token verifiers allow")
	fs.DurationVar(&c.Keys.VerifierRefreshInterval, "key-verifier-refresh-interval", c.Keys.VerifierRefreshInterval,
		"longest time a verifier keeps a fetched JWKS (the todo-service -jwks-max-refresh-interval)")
	fs.DurationVar(&c.Keys.JWKSMaxAge, "key-jwks-max-age", c.Keys.JWKSMaxAge, "cap on the Cache-Control max-age of the JWKS response")
	fs.DurationVar(&c.Keys.PollInterval, "key-poll-interval", c.Keys.PollInterval, "how often each replica reloads the signing keys from the database")
	return fs
}

// Parse parses args into c with fs from FlagSet, then sets every flag that
// args did not set from its environment variable, reads -database-url-file
// when set, and returns the arguments left after the flags. getenv is
// os.Getenv in production.
func Parse(c *Config, fs *flag.FlagSet, args []string, getenv func(string) string) ([]string, error) {
	if err := fs.Parse(args); err != nil {
		return nil, err
	}

	set := make(map[string]bool)
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })

	var errs []error
	fs.VisitAll(func(f *flag.Flag) {
		if set[f.Name] {
			return
		}
		env := EnvName(f.Name)
		value, ok := lookup(getenv, env)
		if !ok {
			return
		}
		if err := fs.Set(f.Name, value); err != nil {
			errs = append(errs, fmt.Errorf("invalid %s %q: %w", env, value, err))
		}
	})
	c.kekBase64 = getenv(KEKEnv)
	c.previousKEKBase64 = getenv(PreviousKEKEnv)
	c.Keys.MaxTokenLifetime = c.AccessTokenTTL
	if err := c.readDatabaseURLFile(); err != nil {
		errs = append(errs, err)
	}
	return fs.Args(), errors.Join(errs...)
}

func (c *Config) readDatabaseURLFile() error {
	if c.DatabaseURLFile == "" {
		return nil
	}
	if c.DatabaseURL != "" {
		return errors.New("both -database-url and -database-url-file are set: use one")
	}
	raw, err := os.ReadFile(c.DatabaseURLFile)
	if err != nil {
		return fmt.Errorf("read -database-url-file: %w", err)
	}
	c.DatabaseURL = strings.TrimSpace(string(raw))
	if c.DatabaseURL == "" {
		return fmt.Errorf("invalid -database-url-file %s: the file is empty", c.DatabaseURLFile)
	}
	return nil
}

// EnvName returns the environment variable of a flag.
func EnvName(flagName string) string {
	return EnvPrefix + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

func lookup(getenv func(string) string, name string) (string, bool) {
	value := getenv(name)
	return value, value != ""
}

// Validate returns an error listing every invalid setting, without the
// key-encryption key, which only the commands that touch signing keys need
// (see ValidateKEKSource). It opens no file.
func (c Config) Validate() error {
	var errs []error
	add := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }

	if c.GRPCAddr == "" {
		add("missing -grpc-addr")
	}
	if c.HTTPAddr == "" {
		add("missing -http-addr")
	}
	if c.DatabaseURL != "" && !strings.HasPrefix(c.DatabaseURL, "postgres://") && !strings.HasPrefix(c.DatabaseURL, "postgresql://") {
		add("invalid -database-url: must start with postgres:// or postgresql://, or be empty for SQLite")
	}
	if c.DataDir == "" {
		add("missing -data-dir")
	}
	if err := checkIssuer(c.Issuer); err != nil {
		errs = append(errs, err)
	}
	if len(c.Audiences) == 0 {
		add("missing -audience: give at least one audience")
	}
	if c.AccessTokenTTL <= 0 || c.AccessTokenTTL > MaxAccessTokenTTL {
		add("invalid -access-token-ttl %s: must be greater than 0 and at most %s", c.AccessTokenTTL, MaxAccessTokenTTL)
	}
	if c.RefreshTokenTTL <= 0 {
		add("invalid -refresh-token-ttl %s: must be greater than 0", c.RefreshTokenTTL)
	}
	if c.RefreshReuseGrace < 0 || c.RefreshReuseGrace > MaxRefreshReuseGrace {
		add("invalid -refresh-reuse-grace %s: must be between 0 and %s", c.RefreshReuseGrace, MaxRefreshReuseGrace)
	}
	if c.ShutdownTimeout <= 0 {
		add("invalid -shutdown-timeout %s: must be greater than 0", c.ShutdownTimeout)
	}
	if c.LogFormat != "json" && c.LogFormat != "text" {
		add("invalid -log-format %q: must be json or text", c.LogFormat)
	}
	if c.MaxConcurrentHashes < 1 {
		add("invalid -max-concurrent-hashes %d: must be at least 1", c.MaxConcurrentHashes)
	}
	if err := validateThrottle(c.Throttle); err != nil {
		errs = append(errs, err)
	}
	if err := c.Keys.Validate(); err != nil {
		errs = append(errs, fmt.Errorf("invalid -key-* settings: %w", err))
	}
	return errors.Join(errs...)
}

func checkIssuer(issuer string) error {
	u, err := url.Parse(issuer)
	switch {
	case issuer == "":
		return errors.New("missing -issuer")
	case err != nil:
		return fmt.Errorf("invalid -issuer %q: %w", issuer, err)
	case u.Scheme != "https" && u.Scheme != "http", u.Host == "":
		return fmt.Errorf("invalid -issuer %q: must be an http or https URL with a host", issuer)
	case u.RawQuery != "" || u.Fragment != "" || u.User != nil:
		return fmt.Errorf("invalid -issuer %q: must have no query, fragment or user information", issuer)
	case strings.HasSuffix(issuer, "/"):
		return fmt.Errorf("invalid -issuer %q: remove the trailing slash, because verifiers compare the issuer exactly", issuer)
	}
	return nil
}

func validateThrottle(t auth.ThrottleConfig) error {
	var errs []error
	if t.AccountFreeFailures < 1 {
		errs = append(errs, fmt.Errorf("invalid -login-account-free-failures %d: must be at least 1", t.AccountFreeFailures))
	}
	if t.AddressFreeFailures < 1 {
		errs = append(errs, fmt.Errorf("invalid -login-address-free-failures %d: must be at least 1", t.AddressFreeFailures))
	}
	if t.BaseDelay <= 0 {
		errs = append(errs, fmt.Errorf("invalid -login-backoff-base %s: must be greater than 0", t.BaseDelay))
	}
	if t.MaxDelay < t.BaseDelay {
		errs = append(errs, fmt.Errorf("invalid -login-backoff-max %s: must be at least -login-backoff-base %s", t.MaxDelay, t.BaseDelay))
	}
	if t.ResetAfter <= 0 {
		errs = append(errs, fmt.Errorf("invalid -login-failure-reset %s: must be greater than 0", t.ResetAfter))
	}
	return errors.Join(errs...)
}

// ValidateKEKSource checks that a key-encryption key is configured, that
// AUTH_KEK and AUTH_PREVIOUS_KEK values decode, and that the -kek-file and
// -previous-kek-file exist, without reading them.
func (c Config) ValidateKEKSource() error {
	switch {
	case c.kekBase64 != "":
		_, err := decodeKEK(c.kekBase64)
		if err != nil {
			return fmt.Errorf("invalid %s: %w", KEKEnv, err)
		}
		if c.KEKFile != "" {
			return fmt.Errorf("both %s and -kek-file are set: use one", KEKEnv)
		}
	case c.KEKFile != "":
		if _, err := os.Stat(c.KEKFile); err != nil {
			return fmt.Errorf("invalid -kek-file: %w", err)
		}
	case !c.Dev:
		return fmt.Errorf("missing key-encryption key: set %s or -kek-file (or use -dev for a local run)", KEKEnv)
	}

	switch {
	case c.previousKEKBase64 != "":
		if _, err := decodeKEK(c.previousKEKBase64); err != nil {
			return fmt.Errorf("invalid %s: %w", PreviousKEKEnv, err)
		}
		if c.PreviousKEKFile != "" {
			return fmt.Errorf("both %s and -previous-kek-file are set: use one", PreviousKEKEnv)
		}
	case c.PreviousKEKFile != "":
		if _, err := os.Stat(c.PreviousKEKFile); err != nil {
			return fmt.Errorf("invalid -previous-kek-file: %w", err)
		}
	}
	return nil
}

// KEKSource describes where the KEK comes from, for the start-up log.
func (c Config) KEKSource() string {
	switch {
	case c.kekBase64 != "":
		return "env " + KEKEnv
	case c.KEKFile != "":
		return "file " + c.KEKFile
	default:
		return "dev file " + c.DevKEKPath()
	}
}

// PreviousKEKSource describes where the previous KEK comes from, for the
// start-up log. It is "none" when no previous KEK is configured.
func (c Config) PreviousKEKSource() string {
	switch {
	case c.previousKEKBase64 != "":
		return "env " + PreviousKEKEnv
	case c.PreviousKEKFile != "":
		return "file " + c.PreviousKEKFile
	default:
		return "none"
	}
}

// LoadPreviousKEK returns the previous key-encryption key from
// AUTH_PREVIOUS_KEK or -previous-kek-file, or nil when neither is set.
func (c Config) LoadPreviousKEK() ([]byte, error) {
	switch {
	case c.previousKEKBase64 != "":
		kek, err := decodeKEK(c.previousKEKBase64)
		if err != nil {
			return nil, fmt.Errorf("invalid %s: %w", PreviousKEKEnv, err)
		}
		return kek, nil
	case c.PreviousKEKFile != "":
		return readKEKFile(c.PreviousKEKFile)
	}
	return nil, nil
}

// ErrDevKEKMissing is returned by LoadKEK in -dev mode when <data-dir>/kek
// does not exist and the caller does not allow generating it.
var ErrDevKEKMissing = errors.New("missing -dev key-encryption key file")

// LoadKEK returns the key-encryption key from AUTH_KEK or -kek-file. In
// -dev mode without either, it reads <data-dir>/kek. When that file is
// missing, it generates it with mode 0600 (and logs a warning) if generate
// is true, and otherwise returns an error wrapping ErrDevKEKMissing. The
// caller sets generate only when no signing key is sealed yet, because a
// new KEK cannot open keys sealed with a lost one.
func (c Config) LoadKEK(logger *slog.Logger, generate bool) ([]byte, error) {
	switch {
	case c.kekBase64 != "":
		return decodeKEK(c.kekBase64)
	case c.KEKFile != "":
		return readKEKFile(c.KEKFile)
	case !c.Dev:
		return nil, fmt.Errorf("missing key-encryption key: set %s or -kek-file", KEKEnv)
	}

	path := c.DevKEKPath()
	kek, err := readKEKFile(path)
	if err == nil {
		return kek, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	if !generate {
		return nil, fmt.Errorf("%w %s", ErrDevKEKMissing, path)
	}

	kek = make([]byte, KEKBytes)
	rand.Read(kek)
	if err := os.MkdirAll(c.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("create data directory for the dev key-encryption key: %w", err)
	}
	encoded := base64.StdEncoding.EncodeToString(kek) + "\n"
	// O_EXCL makes a concurrent second start read the winner's file
	// instead of overwriting it.
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, os.ErrExist) {
		return readKEKFile(path)
	}
	if err != nil {
		return nil, fmt.Errorf("create dev key-encryption key file: %w", err)
	}
	if _, err := f.WriteString(encoded); err != nil {
		f.Close()
		return nil, fmt.Errorf("write dev key-encryption key file %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return nil, fmt.Errorf("write dev key-encryption key file %s: %w", path, err)
	}
	logger.Warn("generated a new key-encryption key for local use; do not use -dev in production",
		"path", path)
	return kek, nil
}

func readKEKFile(path string) ([]byte, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read key-encryption key file: %w", err)
	}
	kek, err := decodeKEK(string(raw))
	if err != nil {
		return nil, fmt.Errorf("invalid key-encryption key in %s: %w", path, err)
	}
	return kek, nil
}

func decodeKEK(encoded string) ([]byte, error) {
	kek, err := base64.StdEncoding.Strict().DecodeString(strings.TrimSpace(encoded))
	if err != nil {
		return nil, errors.New("not valid standard base64")
	}
	if len(kek) != KEKBytes {
		return nil, fmt.Errorf("decodes to %d bytes, must be exactly %d", len(kek), KEKBytes)
	}
	return kek, nil
}

// LogAttrs returns the effective settings for the start-up log line. The
// database URL loses its password and the KEK shows only its source.
func (c Config) LogAttrs() []slog.Attr {
	database := "sqlite " + c.SQLitePath()
	if c.DatabaseURL != "" {
		database = "postgres " + store.RedactURL(c.DatabaseURL)
	}
	proxies := make([]string, len(c.TrustedProxies))
	for i, p := range c.TrustedProxies {
		proxies[i] = p.String()
	}
	return []slog.Attr{
		slog.String("grpc_addr", c.GRPCAddr),
		slog.String("http_addr", c.HTTPAddr),
		slog.String("database", database),
		slog.String("database_url_file", c.DatabaseURLFile),
		slog.String("data_dir", c.DataDir),
		slog.Bool("dev", c.Dev),
		slog.String("kek_source", c.KEKSource()),
		slog.String("previous_kek_source", c.PreviousKEKSource()),
		slog.String("issuer", c.Issuer),
		slog.Any("audiences", c.Audiences),
		slog.Duration("access_token_ttl", c.AccessTokenTTL),
		slog.Duration("refresh_token_ttl", c.RefreshTokenTTL),
		slog.Duration("refresh_reuse_grace", c.RefreshReuseGrace),
		slog.Duration("shutdown_timeout", c.ShutdownTimeout),
		slog.String("log_format", c.LogFormat),
		slog.String("log_level", c.LogLevel.String()),
		slog.Any("trusted_proxies", proxies),
		slog.Int("max_concurrent_hashes", c.MaxConcurrentHashes),
		slog.Group("login_throttle",
			slog.Int64("account_free_failures", c.Throttle.AccountFreeFailures),
			slog.Int64("address_free_failures", c.Throttle.AddressFreeFailures),
			slog.Duration("backoff_base", c.Throttle.BaseDelay),
			slog.Duration("backoff_max", c.Throttle.MaxDelay),
			slog.Duration("failure_reset", c.Throttle.ResetAfter)),
		slog.Group("keys",
			slog.Int("bits", c.Keys.KeyBits),
			slog.Duration("rotation_period", c.Keys.RotationPeriod),
			slog.Duration("publish_lead", c.Keys.PublishLead),
			slog.Duration("retired_lifetime", c.Keys.RetiredLifetime),
			slog.Duration("verifier_clock_skew", c.Keys.VerifierClockSkew),
			slog.Duration("verifier_refresh_interval", c.Keys.VerifierRefreshInterval),
			slog.Duration("jwks_max_age", c.Keys.JWKSMaxAge),
			slog.Duration("poll_interval", c.Keys.PollInterval)),
	}
}

func splitList(s string) []string {
	var out []string
	for _, part := range strings.Split(s, ",") {
		if part = strings.TrimSpace(part); part != "" {
			out = append(out, part)
		}
	}
	return out
}

func parsePrefixes(s string) ([]netip.Prefix, error) {
	var prefixes []netip.Prefix
	for _, part := range splitList(s) {
		if !strings.Contains(part, "/") {
			addr, err := netip.ParseAddr(part)
			if err != nil {
				return nil, fmt.Errorf("invalid address %q: %w", part, err)
			}
			prefixes = append(prefixes, netip.PrefixFrom(addr.Unmap(), addr.Unmap().BitLen()))
			continue
		}
		prefix, err := netip.ParsePrefix(part)
		if err != nil {
			return nil, fmt.Errorf("invalid CIDR %q: %w", part, err)
		}
		prefixes = append(prefixes, prefix.Masked())
	}
	return prefixes, nil
}
