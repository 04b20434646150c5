package config

import (
	"encoding/base64"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

var testKEK = base64.StdEncoding.EncodeToString([]byte("0123456789abcdef0123456789abcdef"))

func parse(t *testing.T, args []string, env map[string]string) (Config, error) {
	t.Helper()
	var c Config
	fs := c.FlagSet("auth-service", io.Discard)
	if _, err := Parse(&c, fs, args, func(k string) string { return env[k] }); err != nil {
		return c, err
	}
	if err := c.Validate(); err != nil {
		return c, err
	}
	return c, c.ValidateKEKSource()
}

func TestParseDefaults(t *testing.T) {
	c, err := parse(t, []string{"-dev"}, nil)
	if err != nil {
		t.Fatalf("parse(-dev) = %v", err)
	}
	checks := []struct {
		name      string
		got, want any
	}{
		{"GRPCAddr", c.GRPCAddr, "127.0.0.1:50051"},
		{"HTTPAddr", c.HTTPAddr, "127.0.0.1:8081"},
		{"DatabaseURL", c.DatabaseURL, ""},
		{"SQLitePath", c.SQLitePath(), filepath.Join("data", "auth", "auth.db")},
		{"Issuer", c.Issuer, "http://127.0.0.1:8081"},
		{"Audiences", c.Audiences, []string{"todo-service"}},
		{"AccessTokenTTL", c.AccessTokenTTL, 15 * time.Minute},
		{"RefreshTokenTTL", c.RefreshTokenTTL, 720 * time.Hour},
		{"RefreshReuseGrace", c.RefreshReuseGrace, 10 * time.Second},
		{"ShutdownTimeout", c.ShutdownTimeout, 15 * time.Second},
		{"LogFormat", c.LogFormat, "json"},
		{"LogLevel", c.LogLevel, slog.LevelInfo},
		{"MaxConcurrentHashes", c.MaxConcurrentHashes, 8},
		{"Keys.MaxTokenLifetime", c.Keys.MaxTokenLifetime, 15 * time.Minute},
	}
	for _, check := range checks {
		if diff := cmp.Diff(check.want, check.got); diff != "" {
			t.Errorf("default %s mismatch (-want +got):\n%s", check.name, diff)
		}
	}
}

func TestParseEnvAndFlags(t *testing.T) {
	env := map[string]string{
		"AUTH_GRPC_ADDR":       "127.0.0.1:1",
		"AUTH_AUDIENCE":        "todo-service, admin ,",
		"AUTH_TRUSTED_PROXIES": "10.0.0.0/8, 192.0.2.7",
		"AUTH_LOG_LEVEL":       "debug",
		"AUTH_KEK":             testKEK,
		"AUTH_HTTP_ADDR":       "127.0.0.1:2",
	}
	c, err := parse(t, []string{"-http-addr", "127.0.0.1:3"}, env)
	if err != nil {
		t.Fatalf("parse() = %v", err)
	}
	if c.GRPCAddr != "127.0.0.1:1" {
		t.Errorf("GRPCAddr = %q, want the AUTH_GRPC_ADDR value", c.GRPCAddr)
	}
	if c.HTTPAddr != "127.0.0.1:3" {
		t.Errorf("HTTPAddr = %q, want the flag to win over AUTH_HTTP_ADDR", c.HTTPAddr)
	}
	if diff := cmp.Diff([]string{"todo-service", "admin"}, c.Audiences); diff != "" {
		t.Errorf("Audiences mismatch (-want +got):\n%s", diff)
	}
	var proxies []string
	for _, p := range c.TrustedProxies {
		proxies = append(proxies, p.String())
	}
	if diff := cmp.Diff([]string{"10.0.0.0/8", "192.0.2.7/32"}, proxies); diff != "" {
		t.Errorf("TrustedProxies mismatch (-want +got):\n%s", diff)
	}
	if c.LogLevel != slog.LevelDebug {
		t.Errorf("LogLevel = %v, want debug", c.LogLevel)
	}
	if got := c.KEKSource(); got != "env AUTH_KEK" {
		t.Errorf("KEKSource() = %q, want %q", got, "env AUTH_KEK")
	}
}

func TestValidateRejects(t *testing.T) {
	kekFile := filepath.Join(t.TempDir(), "kek")
	if err := os.WriteFile(kekFile, []byte(testKEK+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		args    []string
		env     map[string]string
		wantErr string
	}{
		{"missing KEK", nil, nil, "missing key-encryption key"},
		{"short KEK", nil, map[string]string{"AUTH_KEK": "c2hvcnQ="}, "decodes to 5 bytes"},
		{"KEK not base64", nil, map[string]string{"AUTH_KEK": "!!!"}, "not valid standard base64"},
		{"KEK file missing", []string{"-kek-file", "/nonexistent/kek"}, nil, "invalid -kek-file"},
		{"KEK twice", []string{"-kek-file", kekFile}, map[string]string{"AUTH_KEK": testKEK}, "use one"},
		{"previous KEK short", nil, map[string]string{"AUTH_KEK": testKEK, "AUTH_PREVIOUS_KEK": "c2hvcnQ="}, "invalid AUTH_PREVIOUS_KEK"},
		{"previous KEK file missing", []string{"-previous-kek-file", "/nonexistent/kek"}, map[string]string{"AUTH_KEK": testKEK}, "invalid -previous-kek-file"},
		{"previous KEK twice", []string{"-previous-kek-file", kekFile}, map[string]string{"AUTH_KEK": testKEK, "AUTH_PREVIOUS_KEK": testKEK}, "use one"},
		{"access TTL too long", []string{"-dev", "-access-token-ttl", "2h"}, nil, "invalid -access-token-ttl"},
		{"access TTL zero", []string{"-dev", "-access-token-ttl", "0s"}, nil, "invalid -access-token-ttl"},
		{"issuer trailing slash", []string{"-dev", "-issuer", "https://auth.example.com/"}, nil, "trailing slash"},
		{"issuer not URL", []string{"-dev", "-issuer", "auth.example.com"}, nil, "invalid -issuer"},
		{"empty audience", []string{"-dev", "-audience", " , "}, nil, "missing -audience"},
		{"mysql URL", []string{"-dev", "-database-url", "mysql://x"}, nil, "invalid -database-url"},
		{"log format", []string{"-dev", "-log-format", "xml"}, nil, "invalid -log-format"},
		{"grace too long", []string{"-dev", "-refresh-reuse-grace", "1h"}, nil, "invalid -refresh-reuse-grace"},
		{"hash limit", []string{"-dev", "-max-concurrent-hashes", "0"}, nil, "invalid -max-concurrent-hashes"},
		{"backoff max", []string{"-dev", "-login-backoff-max", "1ms"}, nil, "invalid -login-backoff-max"},
		{"key bits", []string{"-dev", "-key-bits", "1024"}, nil, "invalid key bits"},
		{"bad env value", []string{"-dev"}, map[string]string{"AUTH_SHUTDOWN_TIMEOUT": "soon"}, "invalid AUTH_SHUTDOWN_TIMEOUT"},
		{"bad proxy", []string{"-dev", "-trusted-proxies", "10.0.0.0/33"}, nil, "invalid CIDR"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := parse(t, tt.args, tt.env)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("parse(%q) = %v, want an error containing %q", tt.args, err, tt.wantErr)
			}
		})
	}
}

func TestLoadKEKDevGeneratesOnce(t *testing.T) {
	dir := t.TempDir()
	c, err := parse(t, []string{"-dev", "-data-dir", dir}, nil)
	if err != nil {
		t.Fatalf("parse() = %v", err)
	}
	logger := slog.New(slog.DiscardHandler)

	first, err := c.LoadKEK(logger, true)
	if err != nil {
		t.Fatalf("first LoadKEK() = %v", err)
	}
	if len(first) != KEKBytes {
		t.Errorf("LoadKEK() returned %d bytes, want %d", len(first), KEKBytes)
	}
	info, err := os.Stat(c.DevKEKPath())
	if err != nil {
		t.Fatalf("stat dev KEK file: %v", err)
	}
	if mode := info.Mode().Perm(); mode != 0o600 {
		t.Errorf("dev KEK file mode = %o, want 600", mode)
	}

	second, err := c.LoadKEK(logger, true)
	if err != nil {
		t.Fatalf("second LoadKEK() = %v", err)
	}
	if string(first) != string(second) {
		t.Error("second LoadKEK() returned a new key, want the stored one")
	}
}

func TestLoadKEKDevWithoutGenerate(t *testing.T) {
	dir := t.TempDir()
	c, err := parse(t, []string{"-dev", "-data-dir", dir}, nil)
	if err != nil {
		t.Fatalf("parse() = %v", err)
	}

	_, err = c.LoadKEK(slog.New(slog.DiscardHandler), false)
	if !errors.Is(err, ErrDevKEKMissing) {
		t.Errorf("LoadKEK(generate=false) = %v, want ErrDevKEKMissing", err)
	}
	if _, statErr := os.Stat(c.DevKEKPath()); !errors.Is(statErr, os.ErrNotExist) {
		t.Errorf("LoadKEK(generate=false) left %s behind (stat: %v), want no file", c.DevKEKPath(), statErr)
	}
}

func TestLogAttrsHideSecrets(t *testing.T) {
	c, err := parse(t, []string{"-database-url", "postgres://app:s3cret@db:5432/auth"}, map[string]string{"AUTH_KEK": testKEK})
	if err != nil {
		t.Fatalf("parse() = %v", err)
	}
	var b strings.Builder
	slog.New(slog.NewTextHandler(&b, nil)).LogAttrs(t.Context(), slog.LevelInfo, "settings", c.LogAttrs()...)
	out := b.String()
	for _, secret := range []string{"s3cret", testKEK} {
		if strings.Contains(out, secret) {
			t.Errorf("log line %q contains a secret %q", out, secret)
		}
	}
	if !strings.Contains(out, "REDACTED@db:5432") {
		t.Errorf("log line %q does not name the database host", out)
	}
}

func TestLogAttrsHideQueryPassword(t *testing.T) {
	databaseURL := "postgres://127.0.0.1:5432/db?sslmode=disable&password=s3cret&user=postgres"
	c, err := parse(t, []string{"-database-url", databaseURL}, map[string]string{"AUTH_KEK": testKEK})
	if err != nil {
		t.Fatalf("parse() = %v", err)
	}
	var b strings.Builder
	slog.New(slog.NewTextHandler(&b, nil)).LogAttrs(t.Context(), slog.LevelInfo, "settings", c.LogAttrs()...)
	out := b.String()
	if strings.Contains(out, "s3cret") {
		t.Errorf("log line %q contains the password", out)
	}
	if !strings.Contains(out, "password=xxxxx") {
		t.Errorf("log line %q does not show the redacted password parameter", out)
	}
	if !strings.Contains(out, "sslmode=disable") {
		t.Errorf("log line %q lost the other query parameters", out)
	}
}

func TestDatabaseURLFile(t *testing.T) {
	dir := t.TempDir()
	urlFile := filepath.Join(dir, "database-url")
	if err := os.WriteFile(urlFile, []byte("  postgres://app:s3cret@db:5432/auth\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	emptyFile := filepath.Join(dir, "empty")
	if err := os.WriteFile(emptyFile, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"AUTH_KEK": testKEK}

	c, err := parse(t, nil, map[string]string{"AUTH_KEK": testKEK, "AUTH_DATABASE_URL_FILE": urlFile})
	if err != nil {
		t.Fatalf("parse(AUTH_DATABASE_URL_FILE) = %v", err)
	}
	if want := "postgres://app:s3cret@db:5432/auth"; c.DatabaseURL != want {
		t.Errorf("DatabaseURL = %q, want the trimmed file content %q", c.DatabaseURL, want)
	}

	tests := []struct {
		name    string
		args    []string
		wantErr string
	}{
		{"missing file", []string{"-database-url-file", filepath.Join(dir, "nope")}, "read -database-url-file"},
		{"empty file", []string{"-database-url-file", emptyFile}, "the file is empty"},
		{"both set", []string{"-database-url-file", urlFile, "-database-url", "postgres://x/y"}, "use one"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := parse(t, tt.args, env)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("parse(%q) = %v, want an error containing %q", tt.args, err, tt.wantErr)
			}
		})
	}
}

func TestLoadPreviousKEK(t *testing.T) {
	previous := base64.StdEncoding.EncodeToString([]byte("fedcba9876543210fedcba9876543210"))
	previousFile := filepath.Join(t.TempDir(), "previous-kek")
	if err := os.WriteFile(previousFile, []byte(previous+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name       string
		args       []string
		env        map[string]string
		want       string
		wantSource string
	}{
		{"none", nil, map[string]string{"AUTH_KEK": testKEK}, "", "none"},
		{"env", nil, map[string]string{"AUTH_KEK": testKEK, "AUTH_PREVIOUS_KEK": previous}, "fedcba9876543210fedcba9876543210", "env AUTH_PREVIOUS_KEK"},
		{"flag", []string{"-previous-kek-file", previousFile}, map[string]string{"AUTH_KEK": testKEK}, "fedcba9876543210fedcba9876543210", "file " + previousFile},
		{"env file", nil, map[string]string{"AUTH_KEK": testKEK, "AUTH_PREVIOUS_KEK_FILE": previousFile}, "fedcba9876543210fedcba9876543210", "file " + previousFile},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := parse(t, tt.args, tt.env)
			if err != nil {
				t.Fatalf("parse(%q) = %v", tt.args, err)
			}
			got, err := c.LoadPreviousKEK()
			if err != nil {
				t.Fatalf("LoadPreviousKEK() = %v", err)
			}
			if string(got) != tt.want {
				t.Errorf("LoadPreviousKEK() = %q, want %q", got, tt.want)
			}
			if source := c.PreviousKEKSource(); source != tt.wantSource {
				t.Errorf("PreviousKEKSource() = %q, want %q", source, tt.wantSource)
			}

			var b strings.Builder
			slog.New(slog.NewTextHandler(&b, nil)).LogAttrs(t.Context(), slog.LevelInfo, "settings", c.LogAttrs()...)
			for _, secret := range []string{testKEK, previous} {
				if strings.Contains(b.String(), secret) {
					t.Errorf("log line %q contains a KEK", b.String())
				}
			}
		})
	}
}
