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

// parseHeader checks the protected header and returns its kid.
func parseHeader(data []byte) (string, error) {
	s := jsonScanner{data: data}
	if !s.beginObject() {
		return "", invalid(errHeaderJSON, "")
	}

	var hasAlg, hasTyp bool
	var kid []byte
	hasKid := false
	for {
		name, ok, dup, err := s.nextMember()
		if err != nil {
			return "", invalid(errHeaderJSON, "")
		}
		if !ok {
			break
		}
		if dup {
			return "", invalid(errHeaderDup, "")
		}

		switch string(name) {
		case "alg":
			alg, isString, err := s.readStringValue()
			if err != nil {
				return "", invalid(errHeaderJSON, "")
			}
			if !isString || string(alg) != "RS256" {
				if isString && strings.EqualFold(string(alg), "none") {
					return "", invalid(errAlgNone, "")
				}
				return "", invalid(errAlg, "")
			}
			hasAlg = true

		case "typ":
			typ, isString, err := s.readStringValue()
			if err != nil {
				return "", invalid(errHeaderJSON, "")
			}
			if !isString || !isAccessTokenType(string(typ)) {
				return "", invalid(errType, "")
			}
			hasTyp = true

		case "kid":
			value, isString, err := s.readStringValue()
			if err != nil {
				return "", invalid(errHeaderJSON, "")
			}
			if !isString {
				return "", invalid(errKidType, "")
			}
			kid = value
			hasKid = true

		case "crit":
			return "", invalid(errCrit, "")
		case "jku", "x5u", "jwk", "x5c":
			return "", invalid(errKeyHeader, string(name))
		case "enc", "zip", "p2s", "p2c", "epk", "apu", "apv", "iv", "tag":
			return "", invalid(errJWE, "header "+string(name))
		default:
			// The profile fixes the header, so anything else (cty, b64,
			// x5t, private names) is rejected instead of ignored.
			return "", invalid(errHeaderParam, "")
		}
	}

	switch {
	case !hasAlg:
		return "", invalid(errAlg, "alg is missing")
	case !hasTyp:
		return "", invalid(errType, "typ is missing")
	case !hasKid:
		return "", invalid(errKidMissing, "")
	}
	if err := checkKid(kid); err != nil {
		return "", err
	}
	return string(kid), nil
}

// isAccessTokenType reports whether typ names an RFC 9068 access token.
// RFC 9068 section 2.1 registers the media type "application/at+jwt" and
// recommends the short form "at+jwt", so both are accepted. Media type
// names are case-insensitive, so the comparison is too.
func isAccessTokenType(typ string) bool {
	return strings.EqualFold(typ, TokenType) || strings.EqualFold(typ, "application/"+TokenType)
}

// checkKid accepts 1 to 128 bytes of the base64url alphabet, which covers
// UUIDs, RFC 7638 thumbprints and similar IDs but nothing shaped like a
// path, a URL or SQL.
func checkKid(kid []byte) error {
	if len(kid) == 0 || len(kid) > maxKidBytes {
		return invalid(errKidLength, fmt.Sprintf("%d bytes", len(kid)))
	}
	for _, c := range kid {
		if !('A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
			return invalid(errKidCharset, "")
		}
	}
	return nil
}

// readStringValue reads the value of the current member. When the value
// is not a string it is skipped and isString is false.
func (s *jsonScanner) readStringValue() (value []byte, isString bool, err error) {
	if s.peek() != '"' {
		return nil, false, s.skipValue()
	}
	value, err = s.readString()
	return value, true, err
}

// payloadClaims holds the claims as read from the payload, before their
// values are checked against the configuration and the clock.
type payloadClaims struct {
	iss, sub, jti, sid, email []byte
	hasIss, hasSub            bool

	aud      [maxAudiences][]byte
	audCount int
	hasAud   bool

	exp, iat, nbf          int64
	hasExp, hasIat, hasNbf bool
}

func (p *payloadClaims) parse(data []byte) error {
	s := jsonScanner{data: data}
	if !s.beginObject() {
		return invalid(errPayloadJSON, "")
	}

	for {
		name, ok, dup, err := s.nextMember()
		if err != nil {
			return invalid(errPayloadJSON, "")
		}
		if !ok {
			return nil
		}
		if dup {
			return invalid(errClaimDup, "")
		}

		switch string(name) {
		case "iss":
			p.iss, err = s.readClaimString("iss")
			p.hasIss = true
		case "sub":
			p.sub, err = s.readClaimString("sub")
			p.hasSub = true
		case "jti":
			p.jti, err = s.readClaimString("jti")
		case "sid":
			p.sid, err = s.readClaimString("sid")
		case "email":
			p.email, err = s.readClaimString("email")
		case "aud":
			err = p.readAudience(&s)
			p.hasAud = true
		case "exp":
			p.exp, err = s.readNumericDate("exp")
			p.hasExp = true
		case "iat":
			p.iat, err = s.readNumericDate("iat")
			p.hasIat = true
		case "nbf":
			p.nbf, err = s.readNumericDate("nbf")
			p.hasNbf = true
		default:
			if s.skipValue() != nil {
				err = invalid(errPayloadJSON, "")
			}
		}
		if err != nil {
			return err
		}
	}
}

func (s *jsonScanner) readClaimString(claim string) ([]byte, error) {
	value, isString, err := s.readStringValue()
	if err != nil {
		return nil, invalid(errPayloadJSON, "")
	}
	if !isString {
		return nil, invalid(errClaimType, claim+" is not a string")
	}
	return value, nil
}

// readAudience reads aud as a string or as an array of strings.
func (p *payloadClaims) readAudience(s *jsonScanner) error {
	switch s.peek() {
	case '"':
		value, err := s.readString()
		if err != nil {
			return invalid(errPayloadJSON, "")
		}
		p.aud[0] = value
		p.audCount = 1
		return nil

	case '[':
		s.pos++
		if s.consume(']') {
			return nil
		}
		for {
			if s.peek() != '"' {
				if s.skipValue() != nil {
					return invalid(errPayloadJSON, "")
				}
				return invalid(errClaimType, "aud entry is not a string")
			}
			if p.audCount == maxAudiences {
				return invalid(errAudienceCount, fmt.Sprintf("more than %d", maxAudiences))
			}
			value, err := s.readString()
			if err != nil {
				return invalid(errPayloadJSON, "")
			}
			p.aud[p.audCount] = value
			p.audCount++

			switch {
			case s.consume(','):
			case s.consume(']'):
				return nil
			default:
				return invalid(errPayloadJSON, "")
			}
		}

	default:
		if s.skipValue() != nil {
			return invalid(errPayloadJSON, "")
		}
		return invalid(errClaimType, "aud is not a string or an array")
	}
}

// readNumericDate reads an RFC 7519 NumericDate, restricted to a
// non-negative integer no later than the year 9999.
func (s *jsonScanner) readNumericDate(claim string) (int64, error) {
	c := s.peek()
	if c != '-' && (c < '0' || c > '9') {
		if s.skipValue() != nil {
			return 0, invalid(errPayloadJSON, "")
		}
		return 0, invalid(errNumericDate, claim+" is not a number")
	}
	text, err := s.readNumber()
	if err != nil {
		return 0, invalid(errPayloadJSON, "")
	}

	if text[0] == '-' {
		return 0, invalid(errNumericDate, claim+" is negative")
	}
	var n int64
	for _, d := range text {
		if d < '0' || d > '9' {
			return 0, invalid(errNumericDate, claim+" is not an integer")
		}
		n = n*10 + int64(d-'0')
		if n > maxNumericDate {
			return 0, invalid(errNumericDate, claim+" is after the year 9999")
		}
	}
	return n, nil
}

// checkClaims checks the parsed claims against the configuration and the
// clock and converts them to Claims.
func (v *Verifier) checkClaims(p *payloadClaims) (*Claims, error) {
	if !p.hasIss || string(p.iss) != v.issuer {
		return nil, invalid(errIssuer, "")
	}
	if !v.audienceMatches(p) {
		return nil, invalid(errAudience, "")
	}
	if !p.hasSub || !isUUID(p.sub) {
		return nil, invalid(errSubject, "")
	}
	if len(p.jti) == 0 {
		return nil, invalid(errJTIMissing, "")
	}
	if len(p.sid) == 0 {
		return nil, invalid(errSIDMissing, "")
	}

	if !p.hasExp || p.exp == 0 {
		return nil, invalid(errExpMissing, "")
	}
	if !p.hasIat {
		return nil, invalid(errIatMissing, "")
	}
	if p.exp <= p.iat {
		return nil, invalid(errExpBeforeIat, "")
	}
	// Compare in whole seconds: a difference of dates up to the year 9999
	// would overflow time.Duration. Flooring the maximum is exact because
	// the lifetime is a whole number of seconds.
	lifetime := p.exp - p.iat
	if maxSeconds := int64(v.maxLifetime / time.Second); lifetime > maxSeconds {
		return nil, invalid(errLifetime, fmt.Sprintf("%ds, maximum %v", lifetime, v.maxLifetime))
	}

	now := v.now()
	exp := time.Unix(p.exp, 0).UTC()
	iat := time.Unix(p.iat, 0).UTC()
	if !now.Before(exp.Add(v.clockSkew)) {
		return nil, invalid(errExpired, "")
	}
	if iat.After(now.Add(v.clockSkew)) {
		return nil, invalid(errIssuedInFuture, "")
	}
	var nbf time.Time
	if p.hasNbf {
		nbf = time.Unix(p.nbf, 0).UTC()
		if nbf.After(now.Add(v.clockSkew)) {
			return nil, invalid(errNotYetValid, "")
		}
	}

	c := &Claims{
		Issuer:    v.issuer,
		Subject:   string(p.sub),
		Audience:  make([]string, p.audCount),
		Expiry:    exp,
		IssuedAt:  iat,
		NotBefore: nbf,
		ID:        string(p.jti),
		SessionID: string(p.sid),
		Email:     string(p.email),
	}
	for i, aud := range p.aud[:p.audCount] {
		c.Audience[i] = string(aud)
	}
	return c, nil
}

func (v *Verifier) audienceMatches(p *payloadClaims) bool {
	for _, aud := range p.aud[:p.audCount] {
		for _, want := range v.audiences {
			if string(aud) == want {
				return true
			}
		}
	}
	return false
}

// isUUID reports whether b is a UUID in the canonical 8-4-4-4-12
// hexadecimal text form.
func isUUID(b []byte) bool {
	if len(b) != 36 {
		return false
	}
	for i, c := range b {
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
				return false
			}
		}
	}
	return true
}
