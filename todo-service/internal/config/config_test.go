package config_test

import (
	"errors"
	"flag"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"example.com/todoapp/todo-service/internal/config"
	"example.com/todoapp/todo-service/internal/jwks"
)

// ignoreFuncs skips the function and client fields of jwks.Config, which
// Parse never sets.
var ignoreFuncs = cmpopts.IgnoreFields(jwks.Config{}, "Now", "HTTPClient")

func envOf(vars map[string]string) func(string) string {
	return func(name string) string { return vars[name] }
}

func parse(t *testing.T, args []string, env map[string]string) config.Config {
	t.Helper()
	cfg, err := config.Parse("todo-service", args, envOf(env), io.Discard)
	if err != nil {
		t.Fatalf("Parse(%q): %v", args, err)
	}
	return cfg
}

func TestDefaults(t *testing.T) {
	got := parse(t, nil, nil)
	want := config.Config{
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
		JWKS: jwks.Config{
			URL:                "http://127.0.0.1:8081/.well-known/jwks.json",
			MinRefreshInterval: time.Minute,
			MaxRefreshInterval: 10 * time.Minute,
			UnknownKidCooldown: 30 * time.Second,
			UnknownKidWait:     time.Second,
			MaxStaleAge:        24 * time.Hour,
			FetchTimeout:       5 * time.Second,
			MaxBodyBytes:       1 << 20,
		},
		TokenCheck:        "offline",
		IntrospectAddr:    "127.0.0.1:50051",
		IntrospectTimeout: 2 * time.Second,
		TokenCacheSize:    10000,
	}
	if diff := cmp.Diff(want, got, ignoreFuncs); diff != "" {
		t.Errorf("Parse defaults mismatch (-want +got):\n%s", diff)
	}
	if err := got.Validate(); err != nil {
		t.Errorf("Validate(defaults) = %v, want nil", err)
	}
}

// everySetting sets every flag to a value other than its default, except
// -database-url-file, which cannot be combined with -database-url.
var everySetting = []struct {
	flag  string
	value string
}{
	{"grpc-addr", "0.0.0.0:9000"},
	{"http-addr", "[::1]:9001"},
	{"database-url", "postgres://todo:secret@db:5432/todo?sslmode=disable"},
	{"data-dir", "/var/lib/todo"},
	{"issuer", "https://auth.example.com"},
	{"audience", "todo-api"},
	{"clock-skew", "10s"},
	{"max-token-lifetime", "20m"},
	{"shutdown-timeout", "40s"},
	{"shutdown-delay", "5s"},
	{"log-format", "text"},
	{"log-level", "debug"},
	{"jwks-url", "https://auth.example.com/.well-known/jwks.json"},
	{"jwks-min-refresh-interval", "2m"},
	{"jwks-max-refresh-interval", "20m"},
	{"jwks-unknown-kid-cooldown", "45s"},
	{"jwks-unknown-kid-wait", "500ms"},
	{"jwks-max-stale-age", "12h"},
	{"jwks-fetch-timeout", "3s"},
	{"jwks-max-body-bytes", "65536"},
	{"token-check", "introspect"},
	{"introspect-addr", "auth-service:50051"},
	{"introspect-timeout", "750ms"},
	{"token-cache-size", "500"},
}

var everySettingWant = config.Config{
	GRPCAddr:         "0.0.0.0:9000",
	HTTPAddr:         "[::1]:9001",
	DatabaseURL:      "postgres://todo:secret@db:5432/todo?sslmode=disable",
	DataDir:          "/var/lib/todo",
	Issuer:           "https://auth.example.com",
	Audience:         "todo-api",
	ClockSkew:        10 * time.Second,
	MaxTokenLifetime: 20 * time.Minute,
	ShutdownTimeout:  40 * time.Second,
	ShutdownDelay:    5 * time.Second,
	LogFormat:        "text",
	LogLevel:         slog.LevelDebug,
	JWKS: jwks.Config{
		URL:                "https://auth.example.com/.well-known/jwks.json",
		MinRefreshInterval: 2 * time.Minute,
		MaxRefreshInterval: 20 * time.Minute,
		UnknownKidCooldown: 45 * time.Second,
		UnknownKidWait:     500 * time.Millisecond,
		MaxStaleAge:        12 * time.Hour,
		FetchTimeout:       3 * time.Second,
		MaxBodyBytes:       65536,
	},
	TokenCheck:        "introspect",
	IntrospectAddr:    "auth-service:50051",
	IntrospectTimeout: 750 * time.Millisecond,
	TokenCacheSize:    500,
}

func TestEveryFlag(t *testing.T) {
	var args []string
	for _, s := range everySetting {
		args = append(args, "-"+s.flag, s.value)
	}
	got := parse(t, args, nil)
	if diff := cmp.Diff(everySettingWant, got, ignoreFuncs); diff != "" {
		t.Errorf("Parse(flags) mismatch (-want +got):\n%s", diff)
	}
}

func TestEveryEnvVar(t *testing.T) {
	env := make(map[string]string)
	for _, s := range everySetting {
		env[config.EnvName(s.flag)] = s.value
	}
	got := parse(t, nil, env)
	if diff := cmp.Diff(everySettingWant, got, ignoreFuncs); diff != "" {
		t.Errorf("Parse(env) mismatch (-want +got):\n%s", diff)
	}
}

func TestEnvNames(t *testing.T) {
	tests := map[string]string{
		"grpc-addr":           "TODO_GRPC_ADDR",
		"database-url":        "TODO_DATABASE_URL",
		"jwks-max-body-bytes": "TODO_JWKS_MAX_BODY_BYTES",
	}
	for flagName, want := range tests {
		if got := config.EnvName(flagName); got != want {
			t.Errorf("EnvName(%q) = %q, want %q", flagName, got, want)
		}
	}
}

func TestFlagWinsOverEnv(t *testing.T) {
	got := parse(t, []string{"-grpc-addr", "127.0.0.1:1"}, map[string]string{
		"TODO_GRPC_ADDR": "127.0.0.1:2",
		"TODO_HTTP_ADDR": "127.0.0.1:3",
	})
	if got.GRPCAddr != "127.0.0.1:1" {
		t.Errorf("GRPCAddr = %q, want the flag value 127.0.0.1:1", got.GRPCAddr)
	}
	if got.HTTPAddr != "127.0.0.1:3" {
		t.Errorf("HTTPAddr = %q, want the env value 127.0.0.1:3", got.HTTPAddr)
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		env     map[string]string
		wantErr string
	}{
		{"bad duration flag", []string{"-clock-skew", "soon"}, nil, "clock-skew"},
		{"bad duration env", nil, map[string]string{"TODO_CLOCK_SKEW": "soon"}, "TODO_CLOCK_SKEW"},
		{"bad level env", nil, map[string]string{"TODO_LOG_LEVEL": "loud"}, "TODO_LOG_LEVEL"},
		{"bad size env", nil, map[string]string{"TODO_JWKS_MAX_BODY_BYTES": "1MB"}, "TODO_JWKS_MAX_BODY_BYTES"},
		{"bad cache size env", nil, map[string]string{"TODO_TOKEN_CACHE_SIZE": "10k"}, "TODO_TOKEN_CACHE_SIZE"},
		{"bad introspect timeout flag", []string{"-introspect-timeout", "2"}, nil, "introspect-timeout"},
		{"unknown flag", []string{"-grpc-port", "1"}, nil, "grpc-port"},
		{"stray argument", []string{"extra"}, nil, "extra"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := config.Parse("todo-service", tt.args, envOf(tt.env), io.Discard)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("Parse error = %v, want one naming %q", err, tt.wantErr)
			}
		})
	}
}

func TestParseHelp(t *testing.T) {
	var out strings.Builder
	_, err := config.Parse("todo-service serve", []string{"-h"}, envOf(nil), &out)
	if !errors.Is(err, flag.ErrHelp) {
		t.Errorf("Parse(-h) error = %v, want flag.ErrHelp", err)
	}
	for _, want := range []string{"-jwks-max-stale-age", "TODO_GRPC_ADDR", "-token-check", "-introspect-addr", "-token-cache-size"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("usage text does not mention %q:\n%s", want, out.String())
		}
	}
}

func TestDatabaseURLFile(t *testing.T) {
	dir := t.TempDir()
	urlFile := filepath.Join(dir, "database-url")
	if err := os.WriteFile(urlFile, []byte("  postgres://todo:secret@db/todo\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	got := parse(t, nil, map[string]string{"TODO_DATABASE_URL_FILE": urlFile})
	if want := "postgres://todo:secret@db/todo"; got.DatabaseURL != want {
		t.Errorf("DatabaseURL = %q, want %q", got.DatabaseURL, want)
	}

	emptyFile := filepath.Join(dir, "empty")
	if err := os.WriteFile(emptyFile, []byte(" \n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		args    []string
		wantErr string
	}{
		{"missing file", []string{"-database-url-file", filepath.Join(dir, "missing")}, "read -database-url-file"},
		{"empty file", []string{"-database-url-file", emptyFile}, "the file is empty"},
		{"both set", []string{"-database-url-file", urlFile, "-database-url", "postgres://x/y"}, "use one"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := config.Parse("todo-service", tt.args, envOf(nil), io.Discard)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("Parse error = %v, want one containing %q", err, tt.wantErr)
			}
			if err != nil && strings.Contains(err.Error(), "secret") {
				t.Errorf("Parse error %q contains the file's password", err)
			}
		})
	}
}

func TestValidateRejects(t *testing.T) {
	tests := []struct {
		name    string
		change  func(*config.Config)
		wantErr string
	}{
		{"grpc addr without port", func(c *config.Config) { c.GRPCAddr = "localhost" }, "-grpc-addr"},
		{"http addr bad port", func(c *config.Config) { c.HTTPAddr = "127.0.0.1:http" }, "-http-addr"},
		{"mysql url", func(c *config.Config) { c.DatabaseURL = "mysql://u:p@h/db" }, "-database-url"},
		{"no data dir", func(c *config.Config) { c.DataDir = "" }, "-data-dir"},
		{"empty issuer", func(c *config.Config) { c.Issuer = "" }, "-issuer"},
		{"issuer with space", func(c *config.Config) { c.Issuer = "http://a " }, "-issuer"},
		{"empty audience", func(c *config.Config) { c.Audience = "" }, "-audience"},
		{"zero clock skew", func(c *config.Config) { c.ClockSkew = 0 }, "-clock-skew"},
		{"huge clock skew", func(c *config.Config) { c.ClockSkew = time.Hour }, "-clock-skew"},
		{"zero lifetime", func(c *config.Config) { c.MaxTokenLifetime = 0 }, "-max-token-lifetime"},
		{"negative shutdown", func(c *config.Config) { c.ShutdownTimeout = -time.Second }, "-shutdown-timeout"},
		{"negative shutdown delay", func(c *config.Config) { c.ShutdownDelay = -time.Second }, "-shutdown-delay"},
		{"long shutdown delay", func(c *config.Config) { c.ShutdownDelay = 2 * time.Minute }, "-shutdown-delay"},
		{"xml logs", func(c *config.Config) { c.LogFormat = "xml" }, "-log-format"},
		{"jwks url scheme", func(c *config.Config) { c.JWKS.URL = "file:///etc/passwd" }, "jwks"},
		{"jwks intervals", func(c *config.Config) { c.JWKS.MaxRefreshInterval = time.Second }, "jwks"},
		{"jwks body", func(c *config.Config) { c.JWKS.MaxBodyBytes = 0 }, "jwks"},
		{"unknown token check", func(c *config.Config) { c.TokenCheck = "session" }, "-token-check"},
		{"upper-case token check", func(c *config.Config) { c.TokenCheck = "Offline" }, "-token-check"},
		{"negative cache size", func(c *config.Config) { c.TokenCacheSize = -1 }, "-token-cache-size"},
		{"negative cache size in introspect mode", func(c *config.Config) {
			c.TokenCheck = config.TokenCheckIntrospect
			c.TokenCacheSize = -1
		}, "-token-cache-size"},
		{"introspect without addr", func(c *config.Config) {
			c.TokenCheck = config.TokenCheckIntrospect
			c.IntrospectAddr = ""
		}, "-introspect-addr"},
		{"introspect addr without port", func(c *config.Config) {
			c.TokenCheck = config.TokenCheckIntrospect
			c.IntrospectAddr = "auth-service"
		}, "-introspect-addr"},
		{"introspect addr without host", func(c *config.Config) {
			c.TokenCheck = config.TokenCheckIntrospect
			c.IntrospectAddr = ":50051"
		}, "-introspect-addr"},
		{"introspect addr port 0", func(c *config.Config) {
			c.TokenCheck = config.TokenCheckIntrospect
			c.IntrospectAddr = "127.0.0.1:0"
		}, "-introspect-addr"},
		{"introspect addr with scheme", func(c *config.Config) {
			c.TokenCheck = config.TokenCheckIntrospect
			c.IntrospectAddr = "dns:///auth-service:50051"
		}, "-introspect-addr"},
		{"zero introspect timeout", func(c *config.Config) {
			c.TokenCheck = config.TokenCheckIntrospect
			c.IntrospectTimeout = 0
		}, "-introspect-timeout"},
		{"huge introspect timeout", func(c *config.Config) {
			c.TokenCheck = config.TokenCheckIntrospect
			c.IntrospectTimeout = 2 * time.Minute
		}, "-introspect-timeout"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := config.Default()
			tt.change(&cfg)
			err := cfg.Validate()
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("Validate() = %v, want an error naming %q", err, tt.wantErr)
			}
		})
	}
}

func TestValidateAccepts(t *testing.T) {
	tests := []struct {
		name   string
		change func(*config.Config)
	}{
		{"offline without cache", func(c *config.Config) { c.TokenCacheSize = 0 }},
		{"offline ignores introspect settings", func(c *config.Config) {
			c.IntrospectAddr = ""
			c.IntrospectTimeout = 0
		}},
		{"introspect with defaults", func(c *config.Config) { c.TokenCheck = config.TokenCheckIntrospect }},
		{"introspect ignores cache size", func(c *config.Config) {
			c.TokenCheck = config.TokenCheckIntrospect
			c.TokenCacheSize = 123456
		}},
		{"introspect at IPv6 loopback", func(c *config.Config) {
			c.TokenCheck = config.TokenCheckIntrospect
			c.IntrospectAddr = "[::1]:50051"
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := config.Default()
			tt.change(&cfg)
			if err := cfg.Validate(); err != nil {
				t.Errorf("Validate() = %v, want nil", err)
			}
		})
	}
}

func TestValidateListsEveryError(t *testing.T) {
	cfg := config.Default()
	cfg.GRPCAddr = "nope"
	cfg.LogFormat = "xml"
	err := cfg.Validate()
	if err == nil {
		t.Fatal("Validate() = nil, want errors")
	}
	for _, want := range []string{"-grpc-addr", "-log-format"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Validate() = %v, want it to name %s", err, want)
		}
	}
}

func TestDatabaseURLErrorHidesPassword(t *testing.T) {
	cfg := config.Default()
	cfg.DatabaseURL = "mysql://root:hunter2@db/todo"
	if err := cfg.Validate(); err == nil || strings.Contains(err.Error(), "hunter2") {
		t.Errorf("Validate() = %v, want an error without the password", err)
	}
}

func TestLogAttrsRedactPassword(t *testing.T) {
	cfg := config.Default()
	cfg.DatabaseURL = "postgres://todo:hunter2@db/todo?password=hunter3"

	var out strings.Builder
	logger := slog.New(slog.NewTextHandler(&out, nil))
	logger.LogAttrs(t.Context(), slog.LevelInfo, "settings", cfg.LogAttrs()...)

	if strings.Contains(out.String(), "hunter2") || strings.Contains(out.String(), "hunter3") {
		t.Errorf("settings log line contains the password:\n%s", out.String())
	}
	if !strings.Contains(out.String(), "jwks_max_stale_age=24h0m0s") {
		t.Errorf("settings log line lacks the JWKS settings:\n%s", out.String())
	}
	for _, want := range []string{"token_check=offline", "introspect_addr=127.0.0.1:50051", "introspect_timeout=2s", "token_cache_size=10000"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("settings log line lacks %s:\n%s", want, out.String())
		}
	}
}
