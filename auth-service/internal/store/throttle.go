package store

import (
	"context"
	"database/sql"
	"errors"
	"time"

	"github.com/jmoiron/sqlx"

	"example.com/todoapp/auth-service/internal/auth"
)

// LoginBlockedUntil returns the latest blocked_until of the keys, or the
// zero time when none of them has a counter.
func (s *Store) LoginBlockedUntil(ctx context.Context, keys []string) (time.Time, error) {
	if len(keys) == 0 {
		return time.Time{}, nil
	}
	query, args, err := sqlx.In(`SELECT MAX(blocked_until) FROM login_failures WHERE throttle_key IN (?)`, keys)
	if err != nil {
		return time.Time{}, translateError("build login throttle query", err)
	}

	var until sql.NullInt64
	if err := s.db.GetContext(ctx, &until, s.db.Rebind(query), args...); err != nil {
		return time.Time{}, translateError("select login throttle", err)
	}
	return fromMicros(until.Int64), nil
}

// RecordLoginFailure counts one failure for key under policy and returns the
// new blocked-until time (zero when not blocked).
func (s *Store) RecordLoginFailure(ctx context.Context, key string, now time.Time, policy auth.FailurePolicy) (time.Time, error) {
	var until time.Time
	err := s.inTx(ctx, func(tx *sqlx.Tx) error {
		// Create the row first, so that concurrent failures for one key
		// serialise on its row lock instead of racing to insert.
		if _, err := tx.ExecContext(ctx, tx.Rebind(
			`INSERT INTO login_failures (throttle_key, failures, last_failure_time, blocked_until)
			 VALUES (?, 0, ?, 0) ON CONFLICT (throttle_key) DO NOTHING`), key, micros(now)); err != nil {
			return translateError("insert login throttle", err)
		}

		var row struct {
			Failures        int64 `db:"failures"`
			LastFailureTime int64 `db:"last_failure_time"`
		}
		if err := tx.GetContext(ctx, &row, tx.Rebind(
			`SELECT failures, last_failure_time FROM login_failures WHERE throttle_key = ?`+s.forUpdate()), key); err != nil {
			return translateError("select login throttle", err)
		}

		failures := row.Failures + 1
		if now.Sub(fromMicros(row.LastFailureTime)) > policy.ResetAfter {
			failures = 1
		}
		var blockedUntil int64
		if delay := policy.Delay(failures); delay > 0 {
			until = now.Add(delay)
			blockedUntil = micros(until)
		}

		_, err := tx.ExecContext(ctx, tx.Rebind(
			`UPDATE login_failures SET failures = ?, last_failure_time = ?, blocked_until = ? WHERE throttle_key = ?`),
			failures, micros(now), blockedUntil, key)
		return translateError("update login throttle", err)
	})
	return until, err
}

// ResetLoginFailures deletes the counter of key.
func (s *Store) ResetLoginFailures(ctx context.Context, key string) error {
	_, err := s.db.ExecContext(ctx, s.db.Rebind(`DELETE FROM login_failures WHERE throttle_key = ?`), key)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return translateError("delete login throttle", err)
	}
	return nil
}

var _ auth.Store = (*Store)(nil)
