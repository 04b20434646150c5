package store

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"embed"
	"fmt"
	"io/fs"
	"path"
	"sort"
	"strconv"
	"strings"
)

//go:embed migrations/postgres/*.sql migrations/sqlite/*.sql
var migrationFiles embed.FS

// Migration is one embedded schema change.
type Migration struct {
	Version int
	Name    string
	sql     string
}

// Migrations returns the embedded migrations of dialect in the order they
// apply.
func Migrations(dialect string) ([]Migration, error) {
	dir := path.Join("migrations", dialect)
	entries, err := fs.ReadDir(migrationFiles, dir)
	if err != nil {
		return nil, fmt.Errorf("read migrations of dialect %q: %w", dialect, err)
	}

	var migrations []Migration
	seen := make(map[int]string)
	for _, entry := range entries {
		name := entry.Name()
		number, label, ok := strings.Cut(strings.TrimSuffix(name, ".sql"), "_")
		version, err := strconv.Atoi(number)
		if !ok || err != nil || version <= 0 {
			return nil, fmt.Errorf("migration file %s: name must look like NNNN_label.sql", name)
		}
		if other, dup := seen[version]; dup {
			return nil, fmt.Errorf("migration files %s and %s have the same version %d", other, name, version)
		}
		seen[version] = name

		body, err := fs.ReadFile(migrationFiles, path.Join(dir, name))
		if err != nil {
			return nil, fmt.Errorf("read migration file %s: %w", name, err)
		}
		migrations = append(migrations, Migration{Version: version, Name: label, sql: string(body)})
	}

	sort.Slice(migrations, func(i, j int) bool { return migrations[i].Version < migrations[j].Version })
	return migrations, nil
}

// migrationLockKey names the PostgreSQL advisory lock that serialises
// migrations. It is hashed with the current schema, so databases and schemas
// that share a server do not wait for each other.
const migrationLockKey = "todo-service schema_migrations "

// Migrate applies the embedded migrations that are not yet recorded in
// schema_migrations, each in its own transaction, and returns the versions
// it applied. Several processes may call it at once on one database: on
// PostgreSQL they take turns through an advisory lock, and on both dialects
// each migration checks its record inside its own transaction.
func (s *Store) Migrate(ctx context.Context) ([]int, error) {
	migrations, err := Migrations(s.dialect)
	if err != nil {
		return nil, err
	}

	// One connection holds the advisory lock and runs every transaction,
	// because a PostgreSQL session lock belongs to its connection.
	conn, err := s.db.Conn(ctx)
	if err != nil {
		return nil, fmt.Errorf("migrate: get a connection: %w", err)
	}
	defer conn.Close()

	if s.dialect == DialectPostgres {
		lock := `SELECT pg_advisory_lock(hashtextextended($1 || COALESCE(current_schema(), ''), 0))`
		if _, err := conn.ExecContext(ctx, lock, migrationLockKey); err != nil {
			return nil, fmt.Errorf("migrate: take the advisory lock: %w", err)
		}
		defer func() {
			// The lock must go even when ctx has ended. When the unlock
			// fails, the connection is discarded, which ends the session
			// and so releases the lock.
			unlock := `SELECT pg_advisory_unlock(hashtextextended($1 || COALESCE(current_schema(), ''), 0))`
			if _, err := conn.ExecContext(context.WithoutCancel(ctx), unlock, migrationLockKey); err != nil {
				conn.Raw(func(any) error { return driver.ErrBadConn })
			}
		}()
	}

	create := `CREATE TABLE IF NOT EXISTS schema_migrations (
		version    BIGINT PRIMARY KEY,
		name       TEXT NOT NULL,
		applied_at BIGINT NOT NULL
	)`
	if _, err := conn.ExecContext(ctx, create); err != nil {
		return nil, fmt.Errorf("migrate: create schema_migrations: %w", err)
	}

	var applied []int
	for _, m := range migrations {
		done, err := s.applyMigration(ctx, conn, m)
		if err != nil {
			return applied, err
		}
		if done {
			applied = append(applied, m.Version)
		}
	}
	return applied, nil
}

// applyMigration runs m unless schema_migrations already records it, and
// reports whether it ran.
func (s *Store) applyMigration(ctx context.Context, conn *sql.Conn, m Migration) (bool, error) {
	tx, err := conn.BeginTx(ctx, nil)
	if err != nil {
		return false, fmt.Errorf("migration %04d_%s: begin: %w", m.Version, m.Name, err)
	}
	defer tx.Rollback()

	var count int
	query := s.rebind(`SELECT COUNT(*) FROM schema_migrations WHERE version = ?`)
	if err := tx.QueryRowContext(ctx, query, m.Version).Scan(&count); err != nil {
		return false, fmt.Errorf("migration %04d_%s: read schema_migrations: %w", m.Version, m.Name, err)
	}
	if count > 0 {
		return false, nil
	}

	if _, err := tx.ExecContext(ctx, m.sql); err != nil {
		return false, fmt.Errorf("migration %04d_%s: %w", m.Version, m.Name, err)
	}
	record := s.rebind(`INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)`)
	if _, err := tx.ExecContext(ctx, record, m.Version, m.Name, s.now().UnixMicro()); err != nil {
		return false, fmt.Errorf("migration %04d_%s: record: %w", m.Version, m.Name, err)
	}
	if err := tx.Commit(); err != nil {
		return false, fmt.Errorf("migration %04d_%s: commit: %w", m.Version, m.Name, err)
	}
	return true, nil
}
