package accesstoken

import "strings"

const bearerPrefix = "bearer "

// ParseBearer extracts the token from exactly one metadata value
// "Bearer <token>" (case-insensitive scheme, one space, no stray whitespace).
//
// Every failure wraps ErrInvalidToken: no value, more than one value, a
// scheme other than Bearer, white space anywhere but the one separating
// space, or an empty token.
func ParseBearer(values []string) (string, error) {
	switch len(values) {
	case 0:
		return "", invalid(errBearer, "no authorization value")
	case 1:
	default:
		return "", invalid(errBearer, "more than one authorization value")
	}

	value := values[0]
	if len(value) < len(bearerPrefix) || !strings.EqualFold(value[:len(bearerPrefix)], bearerPrefix) {
		return "", invalid(errBearer, "scheme is not Bearer")
	}
	token := value[len(bearerPrefix):]
	if token == "" {
		return "", invalid(errBearer, "token is empty")
	}

	// A token is base64url text and dots, so any space, control byte or
	// non-ASCII byte is stray.
	for i := 0; i < len(token); i++ {
		if c := token[i]; c <= ' ' || c >= 0x7f {
			return "", invalid(errBearer, "token contains white space or control characters")
		}
	}
	return token, nil
}
