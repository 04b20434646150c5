package keys

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/jmoiron/sqlx"
)

// transitionLockID is the pg_advisory_xact_lock key that serialises key
// transitions of every replica sharing one PostgreSQL database. The value
// is arbitrary but fixed ("authkeys" in ASCII).
const transitionLockID int64 = 0x61757468_6b657973

// keyRecord is one row of signing_keys. Times are Unix microseconds.
type keyRecord struct {
	ID           string        `db:"kid"`
	State        State         `db:"state"`
	Bits         int           `db:"bits"`
	PublicKey    []byte        `db:"public_key"`
	PrivateKey   []byte        `db:"private_key"`
	CreateTime   int64         `db:"create_time"`
	ActivateTime int64         `db:"activate_time"`
	RetireTime   sql.NullInt64 `db:"retire_time"`
	DeleteTime   sql.NullInt64 `db:"delete_time"`
}

func micros(t time.Time) int64 { return t.UnixMicro() }

func fromMicros(us int64) time.Time { return time.UnixMicro(us).UTC() }

func fromNullMicros(us sql.NullInt64) time.Time {
	if !us.Valid {
		return time.Time{}
	}
	return fromMicros(us.Int64)
}

func selectKeys(ctx context.Context, q sqlx.QueryerContext) ([]keyRecord, error) {
	var records []keyRecord
	err := sqlx.SelectContext(ctx, q, &records, `
		SELECT kid, state, bits, public_key, private_key,
		       create_time, activate_time, retire_time, delete_time
		FROM signing_keys
		ORDER BY activate_time, kid`)
	if err != nil {
		return nil, fmt.Errorf("select signing keys: %w", err)
	}
	return records, nil
}

// lockTransitions blocks until no other transaction holds the transition
// lock. On PostgreSQL it takes an advisory lock that ends with tx. On
// SQLite it starts with a write that changes no row, which takes the
// database write lock before the transaction reads anything, so a second
// writer waits (busy_timeout) instead of failing with SQLITE_BUSY when it
// upgrades a read. A handle opened by store.Open already holds that lock
// from BEGIN IMMEDIATE, and the write is then a no-op.
func lockTransitions(ctx context.Context, tx *sqlx.Tx) error {
	var err error
	if tx.DriverName() == "postgres" {
		_, err = tx.ExecContext(ctx, "SELECT pg_advisory_xact_lock($1)", transitionLockID)
	} else {
		_, err = tx.ExecContext(ctx, "UPDATE signing_keys SET kid = kid WHERE 1 = 0")
	}
	if err != nil {
		return fmt.Errorf("lock signing-key transitions: %w", err)
	}
	return nil
}

func insertKey(ctx context.Context, tx *sqlx.Tx, r keyRecord) error {
	_, err := tx.ExecContext(ctx, tx.Rebind(`
		INSERT INTO signing_keys (kid, state, bits, public_key, private_key, create_time, activate_time)
		VALUES (?, ?, ?, ?, ?, ?, ?)`),
		r.ID, r.State, r.Bits, r.PublicKey, r.PrivateKey, r.CreateTime, r.ActivateTime)
	if err != nil {
		return fmt.Errorf("insert %s signing key %s: %w", r.State, r.ID, err)
	}
	return nil
}

// promoteKey makes a next key current from activateTime on.
func promoteKey(ctx context.Context, tx *sqlx.Tx, kid string, activateTime int64) error {
	return execOne(ctx, tx, "promote signing key "+kid, `
		UPDATE signing_keys SET state = 'current', activate_time = ?
		WHERE kid = ? AND state = 'next'`, activateTime, kid)
}

// retireKey makes a current key verify-only and erases its private part.
func retireKey(ctx context.Context, tx *sqlx.Tx, kid string, retireTime, deleteTime int64) error {
	return execOne(ctx, tx, "retire signing key "+kid, `
		UPDATE signing_keys
		SET state = 'retired', private_key = NULL, retire_time = ?, delete_time = ?
		WHERE kid = ? AND state = 'current'`, retireTime, deleteTime, kid)
}

func rescheduleKey(ctx context.Context, tx *sqlx.Tx, kid string, activateTime int64) error {
	return execOne(ctx, tx, "reschedule signing key "+kid, `
		UPDATE signing_keys SET activate_time = ?
		WHERE kid = ? AND state = 'next'`, activateTime, kid)
}

func deleteKey(ctx context.Context, tx *sqlx.Tx, kid string) error {
	return execOne(ctx, tx, "delete signing key "+kid, `DELETE FROM signing_keys WHERE kid = ?`, kid)
}

// execOne runs an update that must change exactly one row. Under the
// transition lock any other count means the table changed outside the
// manager.
func execOne(ctx context.Context, tx *sqlx.Tx, what, query string, args ...any) error {
	result, err := tx.ExecContext(ctx, tx.Rebind(query), args...)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	n, err := result.RowsAffected()
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if n != 1 {
		return fmt.Errorf("%s: changed %d rows, expected 1", what, n)
	}
	return nil
}

// replacePrivateKey stores a re-sealed private key in place of the old one.
func replacePrivateKey(ctx context.Context, tx *sqlx.Tx, kid string, box []byte) error {
	return execOne(ctx, tx, "store re-sealed private key of signing key "+kid, `
		UPDATE signing_keys SET private_key = ?
		WHERE kid = ? AND private_key IS NOT NULL`, box, kid)
}

// CountKeys returns the number of rows in signing_keys, whatever their
// state.
func CountKeys(ctx context.Context, q sqlx.QueryerContext) (int, error) {
	var n int
	if err := sqlx.GetContext(ctx, q, &n, `SELECT COUNT(*) FROM signing_keys`); err != nil {
		return 0, fmt.Errorf("count signing keys: %w", err)
	}
	return n, nil
}
