package accesstoken

import (
	"fmt"
	"time"
)

// payloadClaims holds the claims as read from the payload, before their
// values are checked against the configuration and the clock.
type payloadClaims struct {
	iss, sub, jti, sid, email []byte
	hasIss, hasSub            bool

	aud      [maxAudiences][]byte
	audCount int

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
