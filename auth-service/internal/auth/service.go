package auth

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"time"

	"github.com/google/uuid"

	"example.com/todoapp/auth-service/internal/password"
	"example.com/todoapp/proto/accesstoken"
)

// Config holds the Service settings.
type Config struct {
	Issuer          string
	Audiences       []string
	AccessTokenTTL  time.Duration
	RefreshTokenTTL time.Duration
	// RefreshReuseGrace is how long after a refresh token was exchanged a
	// second exchange is only rejected instead of revoking the session, so
	// that a client retrying a request whose response it lost is not logged
	// out.
	RefreshReuseGrace time.Duration
	Throttle          ThrottleConfig
	// Now returns the current time; nil means time.Now.
	Now func() time.Time
}

// SigningKeySource returns the key that signs new access tokens
// (keys.Manager).
type SigningKeySource interface {
	SigningKey(ctx context.Context) (accesstoken.SigningKey, error)
}

// TokenVerifier verifies access tokens (accesstoken.Verifier).
type TokenVerifier interface {
	Verify(ctx context.Context, token string) (*accesstoken.Claims, error)
}

// Service implements the account and session operations behind the gRPC
// API.
type Service struct {
	cfg      Config
	store    Store
	hasher   *password.Hasher
	keys     SigningKeySource
	verifier TokenVerifier
	logger   *slog.Logger
	now      func() time.Time
}

// NewService returns a Service. It returns an error for an invalid Config.
func NewService(cfg Config, store Store, hasher *password.Hasher, keys SigningKeySource, verifier TokenVerifier, logger *slog.Logger) (*Service, error) {
	if cfg.Issuer == "" || len(cfg.Audiences) == 0 {
		return nil, errors.New("invalid auth config: issuer and at least one audience are required")
	}
	if cfg.AccessTokenTTL <= 0 || cfg.RefreshTokenTTL <= 0 || cfg.RefreshReuseGrace < 0 {
		return nil, fmt.Errorf("invalid auth config: access TTL %s, refresh TTL %s and reuse grace %s must be positive",
			cfg.AccessTokenTTL, cfg.RefreshTokenTTL, cfg.RefreshReuseGrace)
	}
	if err := cfg.Throttle.validate(); err != nil {
		return nil, err
	}

	now := cfg.Now
	if now == nil {
		now = time.Now
	}
	return &Service{cfg: cfg, store: store, hasher: hasher, keys: keys, verifier: verifier, logger: logger, now: now}, nil
}

// SignUp creates an account and its first session. It returns an
// *InvalidArgumentError for a malformed email or password and
// ErrAlreadyExists when the email is registered.
func (s *Service) SignUp(ctx context.Context, email, pass string) (User, TokenPair, error) {
	email, violations := normaliseEmail(email)
	violations = append(violations, checkPassword("password", pass)...)
	if len(violations) > 0 {
		return User{}, TokenPair{}, &InvalidArgumentError{Violations: violations}
	}

	hash, err := s.hasher.Hash(ctx, []byte(pass))
	if err != nil {
		return User{}, TokenPair{}, fmt.Errorf("hash password: %w", err)
	}

	user := User{ID: uuid.NewString(), Email: email, CreateTime: s.now().Truncate(time.Microsecond)}
	if err := s.store.CreateUser(ctx, user, hash); err != nil {
		return User{}, TokenPair{}, err
	}

	tokens, err := s.startSession(ctx, user)
	if err != nil {
		return User{}, TokenPair{}, err
	}
	return user, tokens, nil
}

// Login starts a session for an existing account. It returns
// ErrInvalidCredentials for an unknown email or a wrong password, after the
// same amount of hashing work in both cases, and a *TooManyAttemptsError
// while the account or clientAddr is blocked after repeated failures.
// clientAddr may be the zero Addr when unknown.
func (s *Service) Login(ctx context.Context, email, pass string, clientAddr netip.Addr) (User, TokenPair, error) {
	email, violations := normaliseEmail(email)
	violations = append(violations, checkPasswordLength("password", pass)...)
	if len(violations) > 0 {
		return User{}, TokenPair{}, &InvalidArgumentError{Violations: violations}
	}

	accountKey := accountThrottleKey(email)
	keys := []string{accountKey}
	if clientAddr.IsValid() {
		keys = append(keys, addressThrottleKey(clientAddr))
	}
	if err := s.checkThrottle(ctx, keys); err != nil {
		return User{}, TokenPair{}, err
	}

	user, hash, err := s.store.GetUserByEmail(ctx, email)
	switch {
	case errors.Is(err, ErrNotFound):
		err = s.hasher.CompareDummy(ctx, []byte(pass))
	case err != nil:
		return User{}, TokenPair{}, err
	default:
		err = s.hasher.Compare(ctx, hash, []byte(pass))
	}
	if errors.Is(err, password.ErrMismatch) {
		if err := s.recordFailure(ctx, keys); err != nil {
			return User{}, TokenPair{}, err
		}
		return User{}, TokenPair{}, ErrInvalidCredentials
	}
	if err != nil {
		return User{}, TokenPair{}, fmt.Errorf("check password of user %s: %w", user.ID, err)
	}

	if err := s.store.ResetLoginFailures(ctx, accountKey); err != nil {
		return User{}, TokenPair{}, err
	}
	tokens, err := s.startSession(ctx, user)
	if err != nil {
		return User{}, TokenPair{}, err
	}
	return user, tokens, nil
}

// Refresh exchanges a refresh token for a new token pair. It returns an
// error wrapping ErrInvalidRefreshToken for any token that cannot be
// exchanged; see RefreshRotation for reuse handling.
func (s *Service) Refresh(ctx context.Context, refreshToken string) (TokenPair, error) {
	if err := checkRefreshToken(refreshToken); err != nil {
		return TokenPair{}, err
	}

	next, err := newRefreshToken()
	if err != nil {
		return TokenPair{}, err
	}
	now := s.now()
	session, err := s.store.RotateRefreshToken(ctx, RefreshRotation{
		OldHash:       hashRefreshToken(refreshToken),
		NewHash:       hashRefreshToken(next),
		Now:           now,
		NewExpireTime: now.Add(s.cfg.RefreshTokenTTL),
		ReuseGrace:    s.cfg.RefreshReuseGrace,
	})
	if errors.Is(err, ErrRefreshTokenReused) {
		s.logger.WarnContext(ctx, "refresh token reused after rotation: session revoked",
			"session_id", session.ID, "user_id", session.UserID)
		return TokenPair{}, err
	}
	if err != nil {
		return TokenPair{}, err
	}

	user, _, err := s.store.GetUserByID(ctx, session.UserID)
	if errors.Is(err, ErrNotFound) {
		return TokenPair{}, fmt.Errorf("%w: user %s no longer exists", ErrInvalidRefreshToken, session.UserID)
	}
	if err != nil {
		return TokenPair{}, err
	}

	access, err := s.mintAccessToken(ctx, user, session.ID, now)
	if err != nil {
		return TokenPair{}, err
	}
	return TokenPair{
		AccessToken:           access,
		AccessTokenExpiresIn:  s.cfg.AccessTokenTTL,
		RefreshToken:          next,
		RefreshTokenExpiresIn: s.cfg.RefreshTokenTTL,
	}, nil
}

// Logout revokes the session that issued refreshToken. It returns an error
// wrapping ErrInvalidRefreshToken for an unknown token. Access tokens already
// issued stay valid until they expire.
func (s *Service) Logout(ctx context.Context, refreshToken string) (Session, error) {
	if err := checkRefreshToken(refreshToken); err != nil {
		return Session{}, err
	}

	session, err := s.store.RevokeSessionByRefreshToken(ctx, hashRefreshToken(refreshToken), s.now(), "logout")
	if errors.Is(err, ErrNotFound) {
		return Session{}, fmt.Errorf("%w: unknown token", ErrInvalidRefreshToken)
	}
	return session, err
}

// startSession creates a session for user and returns its first token pair.
func (s *Service) startSession(ctx context.Context, user User) (TokenPair, error) {
	refresh, err := newRefreshToken()
	if err != nil {
		return TokenPair{}, err
	}

	now := s.now()
	session := Session{
		ID:              uuid.NewString(),
		UserID:          user.ID,
		CreateTime:      now,
		LastRefreshTime: now,
		ExpireTime:      now.Add(s.cfg.RefreshTokenTTL),
	}
	if err := s.store.CreateSession(ctx, session, hashRefreshToken(refresh)); err != nil {
		return TokenPair{}, err
	}

	access, err := s.mintAccessToken(ctx, user, session.ID, now)
	if err != nil {
		return TokenPair{}, err
	}
	return TokenPair{
		AccessToken:           access,
		AccessTokenExpiresIn:  s.cfg.AccessTokenTTL,
		RefreshToken:          refresh,
		RefreshTokenExpiresIn: s.cfg.RefreshTokenTTL,
	}, nil
}

func (s *Service) mintAccessToken(ctx context.Context, user User, sessionID string, now time.Time) (string, error) {
	key, err := s.keys.SigningKey(ctx)
	if err != nil {
		return "", fmt.Errorf("get signing key: %w", err)
	}

	// JWT dates are whole seconds, so the lifetime is counted from the
	// truncated issue time.
	issued := now.Truncate(time.Second)
	claims := accesstoken.Claims{
		Issuer:    s.cfg.Issuer,
		Subject:   user.ID,
		Audience:  s.cfg.Audiences,
		Expiry:    issued.Add(s.cfg.AccessTokenTTL),
		IssuedAt:  issued,
		NotBefore: issued,
		ID:        uuid.NewString(),
		SessionID: sessionID,
		Email:     user.Email,
	}
	token, err := accesstoken.Sign(claims, key)
	if err != nil {
		return "", fmt.Errorf("sign access token with key %s: %w", key.ID, err)
	}
	return token, nil
}

// refreshTokenBytes is the entropy of a refresh token: 256 bits.
const refreshTokenBytes = 32

func newRefreshToken() (string, error) {
	b := make([]byte, refreshTokenBytes)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("generate refresh token: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

// hashRefreshToken returns the hex SHA-256 under which a refresh token is
// stored. A plain hash is enough because the token has 256 random bits, so
// there is nothing to guess from a leaked table.
func hashRefreshToken(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}
