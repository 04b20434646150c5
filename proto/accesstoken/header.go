package accesstoken

import (
	"fmt"
	"strings"
)

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
