package store

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/jmoiron/sqlx"
)

//go:embed migrations/postgres/*.sql migrations/sqlite/*.sql
var migrationFiles embed.FS

// migrationLockID is the pg_advisory_lock key that serialises migration runs
// of every auth-service replica sharing one PostgreSQL database. The value is
// arbitrary but fixed.
const migrationLockID int64 = 0x61757468_6d696772 // "authmigr"

// Migration is one embedded SQL file.
type Migration struct {
	Version int64  // the NNNN prefix of the file name
	Name    string // the file name, for example 0001_users_sessions.sql
	SQL     string
}

// Migrations returns the embedded migrations of the dialect in version order.
// It returns an error when two files share a version or a name has no
// numeric prefix.
func Migrations(dialect Dialect) ([]Migration, error) {
	dir := path.Join("migrations", string(dialect))
	entries, err := fs.ReadDir(migrationFiles, dir)
	if err != nil {
		return nil, fmt.Errorf("read embedded migrations for %s: %w", dialect, err)
	}

	var migrations []Migration
	seen := make(map[int64]string)
	for _, entry := range entries {
		name := entry.Name()
		if entry.IsDir() || !strings.HasSuffix(name, ".sql") {
			continue
		}
		prefix, _, ok := strings.Cut(name, "_")
		version, err := strconv.ParseInt(prefix, 10, 64)
		if !ok || err != nil || version <= 0 {
			return nil, fmt.Errorf("invalid migration file name %q: want NNNN_name.sql", name)
		}
		if other, dup := seen[version]; dup {
			return nil, fmt.Errorf("migrations %q and %q share version %d", other, name, version)
		}
		seen[version] = name

		body, err := fs.ReadFile(migrationFiles, path.Join(dir, name))
		if err != nil {
			return nil, fmt.Errorf("read migration %s: %w", name, err)
		}
		migrations = append(migrations, Migration{Version: version, Name: name, SQL: string(body)})
	}

	sort.Slice(migrations, func(i, j int) bool { return migrations[i].Version < migrations[j].Version })
	return migrations, nil
}

// Migrate applies every embedded migration that the schema_migrations table
// does not list yet, each in its own transaction, and returns the names of
// the ones it applied. Several processes may call it at once: on PostgreSQL
// a session-level advisory lock serialises them, and on SQLite each
// migration transaction takes the write lock before it checks the table.
func (s *Store) Migrate(ctx context.Context) ([]string, error) {
	migrations, err := Migrations(s.dialect)
	if err != nil {
		return nil, err
	}

	// One connection for the whole run, because a PostgreSQL advisory lock
	// belongs to the session that took it.
	conn, err := s.db.Connx(ctx)
	if err != nil {
		return nil, fmt.Errorf("get connection for migrations: %w", err)
	}
	defer conn.Close()

	if s.dialect == Postgres {
		if _, err := conn.ExecContext(ctx, "SELECT pg_advisory_lock($1)", migrationLockID); err != nil {
			return nil, fmt.Errorf("take migration lock: %w", err)
		}
		defer func() {
			// The lock must go even when ctx is already cancelled, or the
			// pooled connection would keep it.
			unlockCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			defer cancel()
			if _, err := conn.ExecContext(unlockCtx, "SELECT pg_advisory_unlock($1)", migrationLockID); err != nil {
				// Discard the connection so the lock dies with its session.
				conn.Raw(func(any) error { return driver.ErrBadConn })
			}
		}()
	}

	if _, err := conn.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		version BIGINT PRIMARY KEY,
		name TEXT NOT NULL,
		apply_time BIGINT NOT NULL
	)`); err != nil {
		return nil, fmt.Errorf("create schema_migrations table: %w", err)
	}

	var applied []string
	for _, m := range migrations {
		done, err := s.applyMigration(ctx, conn, m)
		if err != nil {
			return applied, err
		}
		if done {
			applied = append(applied, m.Name)
		}
	}
	return applied, nil
}

// applyMigration runs m unless schema_migrations already lists its version,
// and reports whether it ran.
func (s *Store) applyMigration(ctx context.Context, conn *sqlx.Conn, m Migration) (bool, error) {
	tx, err := conn.BeginTxx(ctx, nil)
	if err != nil {
		return false, fmt.Errorf("begin migration %s: %w", m.Name, err)
	}
	defer tx.Rollback()

	var count int
	if err := tx.GetContext(ctx, &count, s.db.Rebind("SELECT COUNT(*) FROM schema_migrations WHERE version = ?"), m.Version); err != nil {
		return false, fmt.Errorf("check migration %s: %w", m.Name, err)
	}
	if count > 0 {
		return false, nil
	}

	if _, err := tx.ExecContext(ctx, m.SQL); err != nil {
		return false, fmt.Errorf("apply migration %s: %w", m.Name, err)
	}
	if _, err := tx.ExecContext(ctx,
		s.db.Rebind("INSERT INTO schema_migrations (version, name, apply_time) VALUES (?, ?, ?)"),
		m.Version, m.Name, time.Now().UnixMicro()); err != nil {
		return false, fmt.Errorf("record migration %s: %w", m.Name, err)
	}
	if err := tx.Commit(); err != nil {
		return false, fmt.Errorf("commit migration %s: %w", m.Name, err)
	}
	return true, nil
}

// AppliedMigrations returns the versions listed in schema_migrations, in
// order.
func (s *Store) AppliedMigrations(ctx context.Context) ([]int64, error) {
	var versions []int64
	err := s.db.SelectContext(ctx, &versions, "SELECT version FROM schema_migrations ORDER BY version")
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("list applied migrations: %w", err)
	}
	return versions, nil
}

// PendingMigrations returns the names of the embedded migrations that the
// database has not applied yet, which is all of them for a new database.
// Unlike Migrate, it changes nothing.
func (s *Store) PendingMigrations(ctx context.Context) ([]string, error) {
	migrations, err := Migrations(s.dialect)
	if err != nil {
		return nil, err
	}

	query := `SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'`
	if s.dialect == Postgres {
		query = `SELECT COUNT(*) FROM pg_catalog.pg_tables WHERE schemaname = current_schema() AND tablename = 'schema_migrations'`
	}
	var tables int
	if err := s.db.GetContext(ctx, &tables, query); err != nil {
		return nil, fmt.Errorf("look for the schema_migrations table: %w", err)
	}
	applied := make(map[int64]bool)
	if tables > 0 {
		versions, err := s.AppliedMigrations(ctx)
		if err != nil {
			return nil, err
		}
		for _, v := range versions {
			applied[v] = true
		}
	}

	var pending []string
	for _, m := range migrations {
		if !applied[m.Version] {
			pending = append(pending, m.Name)
		}
	}
	return pending, nil
}
