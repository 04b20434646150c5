// Package storetest opens isolated test databases and holds the store
// conformance suite that runs against SQLite and PostgreSQL.
package storetest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"

	"example.com/todoapp/auth-service/internal/store"
)

// PostgresURL returns TEST_DATABASE_URL. Without it the test is skipped with
// a visible message, or fails when REQUIRE_POSTGRES=1.
func PostgresURL(tb testing.TB) string {
	tb.Helper()

	raw := os.Getenv("TEST_DATABASE_URL")
	if raw == "" {
		if os.Getenv("REQUIRE_POSTGRES") == "1" {
			tb.Fatal("TEST_DATABASE_URL is not set but REQUIRE_POSTGRES=1: set it to a PostgreSQL URL")
		}
		tb.Skip("skipping PostgreSQL test: TEST_DATABASE_URL is not set")
	}
	return raw
}

// NewPostgresDatabase creates an empty PostgreSQL database with a unique
// random name on the TEST_DATABASE_URL server, drops it in tb.Cleanup, and
// returns its URL.
func NewPostgresDatabase(tb testing.TB) string {
	tb.Helper()

	adminURL := PostgresURL(tb)
	parsed, err := url.Parse(adminURL)
	if err != nil {
		tb.Fatalf("parse TEST_DATABASE_URL: %v", err)
	}

	suffix := make([]byte, 8)
	rand.Read(suffix)
	name := "auth_test_" + hex.EncodeToString(suffix)

	admin, err := sqlx.Open("postgres", adminURL)
	if err != nil {
		tb.Fatalf("open TEST_DATABASE_URL: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// The name is generated above from hex digits only, so it is safe to
	// place in the statement; CREATE DATABASE takes no bound parameters.
	if _, err := admin.ExecContext(ctx, "CREATE DATABASE "+name); err != nil {
		admin.Close()
		tb.Fatalf("create test database %s: %v", name, err)
	}

	tb.Cleanup(func() {
		defer admin.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := admin.ExecContext(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
			tb.Errorf("drop test database %s: %v", name, err)
		}
	})

	parsed.Path = "/" + name
	return parsed.String()
}

// NewPostgres opens a migrated store on a fresh PostgreSQL database that is
// dropped when the test ends.
func NewPostgres(tb testing.TB) *store.Store {
	tb.Helper()
	return open(tb, store.Config{DatabaseURL: NewPostgresDatabase(tb)})
}

// NewSQLite opens a migrated store on a fresh SQLite file in tb.TempDir().
func NewSQLite(tb testing.TB) *store.Store {
	tb.Helper()
	return open(tb, store.Config{SQLitePath: filepath.Join(tb.TempDir(), "auth.db")})
}

func open(tb testing.TB, cfg store.Config) *store.Store {
	tb.Helper()

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	s, err := store.Open(ctx, cfg)
	if err != nil {
		tb.Fatalf("store.Open(%s) = %v", cfg.Describe(), err)
	}
	// Registered before the database cleanup runs, because cleanups run in
	// reverse order and the database can only be dropped once closed.
	tb.Cleanup(func() { s.Close() })

	if _, err := s.Migrate(ctx); err != nil {
		tb.Fatalf("Migrate(%s) = %v", cfg.Describe(), err)
	}
	return s
}
