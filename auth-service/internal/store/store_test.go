package store_test

import (
	"context"
	"fmt"
	"net/url"
	"strings"
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

// TestPreparedStatementsAfterLostConnections runs the prepared reads, ends
// all of the store's PostgreSQL connections from another session, and
// checks that the same reads work again on new connections.
func TestPreparedStatementsAfterLostConnections(t *testing.T) {
	adminURL := storetest.PostgresURL(t)
	dbURL := storetest.NewPostgresDatabase(t)
	parsed, err := url.Parse(dbURL)
	if err != nil {
		t.Fatalf("parse database URL: %v", err)
	}
	dbName := strings.TrimPrefix(parsed.Path, "/")

	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	s, err := store.Open(ctx, store.Config{DatabaseURL: dbURL})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer s.Close()
	if _, err := s.Migrate(ctx); err != nil {
		t.Fatalf("Migrate: %v", err)
	}

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

	admin, err := sqlx.Open("postgres", adminURL)
	if err != nil {
		t.Fatalf("open admin connection: %v", err)
	}
	defer admin.Close()
	var ended int
	err = admin.GetContext(ctx, &ended, `SELECT COUNT(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = $1`, dbName)
	if err != nil {
		t.Fatalf("end the store's connections: %v", err)
	}
	if ended == 0 {
		t.Fatalf("found no connection to database %s to end", dbName)
	}

	// A read that meets an ended connection may fail, as it would without
	// prepared statements, and the pool then drops that connection. With at
	// most `ended` such connections, the reads succeed within ended+1
	// rounds.
	var lastErr error
	for round := 0; round <= ended; round++ {
		if lastErr = reads(); lastErr == nil {
			break
		}
		t.Logf("round %d after ending %d connections: %v", round, ended, lastErr)
	}
	if lastErr != nil {
		t.Fatalf("reads still fail after %d rounds: %v", ended+1, lastErr)
	}
}
