// Package store keeps todos and the cached JWKS in SQLite or PostgreSQL
// through sqlx. Both dialects run the same queries (rewritten for their
// placeholders) and store times as BIGINT unix microseconds, so callers see
// the same behaviour on either.
package store

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/jmoiron/sqlx"
	_ "github.com/lib/pq"  // registers the "postgres" driver
	_ "modernc.org/sqlite" // registers the "sqlite" driver
)

// Errors returned by the store. Callers test them with errors.Is.
var (
	// ErrNotFound means the row does not exist or belongs to another user.
	ErrNotFound = errors.New("not found")
	// ErrETagMismatch means the stored todo has another etag than the one
	// the caller expected.
	ErrETagMismatch = errors.New("etag mismatch")
	// ErrInvalidArgument means a value can never be stored, for example a
	// text that is not valid UTF-8.
	ErrInvalidArgument = errors.New("invalid argument")
)

// Dialect names returned by Store.Dialect.
const (
	DialectSQLite   = "sqlite"
	DialectPostgres = "postgres"
)

// maxOpenConns caps the PostgreSQL connections of one process.
const maxOpenConns = 20

// SQLiteFileName is the database file created in the data directory when no
// database URL is configured.
const SQLiteFileName = "todo.db"

// Options configures Open.
type Options struct {
	// DatabaseURL selects PostgreSQL when it is a postgres:// or
	// postgresql:// URL. When empty, the store is the SQLite file
	// SQLiteFileName inside DataDir.
	DatabaseURL string
	// DataDir is the directory of the SQLite file. It is created (0700)
	// when missing.
	DataDir string
	// Now returns the current time. When nil, time.Now is used.
	Now func() time.Time
}

// Store is a todo database. It is safe for concurrent use.
type Store struct {
	db      *sqlx.DB
	dialect string
	target  string
	now     func() time.Time

	// stmts maps a query text with "?" placeholders to its *sqlx.Stmt.
	stmts sync.Map
}

// Open connects to the database that opts names and pings it. It applies no
// migrations, because Migrate does that.
func Open(ctx context.Context, opts Options) (*Store, error) {
	now := opts.Now
	if now == nil {
		now = time.Now
	}

	var (
		s   *Store
		err error
	)
	if opts.DatabaseURL == "" {
		s, err = openSQLite(opts.DataDir)
	} else {
		s, err = openPostgres(opts.DatabaseURL)
	}
	if err != nil {
		return nil, err
	}
	s.now = now

	if err := s.db.PingContext(ctx); err != nil {
		s.db.Close()
		return nil, fmt.Errorf("connect to %s database %s: %w", s.dialect, s.target, err)
	}
	return s, nil
}

func openSQLite(dataDir string) (*Store, error) {
	if dataDir == "" {
		return nil, errors.New("open sqlite store: data directory is empty")
	}
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return nil, fmt.Errorf("create data directory: %w", err)
	}
	path := filepath.Join(dataDir, SQLiteFileName)

	// WAL lets readers run beside the one writer. busy_timeout makes a
	// second writer wait up to 10 s instead of failing at once. Immediate
	// transactions take the write lock at BEGIN, so a transaction cannot
	// fail with SQLITE_BUSY halfway, when it upgrades from reading to
	// writing. With WAL, synchronous=NORMAL keeps the file consistent but
	// may lose the last commits on a power loss or an OS crash, though not
	// on a crash of the process (SQLite's PRAGMA synchronous docs).
	dsn := "file:" + path + "?_pragma=busy_timeout(10000)&_pragma=journal_mode(WAL)" +
		"&_pragma=synchronous(NORMAL)&_txlock=immediate"
	db, err := sqlx.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("open sqlite database %s: %w", path, err)
	}
	return &Store{db: db, dialect: DialectSQLite, target: path}, nil
}

func openPostgres(rawURL string) (*Store, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		// The parse error repeats the URL, which may contain a password.
		return nil, errors.New("parse database URL: not a valid URL")
	}
	if u.Scheme != "postgres" && u.Scheme != "postgresql" {
		return nil, fmt.Errorf("database URL scheme %q is not supported: use postgres:// or leave the URL empty for SQLite", u.Scheme)
	}

	db, err := sqlx.Open("postgres", rawURL)
	if err != nil {
		return nil, fmt.Errorf("open postgres database %s: %w", RedactURL(rawURL), err)
	}
	// As many idle connections as open ones, because with fewer a busy pool
	// closes connections that the next requests open again, and each new
	// PostgreSQL connection costs a process fork and a login. A quiet
	// service still closes its connections after ConnMaxIdleTime.
	db.SetMaxOpenConns(maxOpenConns)
	db.SetMaxIdleConns(maxOpenConns)
	db.SetConnMaxIdleTime(5 * time.Minute)
	db.SetConnMaxLifetime(30 * time.Minute)
	return &Store{db: db, dialect: DialectPostgres, target: RedactURL(rawURL)}, nil
}

// RedactURL returns rawURL fit for logs. A password in the user
// information or in a password query parameter is replaced by "xxxxx", and
// a URL that does not parse is replaced as a whole.
func RedactURL(rawURL string) string {
	u, err := url.Parse(rawURL)
	if err != nil {
		return "(invalid URL)"
	}
	query := u.Query()
	if query.Has("password") {
		query.Set("password", "xxxxx")
		u.RawQuery = query.Encode()
	}
	return u.Redacted()
}

// Close closes the prepared statements and the connection pool.
func (s *Store) Close() error {
	s.stmts.Range(func(_, stmt any) bool {
		stmt.(*sqlx.Stmt).Close()
		return true
	})
	return s.db.Close()
}

// Dialect returns DialectSQLite or DialectPostgres.
func (s *Store) Dialect() string {
	return s.dialect
}

// Target returns the SQLite file path or the PostgreSQL URL with its
// password redacted, for logs.
func (s *Store) Target() string {
	return s.target
}

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

// DB returns the connection pool, for tests that inspect tables directly.
func (s *Store) DB() *sqlx.DB {
	return s.db
}

func (s *Store) rebind(query string) string {
	if s.dialect == DialectPostgres {
		return sqlx.Rebind(sqlx.DOLLAR, query)
	}
	return query
}

// prepared returns the prepared statement for query, written with "?"
// placeholders, and prepares it on first use. database/sql prepares it again
// on each pooled connection that runs it, so a lost connection costs one
// new preparation and no error of its own. Reusing statements spares
// PostgreSQL the parsing of each query, and lib/pq a round trip per query.
// PostgreSQL also stops planning each call once it settles on a generic
// plan, though it keeps planning per call when custom plans look cheaper.
// The cache does not shrink: callers build their queries
// from a fixed set of clauses, so it holds a few dozen statements at most.
//
// NOTE: A PostgreSQL schema change that alters the type of a column that
// a statement returns makes the statement fail with "cached plan must not
// change result type" on every connection that prepared it before, until
// that connection ends (ConnMaxLifetime) or the process restarts. The
// migrations so far only create tables and indexes. A connection pooler in
// transaction mode must support prepared statements (PgBouncer 1.21 or
// later with max_prepared_statements set).
func (s *Store) prepared(ctx context.Context, query string) (*sqlx.Stmt, error) {
	if stmt, ok := s.stmts.Load(query); ok {
		return stmt.(*sqlx.Stmt), nil
	}
	stmt, err := s.db.PreparexContext(ctx, s.rebind(query))
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

// query runs query through its prepared statement, like QueryContext.
func (s *Store) query(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	stmt, err := s.prepared(ctx, query)
	if err != nil {
		return nil, err
	}
	return stmt.QueryContext(ctx, args...)
}

// queryRow runs query through its prepared statement, like QueryRowContext.
// A failed preparation comes back from the Scan method of the result.
func (s *Store) queryRow(ctx context.Context, query string, args ...any) rowScanner {
	stmt, err := s.prepared(ctx, query)
	if err != nil {
		return errRow{err: err}
	}
	return stmt.QueryRowContext(ctx, args...)
}

// errRow is a row whose Scan returns err.
type errRow struct {
	err error
}

func (r errRow) Scan(...any) error {
	return r.err
}

// exec runs query through its prepared statement, like sqlx's ExecContext.
func (s *Store) exec(ctx context.Context, query string, args ...any) (sql.Result, error) {
	stmt, err := s.prepared(ctx, query)
	if err != nil {
		return nil, err
	}
	return stmt.ExecContext(ctx, args...)
}
