// Package accesstoken implements the access-token profile shared by the
// auth service, which signs tokens, and the todo service, which verifies
// them offline.
//
// A token is a compact JWS (RFC 7515) signed with RS256 and shaped by the
// JWT access-token profile of RFC 9068: the protected header carries
// alg=RS256, typ=at+jwt and kid; the payload carries iss, sub, aud, exp,
// iat, nbf, jti, sid and email, with every date in integer seconds.
//
// Sign builds tokens with github.com/lestrrat-go/jwx/v2. Verify parses
// them with its own strict parser instead of a general JOSE library, so it
// accepts exactly this profile, and checks the signature with crypto/rsa.
// Verify rejects:
//   - tokens over MaxTokenBytes (checked before any splitting), JWS JSON
//     serialization, JWE, and anything but three segments of base64url
//     without padding;
//   - a header or payload that is not one JSON object, or that repeats a
//     member name;
//   - any alg but RS256, a typ other than at+jwt or application/at+jwt,
//     a crit header, and every header parameter outside alg, typ and kid.
//     A jku, x5u, jwk or x5c header is rejected, not ignored, so no key
//     ever comes from the token itself;
//   - a kid that is missing, not a string, longer than 128 bytes or
//     outside [A-Za-z0-9_-]. Such a kid never reaches the KeyResolver;
//   - dates that are not non-negative JSON integers, a missing exp or iat,
//     exp not after iat, exp-iat above the maximum lifetime, an expired
//     token, and nbf or iat in the future beyond the clock skew;
//   - an iss that differs from the configured issuer in any byte, an aud
//     without a configured audience, a sub that is not a UUID, and a
//     missing or empty jti or sid.
package accesstoken

import (
	"context"
	"crypto/rsa"
	"errors"
	"time"
)

// TokenType is the value of the typ header of every access token.
const TokenType = "at+jwt"

// Claims is the content of an access token.
type Claims struct {
	Issuer    string
	Subject   string // user UUID
	Audience  []string
	Expiry    time.Time
	IssuedAt  time.Time
	NotBefore time.Time // zero: the token has no nbf claim
	ID        string    // jti
	SessionID string    // sid
	Email     string
}

// SigningKey is an RSA private key with the key ID that the kid header
// names.
type SigningKey struct {
	ID  string
	Key *rsa.PrivateKey
}

// KeyResolver returns the public key with the given key ID. It is
// implemented by the todo-service JWKS cache and by the auth-service key
// manager.
//
// PublicKey returns an error that wraps ErrUnknownKey when the key set has
// no key with that ID, and one that wraps ErrKeysUnavailable when no usable
// key set is loaded.
type KeyResolver interface {
	PublicKey(ctx context.Context, kid string) (*rsa.PublicKey, error)
}

var (
	// ErrInvalidToken is wrapped by every error that rejects a token.
	// The error text after the prefix gives the precise reason for the
	// log; clients get one generic UNAUTHENTICATED message.
	ErrInvalidToken = errors.New("invalid access token")

	// ErrKeysUnavailable reports that no usable key set is loaded yet, or
	// that the loaded one is too stale to trust. Callers map it to
	// UNAVAILABLE.
	ErrKeysUnavailable = errors.New("signing keys unavailable")

	// ErrUnknownKey is returned by a KeyResolver when the key set has no
	// key with the requested ID. Verify wraps it in ErrInvalidToken.
	ErrUnknownKey = errors.New("unknown signing key")
)
