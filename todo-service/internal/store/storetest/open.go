// Package storetest holds the conformance suite that every store dialect
// must pass, and helpers that open isolated, migrated stores for tests.
package storetest

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"net/url"
	"os"
	"sync"
	"testing"
	"time"

	_ "github.com/lib/pq" // registers the "postgres" driver

	"example.com/todoapp/todo-service/internal/store"
)

// Clock is a settable time source for stores and servers under test.
type Clock struct {
	mu  sync.Mutex
	now time.Time // guarded by mu
}

// NewClock returns a clock that reads start until it is advanced.
func NewClock(start time.Time) *Clock {
	return &Clock{now: start}
}

// Now returns the clock's current time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// Advance moves the clock forward by d.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// OpenSQLite opens a migrated SQLite store in a fresh temporary directory
// and closes it when the test ends.
func OpenSQLite(t testing.TB, now func() time.Time) *store.Store {
	t.Helper()
	return open(t, store.Options{DataDir: t.TempDir(), Now: now})
}

// OpenPostgres opens a migrated PostgreSQL store in a fresh schema (see
// PostgresURL) and closes it when the test ends.
func OpenPostgres(t testing.TB, now func() time.Time) *store.Store {
	t.Helper()
	return open(t, store.Options{DatabaseURL: PostgresURL(t), Now: now})
}

func open(t testing.TB, opts store.Options) *store.Store {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	s, err := store.Open(ctx, opts)
	if err != nil {
		t.Fatalf("store.Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })

	if _, err := s.Migrate(ctx); err != nil {
		t.Fatalf("Migrate: %v", err)
	}
	return s
}

// PostgresURL creates a schema with a random name in the database that
// TEST_DATABASE_URL names, drops it when the test ends, and returns a URL
// whose connections use it as their search_path. Without TEST_DATABASE_URL
// the test is skipped, or fails when REQUIRE_POSTGRES=1.
func PostgresURL(t testing.TB) string {
	t.Helper()
	base := os.Getenv("TEST_DATABASE_URL")
	if base == "" {
		if os.Getenv("REQUIRE_POSTGRES") == "1" {
			t.Fatal("TEST_DATABASE_URL is not set, but REQUIRE_POSTGRES=1 requires the PostgreSQL tests")
		}
		t.Skip("PostgreSQL tests skipped: set TEST_DATABASE_URL, for example postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable")
	}

	u, err := url.Parse(base)
	if err != nil {
		t.Fatal("TEST_DATABASE_URL is not a valid URL")
	}

	var suffix [8]byte
	rand.Read(suffix[:])
	schema := "todo_test_" + hex.EncodeToString(suffix[:])

	admin, err := sql.Open("postgres", base)
	if err != nil {
		t.Fatalf("open TEST_DATABASE_URL: %v", err)
	}
	defer admin.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// The name is generated above from hex digits only, so it is safe to
	// splice into the statement.
	if _, err := admin.ExecContext(ctx, "CREATE SCHEMA "+schema); err != nil {
		t.Fatalf("create schema %s: %v", schema, err)
	}
	t.Cleanup(func() {
		db, err := sql.Open("postgres", base)
		if err != nil {
			t.Errorf("open TEST_DATABASE_URL to drop schema %s: %v", schema, err)
			return
		}
		defer db.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := db.ExecContext(ctx, "DROP SCHEMA "+schema+" CASCADE"); err != nil {
			t.Errorf("drop schema %s: %v", schema, err)
		}
	})

	query := u.Query()
	query.Set("search_path", schema)
	u.RawQuery = query.Encode()
	return u.String()
}
