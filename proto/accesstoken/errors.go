package accesstoken

import (
	"errors"
	"fmt"
)

// Reasons for rejecting a token. Each rejection wraps ErrInvalidToken and
// one of these, so tests can tell the reasons apart with errors.Is.
var (
	errEmpty          = errors.New("token is empty")
	errTooLarge       = errors.New("token is too large")
	errJSONSerialized = errors.New("JWS JSON serialization is not accepted")
	errJWE            = errors.New("JWE is not accepted")
	errSegments       = errors.New("token does not have three segments")
	errBase64         = errors.New("segment is not strict base64url without padding")
	errEmptySignature = errors.New("signature is empty")

	errHeaderJSON   = errors.New("header is not a valid JSON object")
	errHeaderDup    = errors.New("header has a duplicate parameter")
	errAlgNone      = errors.New(`alg "none" is not accepted`)
	errAlg          = errors.New("alg is not RS256")
	errType         = errors.New("typ is not at+jwt")
	errCrit         = errors.New("crit header is not accepted")
	errKeyHeader    = errors.New("key-carrying header (jku, x5u, jwk, x5c) is not accepted")
	errHeaderParam  = errors.New("header parameter is not part of the profile")
	errKidMissing   = errors.New("kid is missing")
	errKidType      = errors.New("kid is not a string")
	errKidLength    = errors.New("kid is empty or too long")
	errKidCharset   = errors.New("kid contains characters outside [A-Za-z0-9_-]")
	errUnknownKid   = errors.New("kid is not in the key set")
	errKeyTooSmall  = errors.New("public key is shorter than 2048 bits")
	errBadSignature = errors.New("signature does not verify")

	errPayloadJSON    = errors.New("payload is not a valid JSON object")
	errClaimDup       = errors.New("payload has a duplicate claim")
	errClaimType      = errors.New("claim has the wrong JSON type")
	errNumericDate    = errors.New("date claim is not a non-negative integer number of seconds")
	errExpMissing     = errors.New("exp is missing or zero")
	errIatMissing     = errors.New("iat is missing")
	errExpBeforeIat   = errors.New("exp is not after iat")
	errLifetime       = errors.New("exp-iat exceeds the maximum lifetime")
	errExpired        = errors.New("token has expired")
	errNotYetValid    = errors.New("nbf is in the future")
	errIssuedInFuture = errors.New("iat is in the future")
	errIssuer         = errors.New("iss does not match the configured issuer")
	errAudience       = errors.New("aud contains none of the configured audiences")
	errAudienceCount  = errors.New("aud has too many entries")
	errSubject        = errors.New("sub is missing or not a UUID")
	errJTIMissing     = errors.New("jti is missing or empty")
	errSIDMissing     = errors.New("sid is missing or empty")
	errBearer         = errors.New("authorization metadata is not one well-formed Bearer value")
)

// invalid returns an error that wraps ErrInvalidToken and reason. Detail,
// when set, is appended. It must never contain the token or any
// unvalidated text from it.
func invalid(reason error, detail string) error {
	if detail == "" {
		return fmt.Errorf("%w: %w", ErrInvalidToken, reason)
	}
	return fmt.Errorf("%w: %w (%s)", ErrInvalidToken, reason, detail)
}
