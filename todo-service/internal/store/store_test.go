package store_test

import (
	"context"
	"database/sql"
	"fmt"
	"net/url"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"example.com/todoapp/todo-service/internal/store"
	"example.com/todoapp/todo-service/internal/store/storetest"
)

func TestSQLite(t *testing.T) {
	storetest.Run(t, func(t *testing.T, now func() time.Time) *store.Store {
		return storetest.OpenSQLite(t, now)
	})
}

func TestPostgres(t *testing.T) {
	// Skips here, not in every subtest, when PostgreSQL is not configured.
	storetest.PostgresURL(t)

	storetest.Run(t, func(t *testing.T, now func() time.Time) *store.Store {
		return storetest.OpenPostgres(t, now)
	})
}

func TestOpenUnsupportedScheme(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()

	for _, url := range []string{"mysql://root:secret@127.0.0.1/todo", "sqlite:///tmp/todo.db", "://"} {
		s, err := store.Open(ctx, store.Options{DatabaseURL: url})
		if err == nil {
			s.Close()
			t.Errorf("Open(%q) succeeded, want an error", url)
			continue
		}
		if strings.Contains(err.Error(), "secret") {
			t.Errorf("Open(%q) error %q repeats the password", url, err)
		}
	}
}

func TestOpenSQLiteCreatesFile(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "nested", "data")
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()

	s, err := store.Open(ctx, store.Options{DataDir: dir})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer s.Close()

	if got, want := s.Target(), filepath.Join(dir, store.SQLiteFileName); got != want {
		t.Errorf("Target() = %q, want %q", got, want)
	}
	if got := s.Dialect(); got != store.DialectSQLite {
		t.Errorf("Dialect() = %q, want %q", got, store.DialectSQLite)
	}
}

func TestMigrationsSameVersionsBothDialects(t *testing.T) {
	versions := func(dialect string) []string {
		migrations, err := store.Migrations(dialect)
		if err != nil {
			t.Fatalf("Migrations(%q): %v", dialect, err)
		}
		var out []string
		for _, m := range migrations {
			out = append(out, m.Name)
		}
		return out
	}
	if diff := cmp.Diff(versions(store.DialectPostgres), versions(store.DialectSQLite)); diff != "" {
		t.Errorf("migration names differ between dialects (-postgres +sqlite):\n%s", diff)
	}
}

// TestMigrateConcurrentPostgres runs Migrate from several stores, each with
// its own connection pool, on one empty schema at once. Every migration
// must be applied exactly once.
func TestMigrateConcurrentPostgres(t *testing.T) {
	url := storetest.PostgresURL(t)
	testMigrateConcurrent(t, store.Options{DatabaseURL: url})
}

func TestMigrateConcurrentSQLite(t *testing.T) {
	testMigrateConcurrent(t, store.Options{DataDir: t.TempDir()})
}

func testMigrateConcurrent(t *testing.T, opts store.Options) {
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()

	const replicas = 6
	stores := make([]*store.Store, replicas)
	for i := range stores {
		s, err := store.Open(ctx, opts)
		if err != nil {
			t.Fatalf("Open replica %d: %v", i, err)
		}
		t.Cleanup(func() { s.Close() })
		stores[i] = s
	}

	applied := make([][]int, replicas)
	errs := make([]error, replicas)
	var ready, wg sync.WaitGroup
	ready.Add(replicas)
	release := make(chan struct{})
	for i, s := range stores {
		wg.Go(func() {
			ready.Done()
			<-release
			applied[i], errs[i] = s.Migrate(ctx)
		})
	}
	ready.Wait()
	close(release)
	wg.Wait()

	var all []int
	for i := range replicas {
		if errs[i] != nil {
			t.Errorf("replica %d: Migrate: %v", i, errs[i])
		}
		all = append(all, applied[i]...)
	}
	slices.Sort(all)

	migrations, err := store.Migrations(stores[0].Dialect())
	if err != nil {
		t.Fatalf("Migrations: %v", err)
	}
	var want []int
	for _, m := range migrations {
		want = append(want, m.Version)
	}
	if diff := cmp.Diff(want, all); diff != "" {
		t.Errorf("versions applied across replicas mismatch (-want +got):\n%s", diff)
	}

	var recorded []int
	if err := stores[0].DB().SelectContext(ctx, &recorded, `SELECT version FROM schema_migrations ORDER BY version`); err != nil {
		t.Fatalf("select schema_migrations: %v", err)
	}
	if diff := cmp.Diff(want, recorded); diff != "" {
		t.Errorf("schema_migrations mismatch (-want +got):\n%s", diff)
	}
}

// TestPreparedStatementsAfterLostConnections prepares every statement of
// the hot paths, ends all of the store's PostgreSQL connections from
// another session, and checks that the same calls work again on new
// connections, with the data intact.
func TestPreparedStatementsAfterLostConnections(t *testing.T) {
	base := storetest.PostgresURL(t)
	u, err := url.Parse(base)
	if err != nil {
		t.Fatalf("parse PostgreSQL URL: %v", err)
	}
	appName := "todo_lost_conn_" + strconv.FormatInt(time.Now().UnixNano(), 36)
	query := u.Query()
	query.Set("application_name", appName)
	u.RawQuery = query.Encode()

	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	s, err := store.Open(ctx, store.Options{DatabaseURL: u.String()})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer s.Close()
	if _, err := s.Migrate(ctx); err != nil {
		t.Fatalf("Migrate: %v", err)
	}

	const user = "user-lost-conn"
	created, err := s.CreateTodo(ctx, store.Todo{UserID: user, Title: "before"})
	if err != nil {
		t.Fatalf("CreateTodo before: %v", err)
	}
	calls := func() error {
		if _, err := s.GetTodo(ctx, user, created.ID); err != nil {
			return fmt.Errorf("GetTodo: %w", err)
		}
		if _, err := s.ListTodos(ctx, store.ListParams{UserID: user, Limit: 10}); err != nil {
			return fmt.Errorf("ListTodos: %w", err)
		}
		if _, err := s.UpdateTodo(ctx, store.TodoUpdate{ID: created.ID, UserID: user, Title: new("after")}); err != nil {
			return fmt.Errorf("UpdateTodo: %w", err)
		}
		return nil
	}
	if err := calls(); err != nil {
		t.Fatalf("before the connections ended: %v", err)
	}

	admin, err := sql.Open("postgres", base)
	if err != nil {
		t.Fatalf("open admin connection: %v", err)
	}
	defer admin.Close()
	var ended int
	err = admin.QueryRowContext(ctx, `SELECT COUNT(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = $1`, appName).Scan(&ended)
	if err != nil {
		t.Fatalf("end the store's connections: %v", err)
	}
	if ended == 0 {
		t.Fatalf("found no connection with application_name %s to end", appName)
	}

	// A call that meets an ended connection may fail, as it would without
	// prepared statements; the pool then drops that connection. With at
	// most `ended` such connections, the calls succeed within ended+1
	// rounds.
	var lastErr error
	for round := 0; round <= ended; round++ {
		if lastErr = calls(); lastErr == nil {
			break
		}
		t.Logf("round %d after ending %d connections: %v", round, ended, lastErr)
	}
	if lastErr != nil {
		t.Fatalf("calls still fail after %d rounds: %v", ended+1, lastErr)
	}

	got, err := s.GetTodo(ctx, user, created.ID)
	if err != nil {
		t.Fatalf("GetTodo after: %v", err)
	}
	if got.Title != "after" {
		t.Errorf("title after the updates = %q, want %q", got.Title, "after")
	}
}
