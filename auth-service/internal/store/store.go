// Package store keeps the auth service's users, sessions, refresh tokens and
// login-failure counters in PostgreSQL or SQLite through sqlx.
//
// Times are stored as BIGINT Unix microseconds in both dialects, so both
// stores behave the same in Go.
package store

import (
	"context"
	"database/sql/driver"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/jmoiron/sqlx"
	_ "github.com/lib/pq"  // registers the "postgres" driver
	_ "modernc.org/sqlite" // registers the "sqlite" driver
)

// Dialect names the SQL database behind a Store.
type Dialect string

// Dialects supported by Open.
const (
	Postgres Dialect = "postgres"
	SQLite   Dialect = "sqlite"
)

// maxOpenConns caps the PostgreSQL connections of one process.
const maxOpenConns = 20

// Config selects the database that Open connects to.
type Config struct {
	// DatabaseURL is a postgres:// or postgresql:// URL. When it is empty,
	// Open uses the SQLite file at SQLitePath.
	DatabaseURL string
	// SQLitePath is the SQLite database file, created with its parent
	// directory when missing.
	SQLitePath string
}

// Store is the auth service's database handle.
type Store struct {
	db      *sqlx.DB
	dialect Dialect

	// stmts maps a query text with "?" placeholders to its *sqlx.Stmt.
	stmts sync.Map
}

// Open connects to the database that cfg names and pings it.
// It does not apply migrations: call Migrate for that.
func Open(ctx context.Context, cfg Config) (*Store, error) {
	dialect, dsn, err := resolve(cfg)
	if err != nil {
		return nil, err
	}

	db, err := sqlx.Open(string(dialect), dsn)
	if err != nil {
		return nil, fmt.Errorf("open %s database: %w", dialect, err)
	}
	if dialect == Postgres {
		// NOTE: the pool limits are constants, not flags. maxOpenConns keeps
		// a burst of requests within PostgreSQL's default max_connections
		// of 100 for a few replicas. Many replicas need a lower value or a
		// higher max_connections. All of them may stay idle, because with
		// fewer a busy pool closes connections that the next requests open
		// again, and each new PostgreSQL connection costs a process fork
		// and a login.
		db.SetMaxOpenConns(maxOpenConns)
		db.SetMaxIdleConns(maxOpenConns)
		db.SetConnMaxIdleTime(5 * time.Minute)
		// A lifetime lets statements that a schema change invalidated (see
		// prepared) go away with their connections.
		db.SetConnMaxLifetime(30 * time.Minute)
	}

	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("connect to %s database: %w", dialect, err)
	}
	return &Store{db: db, dialect: dialect}, nil
}

func resolve(cfg Config) (Dialect, string, error) {
	url := strings.TrimSpace(cfg.DatabaseURL)
	switch {
	case strings.HasPrefix(url, "postgres://"), strings.HasPrefix(url, "postgresql://"):
		return Postgres, url, nil
	case url != "":
		return "", "", fmt.Errorf("unsupported database URL scheme in %q: use postgres:// or leave it empty for SQLite", RedactURL(url))
	}

	if cfg.SQLitePath == "" {
		return "", "", errors.New("missing SQLite path: set a database URL or a data directory")
	}
	if err := os.MkdirAll(filepath.Dir(cfg.SQLitePath), 0o700); err != nil {
		return "", "", fmt.Errorf("create directory for SQLite database: %w", err)
	}

	// WAL lets readers run beside one writer. busy_timeout makes a writer
	// wait up to 10 s for the lock instead of failing at once, and
	// _txlock=immediate takes the write lock at BEGIN, so that two
	// transactions cannot both hold a read lock and wait to upgrade it.
	dsn := "file:" + cfg.SQLitePath +
		"?_pragma=busy_timeout(10000)&_pragma=journal_mode(WAL)" +
		"&_pragma=foreign_keys(1)&_pragma=synchronous(NORMAL)&_txlock=immediate"
	return SQLite, dsn, nil
}

// RedactURL returns a database URL that can appear in an error or a log
// line: the user information becomes REDACTED and a password query
// parameter becomes xxxxx.
func RedactURL(rawURL string) string {
	u, err := url.Parse(rawURL)
	if err != nil {
		return "(unparsable URL)"
	}
	if u.User != nil {
		u.User = url.User("REDACTED")
	}
	query := u.Query()
	if query.Has("password") {
		query.Set("password", "xxxxx")
		u.RawQuery = query.Encode()
	}
	return u.String()
}

// Describe returns the store kind and location for a start-up log line,
// without credentials.
func (c Config) Describe() string {
	if c.DatabaseURL != "" {
		return "postgres " + RedactURL(c.DatabaseURL)
	}
	return "sqlite " + c.SQLitePath
}

// DB returns the underlying handle, for packages that keep their own tables
// in the same database (the signing-key manager).
func (s *Store) DB() *sqlx.DB { return s.db }

// Dialect returns the SQL dialect of the database.
func (s *Store) Dialect() Dialect { return s.dialect }

// Ping checks that the database responds. database/sql retries a dead
// pooled connection while it acquires one, but not when the ping itself
// fails on it, so after the server ended idle connections each of them
// would fail one ping. Ping tries again while the ping fails with
// driver.ErrBadConn, up to maxOpenConns+1 attempts, one more than the pool
// can hold.
func (s *Store) Ping(ctx context.Context) error {
	var err error
	for range maxOpenConns + 1 {
		err = s.db.PingContext(ctx)
		if !errors.Is(err, driver.ErrBadConn) {
			return err
		}
	}
	return err
}

// Close closes the prepared statements and every connection.
func (s *Store) Close() error {
	s.stmts.Range(func(_, stmt any) bool {
		stmt.(*sqlx.Stmt).Close()
		return true
	})
	return s.db.Close()
}

// prepared returns the prepared statement for query, written with "?"
// placeholders, and prepares it on first use. database/sql prepares it again
// on each pooled connection that runs it, including connections opened
// after a lost one. Reusing statements spares PostgreSQL the parsing of
// each query, and lib/pq a round trip per query. PostgreSQL also stops
// planning each call once it settles on a generic plan. Only the
// frequent single-statement reads use it, so the cache holds a handful of
// statements. Queries inside transactions are not prepared.
//
// NOTE: A PostgreSQL schema change that alters the type of a column that
// a statement returns makes the statement fail with "cached plan must not
// change result type" on every connection that prepared it before, until
// that connection closes or the process restarts. A connection pooler in
// transaction mode must support prepared statements (PgBouncer 1.21 or
// later with max_prepared_statements set).
func (s *Store) prepared(ctx context.Context, query string) (*sqlx.Stmt, error) {
	if stmt, ok := s.stmts.Load(query); ok {
		return stmt.(*sqlx.Stmt), nil
	}
	stmt, err := s.db.PreparexContext(ctx, s.db.Rebind(query))
	if err != nil {
		return nil, err
	}
	if prev, loaded := s.stmts.LoadOrStore(query, stmt); loaded {
		stmt.Close()
		return prev.(*sqlx.Stmt), nil
	}
	return stmt, nil
}

// get runs query through its prepared statement and scans the single row
// into dest, like sqlx's GetContext.
func (s *Store) get(ctx context.Context, dest any, query string, args ...any) error {
	stmt, err := s.prepared(ctx, query)
	if err != nil {
		return err
	}
	return stmt.GetContext(ctx, dest, args...)
}
