package store_test

import (
	"context"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jmoiron/sqlx"

	"example.com/todoapp/auth-service/internal/auth"
	"example.com/todoapp/auth-service/internal/store"
	"example.com/todoapp/auth-service/internal/store/storetest"
)

func TestSQLiteStore(t *testing.T) {
	storetest.RunTests(t, storetest.NewSQLite)
}

func TestPostgresStore(t *testing.T) {
	storetest.PostgresURL(t)
	storetest.RunTests(t, storetest.NewPostgres)
}

// openPostgresWithAdmin opens a migrated store on a fresh database, and
// returns it with the database's name and a second pool, on the server's
// admin database, for ending the store's connections.
func openPostgresWithAdmin(t *testing.T) (*store.Store, string, *sqlx.DB) {
	t.Helper()

	adminURL := storetest.PostgresURL(t)
	dbURL := storetest.NewPostgresDatabase(t)
	parsed, err := url.Parse(dbURL)
	if err != nil {
		t.Fatalf("parse database URL: %v", err)
	}

	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	s, err := store.Open(ctx, store.Config{DatabaseURL: dbURL})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	// Registered after the database's cleanup, so it runs first and the
	// database can be dropped.
	t.Cleanup(func() { s.Close() })
	if _, err := s.Migrate(ctx); err != nil {
		t.Fatalf("Migrate: %v", err)
	}

	admin, err := sqlx.Open("postgres", adminURL)
	if err != nil {
		t.Fatalf("open admin connection: %v", err)
	}
	t.Cleanup(func() { admin.Close() })
	return s, strings.TrimPrefix(parsed.Path, "/"), admin
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

// endConnections ends every backend connected to the database dbName and
// waits until they are gone, so the server has closed their sockets. It
// returns how many it ended.
func endConnections(ctx context.Context, t *testing.T, admin *sqlx.DB, dbName string) int {
	t.Helper()

	var ended int
	err := admin.GetContext(ctx, &ended,
		`SELECT COUNT(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = $1`, dbName)
	if err != nil {
		t.Fatalf("end the connections to %s: %v", dbName, err)
	}
	if ended == 0 {
		t.Fatalf("found no connection to database %s to end", dbName)
	}

	for {
		var left int
		if err := admin.GetContext(ctx, &left, `SELECT COUNT(*) FROM pg_stat_activity WHERE datname = $1`, dbName); err != nil {
			t.Fatalf("count the connections to %s: %v", dbName, err)
		}
		if left == 0 {
			return ended
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%d connections to %s still open: %v", left, dbName, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// TestPreparedStatementsAfterLostConnections runs the prepared reads, ends
// all of the store's PostgreSQL connections from another session, and
// checks that the same reads succeed at once on new connections.
// database/sql retries a query that meets a closed connection on another
// one, and prepares the statement there.
func TestPreparedStatementsAfterLostConnections(t *testing.T) {
	s, dbName, admin := openPostgresWithAdmin(t)
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()

	now := time.Now().UTC().Truncate(time.Microsecond)
	user := auth.User{ID: uuid.NewString(), Email: "lost-conn@example.com", CreateTime: now}
	if err := s.CreateUser(ctx, user, "hash"); err != nil {
		t.Fatalf("CreateUser: %v", err)
	}
	session := auth.Session{ID: uuid.NewString(), UserID: user.ID, CreateTime: now, LastRefreshTime: now, ExpireTime: now.Add(time.Hour)}
	if err := s.CreateSession(ctx, session, "refresh-hash"); err != nil {
		t.Fatalf("CreateSession: %v", err)
	}
	reads := func() error {
		if _, _, err := s.GetUserByEmail(ctx, user.Email); err != nil {
			return fmt.Errorf("GetUserByEmail: %w", err)
		}
		if _, _, err := s.GetUserByID(ctx, user.ID); err != nil {
			return fmt.Errorf("GetUserByID: %w", err)
		}
		if _, err := s.GetSession(ctx, session.ID); err != nil {
			return fmt.Errorf("GetSession: %w", err)
		}
		return nil
	}
	if err := reads(); err != nil {
		t.Fatalf("before the connections ended: %v", err)
	}
	fillPool(ctx, t, s, 5)

	ended := endConnections(ctx, t, admin, dbName)
	if err := reads(); err != nil {
		t.Fatalf("after %d connections ended: %v", ended, err)
	}
}

// TestPingAfterLostConnections checks that one Ping succeeds after the
// server ended every idle connection of the pool, as readiness checks
// need: the database itself is up.
func TestPingAfterLostConnections(t *testing.T) {
	s, dbName, admin := openPostgresWithAdmin(t)
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()

	fillPool(ctx, t, s, 5)
	ended := endConnections(ctx, t, admin, dbName)
	if err := s.Ping(ctx); err != nil {
		t.Errorf("Ping after %d idle connections ended = %v, want nil", ended, err)
	}
}
