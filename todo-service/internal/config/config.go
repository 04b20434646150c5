// Package config reads the todo-service settings from command-line flags
// and TODO_* environment variables, and validates them.
package config

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"example.com/todoapp/todo-service/internal/jwks"
	"example.com/todoapp/todo-service/internal/store"
)

// EnvPrefix starts the name of the environment variable of every flag.
// The rest is the flag name in upper case with dashes turned into
// underscores: -grpc-addr is TODO_GRPC_ADDR.
const EnvPrefix = "TODO_"

// Values of -token-check.
const (
	// TokenCheckOffline verifies each token's signature with the public
	// keys of the JWKS cache, without calling the auth service.
	TokenCheckOffline = "offline"
	// TokenCheckIntrospect sends each token to the auth service's
	// IntrospectToken method.
	TokenCheckIntrospect = "introspect"
)

// maxIntrospectTimeout is the upper bound of -introspect-timeout, because
// a slow auth service holds up every authenticated RPC for up to the
// timeout.
const maxIntrospectTimeout = time.Minute

// Config holds every setting of the service.
type Config struct {
	GRPCAddr string
	HTTPAddr string
	// DatabaseURL is a postgres:// URL. When empty, the store is SQLite in
	// DataDir.
	DatabaseURL string
	// DatabaseURLFile names a file that contains DatabaseURL, so that a
	// password in the URL can come from a mounted secret. Parse reads it.
	DatabaseURLFile  string
	DataDir          string
	Issuer           string
	Audience         string
	ClockSkew        time.Duration
	MaxTokenLifetime time.Duration
	ShutdownTimeout  time.Duration
	// ShutdownDelay is how long health reports NOT_SERVING while the
	// server still accepts calls, before draining starts.
	ShutdownDelay time.Duration
	LogFormat     string
	LogLevel      slog.Level
	JWKS          jwks.Config

	// TokenCheck is TokenCheckOffline or TokenCheckIntrospect.
	TokenCheck string
	// IntrospectAddr is the host:port of the auth service's gRPC listener,
	// used in introspect mode only.
	IntrospectAddr string
	// IntrospectTimeout bounds one IntrospectToken call, and the readiness
	// check of the auth service, in introspect mode.
	IntrospectTimeout time.Duration
	// TokenCacheSize is the maximum number of verified tokens cached in
	// offline mode. Zero disables the cache. Introspect mode ignores it,
	// because a cached token would stay accepted after its session was
	// revoked.
	TokenCacheSize int
}

// Default returns the settings used when no flag or environment variable
// sets them.
func Default() Config {
	cfg := Config{
		GRPCAddr:         "127.0.0.1:50052",
		HTTPAddr:         "127.0.0.1:8082",
		DataDir:          "data/todo",
		Issuer:           "http://127.0.0.1:8081",
		Audience:         "todo-service",
		ClockSkew:        30 * time.Second,
		MaxTokenLifetime: time.Hour,
		ShutdownTimeout:  15 * time.Second,
		ShutdownDelay:    time.Second,
		LogFormat:        "json",
		LogLevel:         slog.LevelInfo,
		JWKS:             jwks.DefaultConfig(),

		TokenCheck:        TokenCheckOffline,
		IntrospectAddr:    "127.0.0.1:50051",
		IntrospectTimeout: 2 * time.Second,
		TokenCacheSize:    10000,
	}
	cfg.JWKS.URL = "http://127.0.0.1:8081/.well-known/jwks.json"
	return cfg
}

// Usage lists the commands of todo-service. Both take the flags that Parse
// reads, and Parse prints it before them for -h.
const Usage = `Usage:
  todo-service [serve] [flags]   run the gRPC and HTTP servers until SIGINT
                                 or SIGTERM, after migrating (the default)
  todo-service migrate [flags]   apply the database migrations and exit
`

// Parse returns the settings from args, falling back to the environment
// that getenv reads and then to Default. A flag given in args wins over
// its environment variable. Usage text for -h goes to output, and then
// Parse returns flag.ErrHelp.
func Parse(name string, args []string, getenv func(string) string, output io.Writer) (Config, error) {
	cfg := Default()
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(output)

	fs.StringVar(&cfg.GRPCAddr, "grpc-addr", cfg.GRPCAddr, "host:port of the gRPC listener")
	fs.StringVar(&cfg.HTTPAddr, "http-addr", cfg.HTTPAddr, "host:port of the HTTP listener that serves /metrics")
	fs.StringVar(&cfg.DatabaseURL, "database-url", cfg.DatabaseURL,
		"PostgreSQL URL (postgres://...); when empty, SQLite in the data directory")
	fs.StringVar(&cfg.DatabaseURLFile, "database-url-file", cfg.DatabaseURLFile,
		"file that contains the PostgreSQL URL, surrounding white space trimmed; use instead of -database-url")
	fs.StringVar(&cfg.DataDir, "data-dir", cfg.DataDir, "directory of the SQLite database file todo.db")
	fs.StringVar(&cfg.Issuer, "issuer", cfg.Issuer, "expected iss claim of access tokens, compared exactly")
	fs.StringVar(&cfg.Audience, "audience", cfg.Audience, "audience that the aud claim of access tokens must contain")
	fs.DurationVar(&cfg.ClockSkew, "clock-skew", cfg.ClockSkew, "clock difference tolerated when checking exp, nbf and iat")
	fs.DurationVar(&cfg.MaxTokenLifetime, "max-token-lifetime", cfg.MaxTokenLifetime,
		"maximum exp minus iat of an accepted access token")
	fs.DurationVar(&cfg.ShutdownTimeout, "shutdown-timeout", cfg.ShutdownTimeout,
		"time that in-flight RPCs get to finish after SIGTERM before they are cancelled")
	fs.DurationVar(&cfg.ShutdownDelay, "shutdown-delay", cfg.ShutdownDelay,
		"time after SIGTERM during which health reports NOT_SERVING but new calls are still served, so load balancers can stop routing first")
	fs.StringVar(&cfg.LogFormat, "log-format", cfg.LogFormat, "log format: json or text")
	fs.TextVar(&cfg.LogLevel, "log-level", cfg.LogLevel, "minimum log level: debug, info, warn or error")

	fs.StringVar(&cfg.JWKS.URL, "jwks-url", cfg.JWKS.URL, "URL of the auth service's JWKS document")
	fs.DurationVar(&cfg.JWKS.MinRefreshInterval, "jwks-min-refresh-interval", cfg.JWKS.MinRefreshInterval,
		"shortest time between two scheduled JWKS fetches, even when Cache-Control max-age is shorter")
	fs.DurationVar(&cfg.JWKS.MaxRefreshInterval, "jwks-max-refresh-interval", cfg.JWKS.MaxRefreshInterval,
		"longest time between two scheduled JWKS fetches, and the period when the response has no max-age")
	fs.DurationVar(&cfg.JWKS.UnknownKidCooldown, "jwks-unknown-kid-cooldown", cfg.JWKS.UnknownKidCooldown,
		"minimum time between two JWKS fetches caused by tokens with an unknown kid")
	fs.DurationVar(&cfg.JWKS.UnknownKidWait, "jwks-unknown-kid-wait", cfg.JWKS.UnknownKidWait,
		"maximum time a request waits for a JWKS fetch caused by an unknown kid")
	fs.DurationVar(&cfg.JWKS.MaxStaleAge, "jwks-max-stale-age", cfg.JWKS.MaxStaleAge,
		"age of the last good key set after which tokens are rejected with UNAVAILABLE")
	fs.DurationVar(&cfg.JWKS.FetchTimeout, "jwks-fetch-timeout", cfg.JWKS.FetchTimeout, "timeout of one JWKS fetch")
	fs.Int64Var(&cfg.JWKS.MaxBodyBytes, "jwks-max-body-bytes", cfg.JWKS.MaxBodyBytes,
		"maximum size of a JWKS response body in bytes")

	fs.StringVar(&cfg.TokenCheck, "token-check", cfg.TokenCheck,
		"how access tokens are checked: offline (signature against the JWKS keys) or introspect (one call to the auth service per request)")
	fs.StringVar(&cfg.IntrospectAddr, "introspect-addr", cfg.IntrospectAddr,
		"host:port of the auth service's gRPC listener; used with -token-check introspect")
	fs.DurationVar(&cfg.IntrospectTimeout, "introspect-timeout", cfg.IntrospectTimeout,
		"timeout of one IntrospectToken call; used with -token-check introspect")
	fs.IntVar(&cfg.TokenCacheSize, "token-cache-size", cfg.TokenCacheSize,
		"maximum number of verified tokens cached with -token-check offline; 0 disables the cache, and introspect mode ignores it")

	fs.Usage = func() {
		fmt.Fprintf(output, "%s\nEvery flag can also be set by an environment variable, "+
			"for example -grpc-addr by %sGRPC_ADDR. A flag wins over its variable.\n\nFlags:\n", Usage, EnvPrefix)
		fs.PrintDefaults()
	}

	if err := fs.Parse(args); err != nil {
		return Config{}, err
	}
	if fs.NArg() > 0 {
		return Config{}, fmt.Errorf("unexpected argument %q: %s takes flags only", fs.Arg(0), name)
	}

	// Environment variables fill the flags that args did not set.
	explicit := make(map[string]bool)
	fs.Visit(func(f *flag.Flag) { explicit[f.Name] = true })
	var errs []error
	fs.VisitAll(func(f *flag.Flag) {
		if explicit[f.Name] {
			return
		}
		env := EnvName(f.Name)
		value := getenv(env)
		if value == "" {
			return
		}
		if err := fs.Set(f.Name, value); err != nil {
			errs = append(errs, fmt.Errorf("invalid %s: %w", env, err))
		}
	})
	if len(errs) > 0 {
		return Config{}, errors.Join(errs...)
	}

	if err := cfg.readDatabaseURLFile(); err != nil {
		return Config{}, err
	}
	return cfg, nil
}

// readDatabaseURLFile sets DatabaseURL from the file DatabaseURLFile names.
// Its errors never contain the file's content.
func (c *Config) readDatabaseURLFile() error {
	if c.DatabaseURLFile == "" {
		return nil
	}
	if c.DatabaseURL != "" {
		return errors.New("both -database-url and -database-url-file are set: use one of them")
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

// EnvName returns the environment variable that sets the flag named flagName.
func EnvName(flagName string) string {
	return EnvPrefix + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// Validate returns an error that lists every invalid setting, or nil.
func (c Config) Validate() error {
	var errs []error
	add := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf(format, args...))
	}

	if err := checkListenAddr(c.GRPCAddr); err != nil {
		add("invalid -grpc-addr %q: %w", c.GRPCAddr, err)
	}
	if err := checkListenAddr(c.HTTPAddr); err != nil {
		add("invalid -http-addr %q: %w", c.HTTPAddr, err)
	}
	if c.DatabaseURL != "" {
		if err := checkDatabaseURL(c.DatabaseURL); err != nil {
			add("invalid -database-url: %w", err)
		}
	} else if c.DataDir == "" {
		add("-data-dir is empty: set it, or set -database-url to use PostgreSQL")
	}

	if c.Issuer == "" || strings.TrimSpace(c.Issuer) != c.Issuer {
		add("invalid -issuer %q: must be non-empty with no surrounding white space", c.Issuer)
	}
	if c.Audience == "" || strings.TrimSpace(c.Audience) != c.Audience {
		add("invalid -audience %q: must be non-empty with no surrounding white space", c.Audience)
	}
	// The verifier treats a zero skew as "use the default", so zero is
	// rejected here instead of silently becoming 30s.
	if c.ClockSkew <= 0 || c.ClockSkew > 5*time.Minute {
		add("invalid -clock-skew %s: must be greater than 0 and at most 5m", c.ClockSkew)
	}
	if c.MaxTokenLifetime <= 0 || c.MaxTokenLifetime > 24*time.Hour {
		add("invalid -max-token-lifetime %s: must be greater than 0 and at most 24h", c.MaxTokenLifetime)
	}
	if c.ShutdownTimeout <= 0 {
		add("invalid -shutdown-timeout %s: must be greater than 0", c.ShutdownTimeout)
	}
	if c.ShutdownDelay < 0 || c.ShutdownDelay > time.Minute {
		add("invalid -shutdown-delay %s: must be between 0 and 1m", c.ShutdownDelay)
	}
	if c.LogFormat != "json" && c.LogFormat != "text" {
		add("invalid -log-format %q: must be json or text", c.LogFormat)
	}

	c.validateTokenCheck(add)

	// jwks.Config.Validate names the settings in words, not flags.
	if err := c.JWKS.Validate(); err != nil {
		add("%w (set by the -jwks-* flags)", err)
	}

	return errors.Join(errs...)
}

// validateTokenCheck checks the settings of the token check mode. The
// introspect settings are checked only in introspect mode, which is the
// only mode that uses them.
func (c Config) validateTokenCheck(add func(format string, args ...any)) {
	switch c.TokenCheck {
	case TokenCheckOffline, TokenCheckIntrospect:
	default:
		add("invalid -token-check %q: must be %s or %s", c.TokenCheck, TokenCheckOffline, TokenCheckIntrospect)
	}
	if c.TokenCacheSize < 0 {
		add("invalid -token-cache-size %d: must be 0 (no cache) or more", c.TokenCacheSize)
	}
	if c.TokenCheck != TokenCheckIntrospect {
		return
	}

	if c.IntrospectAddr == "" {
		add("-introspect-addr is empty: -token-check introspect needs the auth service's gRPC address")
	} else if err := checkDialAddr(c.IntrospectAddr); err != nil {
		add("invalid -introspect-addr %q: %w", c.IntrospectAddr, err)
	}
	if c.IntrospectTimeout <= 0 || c.IntrospectTimeout > maxIntrospectTimeout {
		add("invalid -introspect-timeout %s: must be greater than 0 and at most %s", c.IntrospectTimeout, maxIntrospectTimeout)
	}
}

// LogAttrs returns the effective settings for the start-up log line. The
// database URL has its password redacted.
func (c Config) LogAttrs() []slog.Attr {
	database := "sqlite"
	if c.DatabaseURL != "" {
		database = store.RedactURL(c.DatabaseURL)
	}
	return []slog.Attr{
		slog.String("grpc_addr", c.GRPCAddr),
		slog.String("http_addr", c.HTTPAddr),
		slog.String("database", database),
		slog.String("database_url_file", c.DatabaseURLFile),
		slog.String("data_dir", c.DataDir),
		slog.String("issuer", c.Issuer),
		slog.String("audience", c.Audience),
		slog.Duration("clock_skew", c.ClockSkew),
		slog.Duration("max_token_lifetime", c.MaxTokenLifetime),
		slog.Duration("shutdown_timeout", c.ShutdownTimeout),
		slog.Duration("shutdown_delay", c.ShutdownDelay),
		slog.String("log_format", c.LogFormat),
		slog.String("log_level", c.LogLevel.String()),
		slog.String("jwks_url", store.RedactURL(c.JWKS.URL)),
		slog.Duration("jwks_min_refresh_interval", c.JWKS.MinRefreshInterval),
		slog.Duration("jwks_max_refresh_interval", c.JWKS.MaxRefreshInterval),
		slog.Duration("jwks_unknown_kid_cooldown", c.JWKS.UnknownKidCooldown),
		slog.Duration("jwks_unknown_kid_wait", c.JWKS.UnknownKidWait),
		slog.Duration("jwks_max_stale_age", c.JWKS.MaxStaleAge),
		slog.Duration("jwks_fetch_timeout", c.JWKS.FetchTimeout),
		slog.Int64("jwks_max_body_bytes", c.JWKS.MaxBodyBytes),
		slog.String("token_check", c.TokenCheck),
		slog.String("introspect_addr", c.IntrospectAddr),
		slog.Duration("introspect_timeout", c.IntrospectTimeout),
		slog.Int("token_cache_size", c.TokenCacheSize),
	}
}

func checkListenAddr(addr string) error {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return errors.New("must be host:port, for example 127.0.0.1:50052")
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return errors.New("port must be a number from 0 to 65535")
	}
	return nil
}

// checkDialAddr checks an address that the service connects to: a host
// and a port from 1 to 65535.
func checkDialAddr(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil || host == "" {
		return errors.New("must be host:port, for example 127.0.0.1:50051")
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return errors.New("port must be a number from 1 to 65535")
	}
	return nil
}

// checkDatabaseURL checks the scheme. Its errors never repeat the URL,
// which may contain a password.
func checkDatabaseURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return errors.New("not a valid URL")
	}
	if u.Scheme != "postgres" && u.Scheme != "postgresql" {
		return fmt.Errorf("scheme %q is not supported: use postgres://, or leave it empty for SQLite", u.Scheme)
	}
	return nil
}
