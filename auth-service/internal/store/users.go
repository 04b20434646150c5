package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"

	"example.com/todoapp/auth-service/internal/auth"
)

// translateError maps driver errors to the domain sentinels: no rows to
// auth.ErrNotFound and a unique violation to auth.ErrAlreadyExists. Other
// errors are wrapped with op.
func translateError(op string, err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, sql.ErrNoRows) {
		return auth.ErrNotFound
	}
	if isUniqueViolation(err) {
		return auth.ErrAlreadyExists
	}
	return fmt.Errorf("%s: %w", op, err)
}

func isUniqueViolation(err error) bool {
	var pqErr *pq.Error
	if errors.As(err, &pqErr) {
		return pqErr.Code == "23505"
	}
	// modernc.org/sqlite reports SQLITE_CONSTRAINT_UNIQUE (2067) and
	// SQLITE_CONSTRAINT_PRIMARYKEY (1555) in the message text.
	msg := err.Error()
	return strings.Contains(msg, "UNIQUE constraint failed") || strings.Contains(msg, "constraint failed: PRIMARY KEY")
}

func micros(t time.Time) int64 { return t.UnixMicro() }

func fromMicros(us int64) time.Time {
	if us == 0 {
		return time.Time{}
	}
	return time.UnixMicro(us).UTC()
}

type userRow struct {
	ID           string `db:"id"`
	Email        string `db:"email"`
	PasswordHash string `db:"password_hash"`
	CreateTime   int64  `db:"create_time"`
}

func (r userRow) user() auth.User {
	return auth.User{ID: r.ID, Email: r.Email, CreateTime: fromMicros(r.CreateTime)}
}

// CreateUser inserts u, or returns auth.ErrAlreadyExists when its email is
// taken.
func (s *Store) CreateUser(ctx context.Context, u auth.User, passwordHash string) error {
	_, err := s.db.ExecContext(ctx, s.db.Rebind(
		`INSERT INTO users (id, email, password_hash, create_time, update_time) VALUES (?, ?, ?, ?, ?)`),
		u.ID, u.Email, passwordHash, micros(u.CreateTime), micros(u.CreateTime))
	return translateError("insert user", err)
}

// GetUserByEmail returns the user with the normalised email and its password
// hash, or auth.ErrNotFound.
func (s *Store) GetUserByEmail(ctx context.Context, email string) (auth.User, string, error) {
	var row userRow
	err := s.get(ctx, &row, `SELECT id, email, password_hash, create_time FROM users WHERE email = ?`, email)
	if err != nil {
		return auth.User{}, "", translateError("select user by email", err)
	}
	return row.user(), row.PasswordHash, nil
}

// GetUserByID returns the user and its password hash, or auth.ErrNotFound.
func (s *Store) GetUserByID(ctx context.Context, id string) (auth.User, string, error) {
	var row userRow
	err := s.get(ctx, &row, `SELECT id, email, password_hash, create_time FROM users WHERE id = ?`, id)
	if err != nil {
		return auth.User{}, "", translateError("select user "+id, err)
	}
	return row.user(), row.PasswordHash, nil
}

// DeleteUser deletes the user and, by cascade, its sessions and refresh
// tokens. It returns auth.ErrNotFound for an unknown ID.
func (s *Store) DeleteUser(ctx context.Context, id string) error {
	result, err := s.db.ExecContext(ctx, s.db.Rebind(`DELETE FROM users WHERE id = ?`), id)
	if err != nil {
		return translateError("delete user "+id, err)
	}
	return requireRow(result, "delete user "+id)
}

// ChangePassword stores a new password hash for the user and revokes every
// active session except keepSessionID, in one transaction.
func (s *Store) ChangePassword(ctx context.Context, userID, passwordHash, keepSessionID string, now time.Time) (int64, error) {
	var revoked int64
	err := s.inTx(ctx, func(tx *sqlx.Tx) error {
		result, err := tx.ExecContext(ctx, tx.Rebind(
			`UPDATE users SET password_hash = ?, update_time = ? WHERE id = ?`),
			passwordHash, micros(now), userID)
		if err != nil {
			return translateError("update password of user "+userID, err)
		}
		if err := requireRow(result, "update password of user "+userID); err != nil {
			return err
		}

		result, err = tx.ExecContext(ctx, tx.Rebind(
			`UPDATE sessions SET revoke_time = ?, revoke_reason = ?
			 WHERE user_id = ? AND id <> ? AND revoke_time IS NULL`),
			micros(now), "password changed", userID, keepSessionID)
		if err != nil {
			return translateError("revoke sessions of user "+userID, err)
		}
		revoked, err = result.RowsAffected()
		return err
	})
	return revoked, err
}

func requireRow(result sql.Result, op string) error {
	n, err := result.RowsAffected()
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	if n == 0 {
		return auth.ErrNotFound
	}
	return nil
}

// inTx runs fn in a transaction and commits it when fn returns nil.
func (s *Store) inTx(ctx context.Context, fn func(tx *sqlx.Tx) error) error {
	tx, err := s.db.BeginTxx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin transaction: %w", err)
	}
	defer tx.Rollback()

	if err := fn(tx); err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit transaction: %w", err)
	}
	return nil
}

// forUpdate returns the row-locking suffix of a SELECT for the dialect.
// SQLite needs none, because its transactions here start with the write
// lock (_txlock=immediate).
func (s *Store) forUpdate() string {
	if s.dialect == Postgres {
		return " FOR UPDATE"
	}
	return ""
}
