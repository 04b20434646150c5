package bench

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/lib/pq" // also registers the "postgres" driver
)

// CreateDatabase creates a database with a unique random name on the
// PostgreSQL server at serverURL, drops it when the test ends, and returns
// its URL. Other developers' tests use the same server at the same time, so
// the name starts with "bench_" and carries 8 random bytes.
func CreateDatabase(tb testing.TB, serverURL, purpose string) string {
	tb.Helper()

	var suffix [8]byte
	rand.Read(suffix[:])
	name := "bench_" + purpose + "_" + hex.EncodeToString(suffix[:])

	admin, err := sql.Open("postgres", serverURL)
	if err != nil {
		tb.Fatalf("open %s: %v", redactURL(serverURL), err)
	}
	defer admin.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := admin.ExecContext(ctx, "CREATE DATABASE "+name); err != nil {
		tb.Fatalf("create database %s on %s: %v", name, redactURL(serverURL), err)
	}
	tb.Cleanup(func() {
		admin, err := sql.Open("postgres", serverURL)
		if err != nil {
			tb.Errorf("open %s to drop %s: %v", redactURL(serverURL), name, err)
			return
		}
		defer admin.Close()

		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		// FORCE ends the connections of services that were killed
		// without closing their pools.
		if _, err := admin.ExecContext(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
			tb.Errorf("drop database %s: %v", name, err)
		}
	})

	u, err := url.Parse(serverURL)
	if err != nil {
		tb.Fatalf("parse database URL: %v", err)
	}
	u.Path = "/" + name
	return u.String()
}

// OpenDB opens the database at databaseURL and closes it when the test ends.
func OpenDB(tb testing.TB, databaseURL string) *sql.DB {
	tb.Helper()

	db, err := sql.Open("postgres", databaseURL)
	if err != nil {
		tb.Fatalf("open %s: %v", redactURL(databaseURL), err)
	}
	tb.Cleanup(func() { db.Close() })
	return db
}

// redactURL drops the password from a database URL for messages.
func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparsable database URL)"
	}
	return u.Redacted()
}

// todoColumns matches the todos table of the todo-service PostgreSQL
// migration 0001_todos.sql. Times are unix microseconds.
const todoColumns = "id, user_id, title, description, completed, create_time, update_time, complete_time, etag"

// SeedUserTodos inserts count todos for userID straight into the todo
// database, one every 10 seconds back from now, and returns their ids.
func SeedUserTodos(ctx context.Context, db *sql.DB, userID string, count int) ([]string, error) {
	query := `INSERT INTO todos (` + todoColumns + `)
SELECT gen_random_uuid(), $1, 'seeded todo ' || g, 'inserted by the load harness', g % 4 = 0,
       $2::bigint - g * 10000000, $2::bigint - g * 10000000,
       CASE WHEN g % 4 = 0 THEN $2::bigint - g * 10000000 END,
       md5(random()::text)
FROM generate_series(1, $3::int) AS g
RETURNING id`
	rows, err := db.QueryContext(ctx, query, userID, time.Now().UnixMicro(), count)
	if err != nil {
		return nil, fmt.Errorf("seed %d todos for one user: %w", count, err)
	}
	defer rows.Close()

	var ids []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, fmt.Errorf("seed todos: scan id: %w", err)
		}
		ids = append(ids, id)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("seed todos: %w", err)
	}
	return ids, nil
}

// SeedSyntheticTodos inserts the todos numbered first to first+count-1,
// todo g belonging to synthetic user g mod users, with create times spread
// one millisecond apart back from now. It runs as one INSERT of
// generate_series, which is far faster than the gRPC API for a million rows.
func SeedSyntheticTodos(ctx context.Context, db *sql.DB, first, count, users int) error {
	query := `INSERT INTO todos (` + todoColumns + `)
SELECT gen_random_uuid(), (md5('bench-user-' || (g % $4::int))::uuid)::text,
       'synthetic todo ' || g, 'inserted by the load harness', g % 4 = 0,
       $1::bigint - g * 1000, $1::bigint - g * 1000,
       CASE WHEN g % 4 = 0 THEN $1::bigint - g * 1000 END,
       md5(random()::text)
FROM generate_series($2::bigint, $3::bigint) AS g`
	_, err := db.ExecContext(ctx, query, time.Now().UnixMicro(), first, first+count-1, users)
	if err != nil {
		return fmt.Errorf("seed %d synthetic todos: %w", count, err)
	}
	if _, err := db.ExecContext(ctx, "VACUUM ANALYZE todos"); err != nil {
		return fmt.Errorf("vacuum analyze todos: %w", err)
	}
	return nil
}

// CountTodos returns the number of rows in the todos table.
func CountTodos(ctx context.Context, db *sql.DB) (int64, error) {
	var n int64
	err := db.QueryRowContext(ctx, "SELECT count(*) FROM todos").Scan(&n)
	return n, err
}

// Plans is the pair of executed plans of one query. Custom is the plan for the
// given parameter values. Generic is the plan without them, which
// PostgreSQL may switch a prepared statement to after five executions, and
// todo-service prepares its statements.
type Plans struct {
	Custom  string
	Generic string
}

// ExplainGet returns the executed plans of the query that todo-service runs
// for GetTodo, with the given todo and user.
func ExplainGet(ctx context.Context, db *sql.DB, userID, todoID string) (Plans, error) {
	return explain(ctx, db, `SELECT `+todoColumns+` FROM todos WHERE id = $1 AND user_id = $2`,
		[]string{"uuid", "text"}, todoID, userID)
}

// ExplainList returns the executed plans of the query that todo-service
// runs for the first page of ListTodos without a filter.
func ExplainList(ctx context.Context, db *sql.DB, userID string, pageSize int) (Plans, error) {
	return explain(ctx, db, `SELECT `+todoColumns+` FROM todos WHERE user_id = $1 ORDER BY create_time DESC, id DESC LIMIT $2`,
		[]string{"text", "bigint"}, userID, pageSize)
}

// ExplainListAfter returns the executed plans of the query that
// todo-service runs for a later page of ListTodos without a filter, the
// page after the todo at (afterTime, afterID).
func ExplainListAfter(ctx context.Context, db *sql.DB, userID string, afterTime int64, afterID string, pageSize int) (Plans, error) {
	return explain(ctx, db, `SELECT `+todoColumns+` FROM todos WHERE user_id = $1 AND create_time <= $2 AND `+
		`(create_time < $3 OR (create_time = $4 AND id < $5)) ORDER BY create_time DESC, id DESC LIMIT $6`,
		[]string{"text", "bigint", "bigint", "bigint", "uuid", "bigint"},
		userID, afterTime, afterTime, afterTime, afterID, pageSize)
}

// TodoAt returns the create time and id of the todo of userID at position
// offset (from 0) in ListTodos order, newest first.
func TodoAt(ctx context.Context, db *sql.DB, userID string, offset int) (int64, string, error) {
	var (
		createTime int64
		id         string
	)
	err := db.QueryRowContext(ctx,
		`SELECT create_time, id FROM todos WHERE user_id = $1 ORDER BY create_time DESC, id DESC OFFSET $2 LIMIT 1`,
		userID, offset).Scan(&createTime, &id)
	if err != nil {
		return 0, "", fmt.Errorf("select todo %d of user %s: %w", offset, userID, err)
	}
	return createTime, id, nil
}

// explain runs EXPLAIN (ANALYZE, BUFFERS) of query with args, whose
// PostgreSQL types are paramTypes, once with the values bound and once as
// the generic plan of a prepared statement. Both run on one connection,
// which gets its settings back before it returns to the pool.
func explain(ctx context.Context, db *sql.DB, query string, paramTypes []string, args ...any) (Plans, error) {
	conn, err := db.Conn(ctx)
	if err != nil {
		return Plans{}, fmt.Errorf("explain: %w", err)
	}
	defer conn.Close()

	var plans Plans
	if plans.Custom, err = explainLines(ctx, conn, "EXPLAIN (ANALYZE, BUFFERS) "+query, args...); err != nil {
		return Plans{}, err
	}

	if _, err := conn.ExecContext(ctx, "PREPARE bench_plan ("+strings.Join(paramTypes, ", ")+") AS "+query); err != nil {
		return Plans{}, fmt.Errorf("explain: prepare: %w", err)
	}
	defer conn.ExecContext(context.WithoutCancel(ctx), "DEALLOCATE bench_plan")
	if _, err := conn.ExecContext(ctx, "SET plan_cache_mode = force_generic_plan"); err != nil {
		return Plans{}, fmt.Errorf("explain: set plan_cache_mode: %w", err)
	}
	defer conn.ExecContext(context.WithoutCancel(ctx), "RESET plan_cache_mode")

	// EXECUTE takes its arguments as SQL expressions, so they are quoted
	// literals here, cast by the types of the PREPARE.
	literals := make([]string, len(args))
	for i, arg := range args {
		literals[i] = pq.QuoteLiteral(fmt.Sprint(arg))
	}
	if plans.Generic, err = explainLines(ctx, conn, "EXPLAIN (ANALYZE, BUFFERS) EXECUTE bench_plan ("+strings.Join(literals, ", ")+")"); err != nil {
		return Plans{}, err
	}
	return plans, nil
}

func explainLines(ctx context.Context, conn *sql.Conn, query string, args ...any) (string, error) {
	rows, err := conn.QueryContext(ctx, query, args...)
	if err != nil {
		return "", fmt.Errorf("explain: %w", err)
	}
	defer rows.Close()

	var lines []string
	for rows.Next() {
		var line string
		if err := rows.Scan(&line); err != nil {
			return "", fmt.Errorf("explain: scan: %w", err)
		}
		lines = append(lines, line)
	}
	if err := rows.Err(); err != nil {
		return "", fmt.Errorf("explain: %w", err)
	}
	return strings.Join(lines, "\n"), nil
}
