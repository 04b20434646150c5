package auth

import (
	"context"
	"errors"
	"fmt"

	"github.com/google/uuid"

	"example.com/todoapp/auth-service/internal/password"
	"example.com/todoapp/proto/accesstoken"
)

// Authenticate verifies an access token and returns its claims. Errors wrap
// accesstoken.ErrInvalidToken or accesstoken.ErrKeysUnavailable.
func (s *Service) Authenticate(ctx context.Context, token string) (*accesstoken.Claims, error) {
	return s.verifier.Verify(ctx, token)
}

// GetUser returns the user with the given ID, or ErrNotFound.
func (s *Service) GetUser(ctx context.Context, userID string) (User, error) {
	user, _, err := s.store.GetUserByID(ctx, userID)
	return user, err
}

// ListSessions returns the user's active sessions, newest first.
func (s *Service) ListSessions(ctx context.Context, userID string) ([]Session, error) {
	return s.store.ListActiveSessions(ctx, userID, s.now())
}

// RevokeSession ends one active session of the user. It returns an
// *InvalidArgumentError for a malformed ID and ErrNotFound when the user has
// no such active session.
func (s *Service) RevokeSession(ctx context.Context, userID, sessionID string) error {
	if err := checkUUID("session_id", sessionID); err != nil {
		return err
	}
	return s.store.RevokeSession(ctx, userID, sessionID, s.now(), "revoked by user")
}

// ChangePassword checks oldPassword, stores newPassword and revokes every
// other session of the user, keeping currentSessionID. It returns
// ErrInvalidPassword for a wrong old password (counted by the account's
// login throttle) and a *TooManyAttemptsError while the account is blocked.
// It returns how many sessions it revoked.
func (s *Service) ChangePassword(ctx context.Context, userID, currentSessionID, oldPassword, newPassword string) (int64, error) {
	violations := checkPasswordLength("old_password", oldPassword)
	violations = append(violations, checkPassword("new_password", newPassword)...)
	if len(violations) > 0 {
		return 0, &InvalidArgumentError{Violations: violations}
	}

	user, hash, err := s.store.GetUserByID(ctx, userID)
	if err != nil {
		return 0, err
	}
	keys := []string{accountThrottleKey(user.Email)}
	if err := s.checkThrottle(ctx, keys); err != nil {
		return 0, err
	}

	err = s.hasher.Compare(ctx, hash, []byte(oldPassword))
	if errors.Is(err, password.ErrMismatch) {
		if err := s.recordFailure(ctx, keys); err != nil {
			return 0, err
		}
		return 0, ErrInvalidPassword
	}
	if err != nil {
		return 0, fmt.Errorf("check password of user %s: %w", userID, err)
	}

	newHash, err := s.hasher.Hash(ctx, []byte(newPassword))
	if err != nil {
		return 0, fmt.Errorf("hash password: %w", err)
	}
	return s.store.ChangePassword(ctx, userID, newHash, currentSessionID, s.now())
}

// Introspection is the result of IntrospectToken. Claims is nil when the
// token is not active.
type Introspection struct {
	Active bool
	Claims *accesstoken.Claims
	// Reason is the cause of an inactive result, for the log only.
	Reason string
}

// IntrospectToken reports whether an access token is active in the manner of
// RFC 7662: it is inactive when it fails verification, when its session was
// revoked, or when its user no longer exists. It returns an error only when
// the state cannot be determined (keys unavailable, storage failure).
func (s *Service) IntrospectToken(ctx context.Context, token string) (Introspection, error) {
	claims, err := s.verifier.Verify(ctx, token)
	if errors.Is(err, accesstoken.ErrInvalidToken) {
		return Introspection{Reason: err.Error()}, nil
	}
	if err != nil {
		return Introspection{}, err
	}

	session, err := s.store.GetSession(ctx, claims.SessionID)
	if errors.Is(err, ErrNotFound) {
		return Introspection{Reason: "session not found"}, nil
	}
	if err != nil {
		return Introspection{}, err
	}
	if session.UserID != claims.Subject {
		return Introspection{Reason: "session belongs to another user"}, nil
	}
	if !session.RevokeTime.IsZero() {
		return Introspection{Reason: "session revoked"}, nil
	}

	if _, _, err := s.store.GetUserByID(ctx, claims.Subject); errors.Is(err, ErrNotFound) {
		return Introspection{Reason: "user no longer exists"}, nil
	} else if err != nil {
		return Introspection{}, err
	}
	return Introspection{Active: true, Claims: claims}, nil
}

func checkUUID(field, value string) error {
	if _, err := uuid.Parse(value); err != nil || len(value) != 36 {
		return &InvalidArgumentError{Violations: []FieldViolation{{Field: field, Description: "must be a UUID in its 36-character form"}}}
	}
	return nil
}
