package systemtest

import (
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"net/url"
	"os"
	"testing"

	_ "github.com/lib/pq" // PostgreSQL driver for database/sql
)

// PostgresAdminURL returns TEST_DATABASE_URL, skipping the test or failing it
// like PostgresURL when it is not set.
func PostgresAdminURL(tb testing.TB) string {
	tb.Helper()

	base := os.Getenv("TEST_DATABASE_URL")
	if base == "" {
		if os.Getenv("REQUIRE_POSTGRES") == "1" {
			tb.Fatal("TEST_DATABASE_URL is not set but REQUIRE_POSTGRES=1")
		}
		tb.Skip("TEST_DATABASE_URL is not set; skipping the PostgreSQL test")
	}
	return base
}

// PostgresURL creates an empty database on the server named by
// TEST_DATABASE_URL, drops it when the test ends, and returns its URL.
// Without TEST_DATABASE_URL the test is skipped, or fails when
// REQUIRE_POSTGRES=1.
func PostgresURL(tb testing.TB) string {
	tb.Helper()

	base := PostgresAdminURL(tb)

	admin, err := sql.Open("postgres", base)
	if err != nil {
		tb.Fatalf("open TEST_DATABASE_URL: %v", err)
	}
	defer admin.Close()

	suffix := make([]byte, 6)
	rand.Read(suffix)
	name := "systemtest_" + hex.EncodeToString(suffix)
	if _, err := admin.Exec("CREATE DATABASE " + name); err != nil {
		tb.Fatalf("create database %s: %v", name, err)
	}
	tb.Cleanup(func() {
		admin, err := sql.Open("postgres", base)
		if err != nil {
			tb.Errorf("open TEST_DATABASE_URL to drop %s: %v", name, err)
			return
		}
		defer admin.Close()
		if _, err := admin.Exec("DROP DATABASE IF EXISTS " + name + " WITH (FORCE)"); err != nil {
			tb.Errorf("drop database %s: %v", name, err)
		}
	})

	u, err := url.Parse(base)
	if err != nil {
		tb.Fatalf("parse TEST_DATABASE_URL: %v", err)
	}
	u.Path = "/" + name
	return u.String()
}
