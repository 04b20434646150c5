package accesstoken

import (
	"context"
	"crypto"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Defaults applied by NewVerifier to zero VerifierConfig fields.
const (
	defaultClockSkew     = 30 * time.Second
	defaultMaxLifetime   = time.Hour
	defaultMaxTokenBytes = 8 << 10
)

const (
	// maxKidBytes bounds the kid header, so a hostile kid never reaches
	// a KeyResolver, a log line or a cache key at length.
	maxKidBytes = 128

	// maxAudiences bounds the entries of an aud array.
	maxAudiences = 16

	// maxNumericDate is 9999-12-31T23:59:59Z in seconds. Larger dates
	// are rejected before any time arithmetic, so nothing overflows.
	maxNumericDate = 253402300799

	minKeyBits = 2048
)

// VerifierConfig configures a Verifier. A zero ClockSkew, MaxLifetime or
// MaxTokenBytes selects its default, and a nil Now selects time.Now.
type VerifierConfig struct {
	Issuer        string        // compared exactly with iss
	Audiences     []string      // aud must contain at least one of these
	ClockSkew     time.Duration // default 30s
	MaxLifetime   time.Duration // upper bound of exp-iat, default 1h
	MaxTokenBytes int           // default 8 KiB
	Now           func() time.Time
	Keys          KeyResolver
}

// Verifier checks access tokens against one issuer, a set of audiences
// and the keys of a KeyResolver. It is safe for concurrent use.
type Verifier struct {
	issuer        string
	audiences     []string
	clockSkew     time.Duration
	maxLifetime   time.Duration
	maxTokenBytes int
	now           func() time.Time
	keys          KeyResolver
}

// NewVerifier validates cfg, applies the defaults and returns a Verifier.
func NewVerifier(cfg VerifierConfig) (*Verifier, error) {
	if cfg.Issuer == "" {
		return nil, errors.New("accesstoken: issuer is empty")
	}
	if len(cfg.Audiences) == 0 {
		return nil, errors.New("accesstoken: no audience configured")
	}
	for i, aud := range cfg.Audiences {
		if aud == "" {
			return nil, fmt.Errorf("accesstoken: audience %d is empty", i)
		}
	}
	if cfg.Keys == nil {
		return nil, errors.New("accesstoken: key resolver is nil")
	}
	if cfg.ClockSkew < 0 {
		return nil, fmt.Errorf("accesstoken: clock skew %v is negative", cfg.ClockSkew)
	}
	if cfg.MaxLifetime < 0 {
		return nil, fmt.Errorf("accesstoken: max lifetime %v is negative", cfg.MaxLifetime)
	}
	if cfg.MaxTokenBytes < 0 {
		return nil, fmt.Errorf("accesstoken: max token bytes %d is negative", cfg.MaxTokenBytes)
	}

	v := &Verifier{
		issuer:        cfg.Issuer,
		audiences:     append([]string(nil), cfg.Audiences...),
		clockSkew:     cfg.ClockSkew,
		maxLifetime:   cfg.MaxLifetime,
		maxTokenBytes: cfg.MaxTokenBytes,
		now:           cfg.Now,
		keys:          cfg.Keys,
	}
	if v.clockSkew == 0 {
		v.clockSkew = defaultClockSkew
	}
	if v.maxLifetime == 0 {
		v.maxLifetime = defaultMaxLifetime
	}
	if v.maxTokenBytes == 0 {
		v.maxTokenBytes = defaultMaxTokenBytes
	}
	if v.now == nil {
		v.now = time.Now
	}
	return v, nil
}

var strictBase64 = base64.RawURLEncoding.Strict()

// Verify parses token, checks its signature with the key its kid names and
// checks every claim, then returns the claims.
//
// A rejected token yields an error that wraps ErrInvalidToken and states
// the reason. When the KeyResolver reports ErrKeysUnavailable, Verify
// returns that error unchanged, so the caller can return UNAVAILABLE.
// ErrUnknownKey from the resolver becomes ErrInvalidToken, and any other
// resolver error is returned wrapped, without ErrInvalidToken.
func (v *Verifier) Verify(ctx context.Context, token string) (*Claims, error) {
	parts, err := v.decode(token)
	if err != nil {
		return nil, err
	}

	kid, err := parseHeader(parts.header)
	if err != nil {
		return nil, err
	}
	var p payloadClaims
	if err := p.parse(parts.payload); err != nil {
		return nil, err
	}

	// Only a kid that passed parseHeader reaches the resolver, so a
	// malformed kid never triggers a key-set fetch.
	pub, err := v.publicKey(ctx, kid)
	if err != nil {
		return nil, err
	}
	digest := sha256.Sum256(parts.signingInput)
	if err := rsa.VerifyPKCS1v15(pub, crypto.SHA256, digest[:], parts.signature); err != nil {
		return nil, invalid(errBadSignature, "kid "+kid)
	}

	return v.checkClaims(&p)
}

// compactParts is a compact JWS split and decoded. All slices point into
// one buffer.
type compactParts struct {
	signingInput []byte // the header and payload segments and the dot
	header       []byte
	payload      []byte
	signature    []byte
}

// decode splits a compact JWS into its three segments and decodes them.
func (v *Verifier) decode(token string) (compactParts, error) {
	// The size cap comes first, so nothing below scans or allocates more
	// than MaxTokenBytes.
	if token == "" {
		return compactParts{}, invalid(errEmpty, "")
	}
	if len(token) > v.maxTokenBytes {
		return compactParts{}, invalid(errTooLarge, fmt.Sprintf("%d bytes, maximum %d", len(token), v.maxTokenBytes))
	}
	if token[0] == '{' {
		return compactParts{}, invalid(errJSONSerialized, "")
	}

	first := strings.IndexByte(token, '.')
	second := -1
	if first >= 0 {
		if i := strings.IndexByte(token[first+1:], '.'); i >= 0 {
			second = first + 1 + i
		}
	}
	if first < 0 || second < 0 || strings.IndexByte(token[second+1:], '.') >= 0 {
		dots := strings.Count(token, ".")
		if dots == 4 {
			return compactParts{}, invalid(errJWE, "five segments")
		}
		return compactParts{}, invalid(errSegments, fmt.Sprintf("%d segments", dots+1))
	}
	headerText, payloadText, sigText := token[:first], token[first+1:second], token[second+1:]
	if sigText == "" {
		return compactParts{}, invalid(errEmptySignature, "")
	}
	for _, segment := range [...]string{headerText, payloadText, sigText} {
		if !isBase64URL(segment) {
			return compactParts{}, invalid(errBase64, "")
		}
	}

	// One buffer holds a copy of the token, which is the signing input
	// and the decoder's source, followed by the decoded header, payload
	// and signature.
	buf := make([]byte, len(token)+
		strictBase64.DecodedLen(len(headerText))+
		strictBase64.DecodedLen(len(payloadText))+
		strictBase64.DecodedLen(len(sigText)))
	raw, rest := buf[:len(token)], buf[len(token):]
	copy(raw, token)

	var parts compactParts
	var err error
	parts.signingInput = raw[:second]
	if parts.header, rest, err = decodeSegment(rest, raw[:first]); err != nil {
		return compactParts{}, err
	}
	if parts.payload, rest, err = decodeSegment(rest, raw[first+1:second]); err != nil {
		return compactParts{}, err
	}
	if parts.signature, _, err = decodeSegment(rest, raw[second+1:]); err != nil {
		return compactParts{}, err
	}
	return parts, nil
}

// publicKey looks up kid with the KeyResolver and maps its errors. An
// unknown key makes the token invalid, and unavailable keys pass through.
func (v *Verifier) publicKey(ctx context.Context, kid string) (*rsa.PublicKey, error) {
	pub, err := v.keys.PublicKey(ctx, kid)
	switch {
	case errors.Is(err, ErrKeysUnavailable):
		return nil, err
	case errors.Is(err, ErrUnknownKey):
		return nil, fmt.Errorf("%w: %w: %w", ErrInvalidToken, errUnknownKid, err)
	case err != nil:
		return nil, fmt.Errorf("accesstoken: resolve key %q: %w", kid, err)
	case pub == nil || pub.N == nil:
		return nil, fmt.Errorf("accesstoken: key resolver returned no key for kid %q", kid)
	case pub.N.BitLen() < minKeyBits:
		return nil, invalid(errKeyTooSmall, fmt.Sprintf("kid %q has %d bits", kid, pub.N.BitLen()))
	}
	return pub, nil
}

func isBase64URL(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// decodeSegment decodes text into the front of buf and returns the
// decoded bytes and the unused rest of buf.
func decodeSegment(buf, text []byte) (decoded, rest []byte, err error) {
	n := strictBase64.DecodedLen(len(text))
	m, err := strictBase64.Decode(buf[:n], text)
	if err != nil {
		return nil, nil, invalid(errBase64, "")
	}
	return buf[:m], buf[n:], nil
}
