package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/jmoiron/sqlx"

	"example.com/todoapp/auth-service/internal/auth"
)

type sessionRow struct {
	ID              string        `db:"id"`
	UserID          string        `db:"user_id"`
	CreateTime      int64         `db:"create_time"`
	LastRefreshTime int64         `db:"last_refresh_time"`
	ExpireTime      int64         `db:"expire_time"`
	RevokeTime      sql.NullInt64 `db:"revoke_time"`
	RevokeReason    string        `db:"revoke_reason"`
}

const sessionColumns = `id, user_id, create_time, last_refresh_time, expire_time, revoke_time, revoke_reason`

func (r sessionRow) session() auth.Session {
	return auth.Session{
		ID:              r.ID,
		UserID:          r.UserID,
		CreateTime:      fromMicros(r.CreateTime),
		LastRefreshTime: fromMicros(r.LastRefreshTime),
		ExpireTime:      fromMicros(r.ExpireTime),
		RevokeTime:      fromMicros(r.RevokeTime.Int64),
		RevokeReason:    r.RevokeReason,
	}
}

// CreateSession inserts the session and its first refresh token.

func (s *Store) CreateSession(ctx context.Context, session auth.Session, refreshTokenHash string) error {
	return s.inTx(ctx, func(tx *sqlx.Tx) error {
		_, err := tx.ExecContext(ctx, tx.Rebind(
			`INSERT INTO sessions (id, user_id, create_time, last_refresh_time, expire_time, revoke_reason)
			 VALUES (?, ?, ?, ?, ?, '')`),
			session.ID, session.UserID, micros(session.CreateTime), micros(session.LastRefreshTime), micros(session.ExpireTime))
		if err != nil {
			return translateError("insert session", err)
		}
		return s.insertRefreshToken(ctx, tx, refreshTokenHash, session.ID, session.CreateTime, session.ExpireTime)
	})
}

func (s *Store) insertRefreshToken(ctx context.Context, tx *sqlx.Tx, hash, sessionID string, now, expire time.Time) error {
	_, err := tx.ExecContext(ctx, tx.Rebind(
		`INSERT INTO refresh_tokens (token_hash, session_id, create_time, expire_time) VALUES (?, ?, ?, ?)`),
		hash, sessionID, micros(now), micros(expire))
	return translateError("insert refresh token of session "+sessionID, err)
}

type refreshTokenRow struct {
	SessionID  string        `db:"session_id"`
	ExpireTime int64         `db:"expire_time"`
	UseTime    sql.NullInt64 `db:"use_time"`
}

// RotateRefreshToken implements auth.Store; auth.RefreshRotation describes
// the outcomes. The old token's row is locked first (FOR UPDATE on
// PostgreSQL, the database write lock on SQLite), so a concurrent exchange
// of the same token waits and then reads it as used.
func (s *Store) RotateRefreshToken(ctx context.Context, r auth.RefreshRotation) (auth.Session, error) {
	var session auth.Session
	var reused bool
	err := s.inTx(ctx, func(tx *sqlx.Tx) error {
		var token refreshTokenRow
		err := tx.GetContext(ctx, &token, tx.Rebind(
			`SELECT session_id, expire_time, use_time FROM refresh_tokens WHERE token_hash = ?`+s.forUpdate()), r.OldHash)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("%w: unknown token", auth.ErrInvalidRefreshToken)
		}
		if err != nil {
			return translateError("select refresh token", err)
		}

		var row sessionRow
		if err := tx.GetContext(ctx, &row, tx.Rebind(
			`SELECT `+sessionColumns+` FROM sessions WHERE id = ?`+s.forUpdate()), token.SessionID); err != nil {
			return translateError("select session "+token.SessionID, err)
		}
		session = row.session()
		if !session.RevokeTime.IsZero() {
			return fmt.Errorf("%w: session %s revoked", auth.ErrInvalidRefreshToken, session.ID)
		}

		if token.UseTime.Valid {
			if r.Now.Sub(fromMicros(token.UseTime.Int64)) <= r.ReuseGrace {
				return auth.ErrRefreshTokenRetried
			}
			if err := revokeSession(ctx, tx, session.ID, r.Now, "refresh token reused"); err != nil {
				return err
			}
			reused = true
			return nil
		}
		if !r.Now.Before(fromMicros(token.ExpireTime)) {
			return fmt.Errorf("%w: token of session %s expired", auth.ErrInvalidRefreshToken, session.ID)
		}

		if _, err := tx.ExecContext(ctx, tx.Rebind(
			`UPDATE refresh_tokens SET use_time = ? WHERE token_hash = ? AND use_time IS NULL`),
			micros(r.Now), r.OldHash); err != nil {
			return translateError("mark refresh token used", err)
		}
		if err := s.insertRefreshToken(ctx, tx, r.NewHash, session.ID, r.Now, r.NewExpireTime); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, tx.Rebind(
			`UPDATE sessions SET last_refresh_time = ?, expire_time = ? WHERE id = ?`),
			micros(r.Now), micros(r.NewExpireTime), session.ID); err != nil {
			return translateError("update session "+session.ID, err)
		}
		session.LastRefreshTime = r.Now
		session.ExpireTime = r.NewExpireTime
		return nil
	})
	if err != nil {
		return auth.Session{}, err
	}
	if reused {
		// The revocation is committed; the caller still gets an error.
		session.RevokeTime = r.Now
		return session, auth.ErrRefreshTokenReused
	}
	return session, nil
}

func revokeSession(ctx context.Context, tx *sqlx.Tx, sessionID string, now time.Time, reason string) error {
	_, err := tx.ExecContext(ctx, tx.Rebind(
		`UPDATE sessions SET revoke_time = ?, revoke_reason = ? WHERE id = ? AND revoke_time IS NULL`),
		micros(now), reason, sessionID)
	return translateError("revoke session "+sessionID, err)
}

// RevokeSessionByRefreshToken revokes the session that issued the token.
func (s *Store) RevokeSessionByRefreshToken(ctx context.Context, tokenHash string, now time.Time, reason string) (auth.Session, error) {
	var session auth.Session
	err := s.inTx(ctx, func(tx *sqlx.Tx) error {
		var row sessionRow
		err := tx.GetContext(ctx, &row, tx.Rebind(
			`SELECT s.id, s.user_id, s.create_time, s.last_refresh_time, s.expire_time, s.revoke_time, s.revoke_reason
			 FROM sessions s JOIN refresh_tokens t ON t.session_id = s.id
			 WHERE t.token_hash = ?`), tokenHash)
		if err != nil {
			return translateError("select session by refresh token", err)
		}
		session = row.session()
		if !session.RevokeTime.IsZero() {
			return nil
		}

		if err := revokeSession(ctx, tx, session.ID, now, reason); err != nil {
			return err
		}
		session.RevokeTime = now
		session.RevokeReason = reason
		return nil
	})
	return session, err
}

// GetSession returns the session, active or not, or auth.ErrNotFound.
func (s *Store) GetSession(ctx context.Context, id string) (auth.Session, error) {
	var row sessionRow
	err := s.get(ctx, &row, `SELECT `+sessionColumns+` FROM sessions WHERE id = ?`, id)
	if err != nil {
		return auth.Session{}, translateError("select session "+id, err)
	}
	return row.session(), nil
}

// ListActiveSessions returns the user's unrevoked, unexpired sessions,
// newest first.
func (s *Store) ListActiveSessions(ctx context.Context, userID string, now time.Time) ([]auth.Session, error) {
	var rows []sessionRow
	err := s.db.SelectContext(ctx, &rows, s.db.Rebind(
		`SELECT `+sessionColumns+` FROM sessions
		 WHERE user_id = ? AND revoke_time IS NULL AND expire_time > ?
		 ORDER BY create_time DESC, id`), userID, micros(now))
	if err != nil {
		return nil, translateError("list sessions of user "+userID, err)
	}

	sessions := make([]auth.Session, len(rows))
	for i, row := range rows {
		sessions[i] = row.session()
	}
	return sessions, nil
}

// RevokeSession revokes an active session of the user, or returns
// auth.ErrNotFound.
func (s *Store) RevokeSession(ctx context.Context, userID, sessionID string, now time.Time, reason string) error {
	result, err := s.db.ExecContext(ctx, s.db.Rebind(
		`UPDATE sessions SET revoke_time = ?, revoke_reason = ?
		 WHERE id = ? AND user_id = ? AND revoke_time IS NULL AND expire_time > ?`),
		micros(now), reason, sessionID, userID, micros(now))
	if err != nil {
		return translateError("revoke session "+sessionID, err)
	}
	return requireRow(result, "revoke session "+sessionID)
}

// DeleteStaleRecords deletes the sessions (with their refresh tokens) that
// expired or were revoked before sessionsBefore, and the login-failure
// counters whose last failure is before failuresBefore and whose block has
// ended at now. It returns how many sessions and counters it deleted.
//
// Used refresh tokens of a live session are kept, because reuse detection
// needs them for as long as the session can still be refreshed.
func (s *Store) DeleteStaleRecords(ctx context.Context, sessionsBefore, failuresBefore, now time.Time) (sessions, failures int64, err error) {
	result, err := s.db.ExecContext(ctx, s.db.Rebind(
		`DELETE FROM sessions WHERE expire_time < ? OR revoke_time < ?`),
		micros(sessionsBefore), micros(sessionsBefore))
	if err != nil {
		return 0, 0, translateError("delete stale sessions", err)
	}
	if sessions, err = result.RowsAffected(); err != nil {
		return 0, 0, fmt.Errorf("delete stale sessions: %w", err)
	}

	result, err = s.db.ExecContext(ctx, s.db.Rebind(
		`DELETE FROM login_failures WHERE last_failure_time < ? AND blocked_until < ?`),
		micros(failuresBefore), micros(now))
	if err != nil {
		return sessions, 0, translateError("delete stale login failures", err)
	}
	if failures, err = result.RowsAffected(); err != nil {
		return sessions, 0, fmt.Errorf("delete stale login failures: %w", err)
	}
	return sessions, failures, nil
}
