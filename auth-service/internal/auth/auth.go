// Package auth holds the auth service's domain: accounts, login sessions,
// refresh-token rotation, login throttling and the errors the gRPC layer maps
// to status codes. Storage is behind the Store interface.
package auth

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
)

// User is an account.
type User struct {
	ID         string // UUID
	Email      string // normalised: trimmed, lower case
	CreateTime time.Time
}

// Session is one login and the family of refresh tokens it produced.
type Session struct {
	ID              string // UUID, the sid claim of its access tokens
	UserID          string
	CreateTime      time.Time
	LastRefreshTime time.Time
	ExpireTime      time.Time // when the current refresh token stops working
	RevokeTime      time.Time // zero while the session is active
	RevokeReason    string
}

// Active reports whether the session is neither revoked nor expired at now.
func (s Session) Active(now time.Time) bool {
	return s.RevokeTime.IsZero() && now.Before(s.ExpireTime)
}

// TokenPair is the result of a sign-up, login or refresh.
type TokenPair struct {
	AccessToken           string
	AccessTokenExpiresIn  time.Duration
	RefreshToken          string
	RefreshTokenExpiresIn time.Duration
}

// Errors returned by Service and Store. The gRPC layer maps each to one
// status code.
var (
	// ErrNotFound: the record does not exist (or belongs to another user).
	ErrNotFound = errors.New("not found")
	// ErrAlreadyExists: a user with that email is already registered.
	ErrAlreadyExists = errors.New("already exists")
	// ErrInvalidCredentials: unknown email or wrong password, one error for
	// both so callers cannot tell which.
	ErrInvalidCredentials = errors.New("invalid email or password")
	// ErrInvalidPassword: the old password of a ChangePassword request is
	// wrong. The request names no email, so ErrInvalidCredentials would
	// not fit.
	ErrInvalidPassword = errors.New("invalid password")
	// ErrInvalidRefreshToken: the refresh token is unknown, expired, already
	// used, or its session was revoked.
	ErrInvalidRefreshToken = errors.New("invalid refresh token")
	// ErrRefreshTokenReused wraps ErrInvalidRefreshToken. It reports that a
	// refresh token was presented again after the reuse grace window, and
	// that its whole session has been revoked.
	ErrRefreshTokenReused = fmt.Errorf("%w: reused after rotation, session revoked", ErrInvalidRefreshToken)
	// ErrRefreshTokenRetried wraps ErrInvalidRefreshToken. It reports a
	// second use within the grace window: rejected, but the session stays.
	ErrRefreshTokenRetried = fmt.Errorf("%w: already used within the reuse grace window", ErrInvalidRefreshToken)
)

// TooManyAttemptsError reports that login attempts for an account or from a
// client address are blocked until RetryAfter has passed.
type TooManyAttemptsError struct {
	RetryAfter time.Duration
}

func (e *TooManyAttemptsError) Error() string {
	return fmt.Sprintf("too many failed login attempts: retry after %s", e.RetryAfter.Round(time.Second))
}

// FieldViolation names one invalid request field and describes the problem.
type FieldViolation struct {
	Field       string
	Description string
}

// InvalidArgumentError lists the invalid fields of a request.
type InvalidArgumentError struct {
	Violations []FieldViolation
}

func (e *InvalidArgumentError) Error() string {
	var b strings.Builder
	b.WriteString("invalid argument")
	for i, v := range e.Violations {
		if i == 0 {
			b.WriteString(": ")
		} else {
			b.WriteString("; ")
		}
		b.WriteString(v.Field + ": " + v.Description)
	}
	return b.String()
}

// Store keeps users, sessions, refresh tokens and login-failure counters.
// Methods return ErrNotFound and ErrAlreadyExists where documented, and
// other errors only for storage failures.
type Store interface {
	// CreateUser inserts u with its password hash, or returns
	// ErrAlreadyExists when the email is taken.
	CreateUser(ctx context.Context, u User, passwordHash string) error
	// GetUserByEmail returns the user and password hash, or ErrNotFound.
	GetUserByEmail(ctx context.Context, email string) (User, string, error)
	// GetUserByID returns the user and password hash, or ErrNotFound.
	GetUserByID(ctx context.Context, id string) (User, string, error)
	// ChangePassword stores a new password hash and revokes every active
	// session of the user except keepSessionID, in one transaction. It
	// returns how many sessions it revoked, or ErrNotFound.
	ChangePassword(ctx context.Context, userID, passwordHash, keepSessionID string, now time.Time) (int64, error)

	// CreateSession inserts s with its first refresh token.
	CreateSession(ctx context.Context, s Session, refreshTokenHash string) error
	// RotateRefreshToken exchanges one refresh token for the next, as
	// RefreshRotation describes.
	RotateRefreshToken(ctx context.Context, r RefreshRotation) (Session, error)
	// RevokeSessionByRefreshToken revokes the session that issued the token
	// (used or not) and returns it, or returns ErrNotFound for an unknown
	// token. Revoking a revoked session succeeds and keeps the first
	// revocation time.
	RevokeSessionByRefreshToken(ctx context.Context, tokenHash string, now time.Time, reason string) (Session, error)
	// GetSession returns a session whether active or not, or ErrNotFound.
	GetSession(ctx context.Context, id string) (Session, error)
	// ListActiveSessions returns the user's sessions that are not revoked
	// and not expired at now, newest first.
	ListActiveSessions(ctx context.Context, userID string, now time.Time) ([]Session, error)
	// RevokeSession revokes an active session of the user, or returns
	// ErrNotFound when the user has no such active session.
	RevokeSession(ctx context.Context, userID, sessionID string, now time.Time, reason string) error

	// LoginBlockedUntil returns the latest blocked-until time of the
	// throttle keys, or the zero time when none is blocked.
	LoginBlockedUntil(ctx context.Context, keys []string) (time.Time, error)
	// RecordLoginFailure counts one failure for key and returns the time
	// until which key is blocked (zero when it is not).
	RecordLoginFailure(ctx context.Context, key string, now time.Time, policy FailurePolicy) (time.Time, error)
	// ResetLoginFailures clears the counter of key.
	ResetLoginFailures(ctx context.Context, key string) error
}

// RefreshRotation is one refresh-token exchange. The store checks the old
// token and its session in one transaction and then:
//   - unknown, expired or revoked: returns ErrInvalidRefreshToken;
//   - already used less than ReuseGrace ago: returns ErrRefreshTokenRetried
//     and changes nothing;
//   - already used longer ago: revokes the session, commits, and returns
//     ErrRefreshTokenReused;
//   - otherwise: marks it used, stores NewHash expiring at NewExpireTime and
//     returns the updated session.
//
// Of two concurrent exchanges of one token, exactly one succeeds.
type RefreshRotation struct {
	OldHash       string
	NewHash       string
	Now           time.Time
	NewExpireTime time.Time
	ReuseGrace    time.Duration
}

// FailurePolicy decides how RecordLoginFailure counts and blocks.
type FailurePolicy struct {
	// ResetAfter restarts the count when the last failure is older.
	ResetAfter time.Duration
	// Delay returns how long to block after the given number of
	// consecutive failures, or 0 for no block.
	Delay func(failures int64) time.Duration
}
