package store_test

import (
	"context"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"example.com/todoapp/auth-service/internal/store"
	"example.com/todoapp/auth-service/internal/store/storetest"
)

func TestMigrateSQLiteTwice(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()

	s, err := store.Open(ctx, store.Config{SQLitePath: filepath.Join(t.TempDir(), "sub", "auth.db")})
	if err != nil {
		t.Fatalf("Open() = %v", err)
	}
	defer s.Close()

	want := migrationNames(t, store.SQLite)
	got, err := s.Migrate(ctx)
	if err != nil {
		t.Fatalf("first Migrate() = %v", err)
	}
	if !slices.Equal(got, want) {
		t.Errorf("first Migrate() applied %v, want %v", got, want)
	}

	got, err = s.Migrate(ctx)
	if err != nil {
		t.Fatalf("second Migrate() = %v", err)
	}
	if len(got) != 0 {
		t.Errorf("second Migrate() applied %v, want nothing", got)
	}
}

func TestOpenRejectsUnknownScheme(t *testing.T) {
	_, err := store.Open(t.Context(), store.Config{DatabaseURL: "mysql://user:secret@db/auth"})
	if err == nil {
		t.Fatal("Open(mysql URL) = nil error, want an error")
	}
	if got := err.Error(); !contains(got, "REDACTED@db") || contains(got, "secret") {
		t.Errorf("Open(mysql URL) error = %q, want the URL without its password", got)
	}
}

func TestOpenRedactsQueryPassword(t *testing.T) {
	_, err := store.Open(t.Context(), store.Config{DatabaseURL: "mysql://db/auth?user=app&password=secret"})
	if err == nil {
		t.Fatal("Open(mysql URL) = nil error, want an error")
	}
	if got := err.Error(); !contains(got, "password=xxxxx") || contains(got, "secret") {
		t.Errorf("Open(mysql URL) error = %q, want the URL with password=xxxxx", got)
	}
}

func TestRedactURL(t *testing.T) {
	tests := []struct {
		in, want string
	}{
		{"postgres://127.0.0.1:5432/db?sslmode=disable&password=s3cret&user=postgres",
			"postgres://127.0.0.1:5432/db?password=xxxxx&sslmode=disable&user=postgres"},
		{"postgres://app:s3cret@db:5432/auth", "postgres://REDACTED@db:5432/auth"},
		{"postgres://app:s3cret@db/auth?password=other", "postgres://REDACTED@db/auth?password=xxxxx"},
		{"postgres://db/auth?sslmode=disable", "postgres://db/auth?sslmode=disable"},
	}
	for _, tt := range tests {
		if got := store.RedactURL(tt.in); got != tt.want {
			t.Errorf("RedactURL(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

// TestMigrateConcurrentPostgres runs the migrations from several connections
// at once against one database and checks that each applies exactly once.
func TestMigrateConcurrentPostgres(t *testing.T) {
	databaseURL := storetest.NewPostgresDatabase(t)
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()

	const runners = 8
	stores := make([]*store.Store, runners)
	for i := range stores {
		s, err := store.Open(ctx, store.Config{DatabaseURL: databaseURL})
		if err != nil {
			t.Fatalf("Open() = %v", err)
		}
		t.Cleanup(func() { s.Close() })
		stores[i] = s
	}

	applied := make([][]string, runners)
	errs := make([]error, runners)
	var wg sync.WaitGroup
	for i, s := range stores {
		wg.Go(func() { applied[i], errs[i] = s.Migrate(ctx) })
	}
	wg.Wait()

	var all []string
	for i := range runners {
		if errs[i] != nil {
			t.Errorf("Migrate() in runner %d = %v", i, errs[i])
		}
		all = append(all, applied[i]...)
	}
	slices.Sort(all)
	if want := migrationNames(t, store.Postgres); !slices.Equal(all, want) {
		t.Errorf("migrations applied over all runners = %v, want each of %v once", all, want)
	}

	versions, err := stores[0].AppliedMigrations(ctx)
	if err != nil {
		t.Fatalf("AppliedMigrations() = %v", err)
	}
	if got, want := len(versions), len(migrationNames(t, store.Postgres)); got != want {
		t.Errorf("schema_migrations has %d rows, want %d", got, want)
	}
}

func migrationNames(t *testing.T, dialect store.Dialect) []string {
	t.Helper()
	migrations, err := store.Migrations(dialect)
	if err != nil {
		t.Fatalf("Migrations(%s) = %v", dialect, err)
	}
	var names []string
	for _, m := range migrations {
		names = append(names, m.Name)
	}
	return names
}

func contains(s, sub string) bool { return strings.Contains(s, sub) }
