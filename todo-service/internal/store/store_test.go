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

// openNamedPostgres opens a migrated store whose PostgreSQL connections
// carry a unique application_name, and returns it with that name and a
// second pool for ending them.
func openNamedPostgres(t *testing.T) (*store.Store, string, *sql.DB) {
	t.Helper()

	base := storetest.PostgresURL(t)
	u, err := url.Parse(base)
	if err != nil {
		t.Fatalf("parse PostgreSQL URL: %v", err)
	}
	appName := "todo_lost_conn_" + strconv.FormatInt(time.Now().UnixNano(), 36)
	query := u.Query()
	query.Set("application_name", appName)
	u.RawQuery = query.Encode()

	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	s, err := store.Open(ctx, store.Options{DatabaseURL: u.String()})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	if _, err := s.Migrate(ctx); err != nil {
		t.Fatalf("Migrate: %v", err)
	}

	admin, err := sql.Open("postgres", base)
	if err != nil {
		t.Fatalf("open admin connection: %v", err)
	}
	t.Cleanup(func() { admin.Close() })
	return s, appName, admin
}

// fillPool makes the store's pool hold n connections by running n queries
// at once. They stay in the pool as idle connections afterwards.
func fillPool(ctx context.Context, t *testing.T, s *store.Store, n int) {
	t.Helper()

	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			_, errs[i] = s.DB().ExecContext(ctx, "SELECT pg_sleep(0.1)")
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("query %d to fill the pool: %v", i, err)
		}
	}
}

// endConnections ends every PostgreSQL backend whose application_name is
// appName and waits until they are gone, so the server has closed their
// sockets. It returns how many it ended.
func endConnections(ctx context.Context, t *testing.T, admin *sql.DB, appName string) int {
	t.Helper()

	var ended int
	err := admin.QueryRowContext(ctx,
		`SELECT COUNT(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = $1`, appName).Scan(&ended)
	if err != nil {
		t.Fatalf("end the connections of %s: %v", appName, err)
	}
	if ended == 0 {
		t.Fatalf("found no connection with application_name %s to end", appName)
	}

	for {
		var left int
		err := admin.QueryRowContext(ctx,
			`SELECT COUNT(*) FROM pg_stat_activity WHERE application_name = $1`, appName).Scan(&left)
		if err != nil {
			t.Fatalf("count the connections of %s: %v", appName, err)
		}
		if left == 0 {
			return ended
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%d connections of %s still open: %v", left, appName, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// TestPreparedStatementsAfterLostConnections prepares every statement of
// the hot paths, ends all of the store's PostgreSQL connections from
// another session, and checks that the same calls succeed at once on new
// connections, with the data intact. database/sql retries a query that
// meets a closed connection on another one, and prepares the statement
// there.
func TestPreparedStatementsAfterLostConnections(t *testing.T) {
	s, appName, admin := openNamedPostgres(t)
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()

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
	fillPool(ctx, t, s, 5)

	ended := endConnections(ctx, t, admin, appName)
	if err := calls(); err != nil {
		t.Fatalf("after %d connections ended: %v", ended, err)
	}

	got, err := s.GetTodo(ctx, user, created.ID)
	if err != nil {
		t.Fatalf("GetTodo after: %v", err)
	}
	if got.Title != "after" {
		t.Errorf("title after the updates = %q, want %q", got.Title, "after")
	}
}

// TestPingAfterLostConnections checks that one Ping succeeds after the
// server ended every idle connection of the pool, as readiness checks
// need: the database itself is up.
func TestPingAfterLostConnections(t *testing.T) {
	s, appName, admin := openNamedPostgres(t)
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()

	fillPool(ctx, t, s, 5)
	ended := endConnections(ctx, t, admin, appName)
	if err := s.Ping(ctx); err != nil {
		t.Errorf("Ping after %d idle connections ended = %v, want nil", ended, err)
	}
}
