package auth

import (
	"fmt"
	"net/mail"
	"strings"
	"unicode"
	"unicode/utf8"

	"golang.org/x/text/unicode/norm"
)

// Request field limits. Passwords are limited in bytes, not characters,
// because the hashing cost and the memory a request can pin depend on bytes.
const (
	// MaxEmailBytes is the longest address that SMTP can deliver to
	// (RFC 5321: a 256-octet path minus the angle brackets).
	MaxEmailBytes = 254
	// MinPasswordBytes and MaxPasswordBytes bound new passwords. Login
	// checks only the maximum, so that a changed minimum never locks out
	// an existing account.
	MinPasswordBytes = 8
	MaxPasswordBytes = 128
	// MaxRefreshTokenBytes rejects absurd refresh-token values before
	// hashing; a real token is much shorter.
	MaxRefreshTokenBytes = 256
	// MaxAccessTokenBytes matches the verifier's default token size limit.
	MaxAccessTokenBytes = 8 << 10
)

// normaliseEmail trims an email address, converts it to Unicode NFC and
// lower-cases it, so that each address has one stored form, and checks that
// it is a plain addr-spec within MaxEmailBytes.
//
// NOTE: accounts created before NFC normalisation keep the stored form they
// were given, so one whose email was sent in another normalisation form
// (such as NFD) no longer matches at login.
func normaliseEmail(raw string) (string, []FieldViolation) {
	bad := func(description string) (string, []FieldViolation) {
		return "", []FieldViolation{{Field: "email", Description: description}}
	}

	if !utf8.ValidString(raw) {
		return bad("must be valid UTF-8")
	}
	email := strings.ToLower(norm.NFC.String(strings.TrimSpace(raw)))
	switch {
	case email == "":
		return bad("is required")
	case len(email) > MaxEmailBytes:
		return bad(fmt.Sprintf("must be at most %d bytes", MaxEmailBytes))
	case strings.IndexFunc(email, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }) >= 0:
		return bad("must not contain spaces or control characters")
	}

	// ParseAddress also accepts forms like "Name <a@b>"; only a bare
	// address that parses to itself is accepted.
	parsed, err := mail.ParseAddress(email)
	if err != nil || parsed.Address != email || parsed.Name != "" {
		return bad("must be an email address such as name@example.com")
	}
	local, domain, _ := strings.Cut(email, "@")
	if local == "" || domain == "" || !strings.Contains(domain, ".") {
		return bad("must be an email address such as name@example.com")
	}
	return email, nil
}

// checkPassword checks a new password.
func checkPassword(field, pass string) []FieldViolation {
	if v := checkPasswordLength(field, pass); v != nil {
		return v
	}
	if len(pass) < MinPasswordBytes {
		return []FieldViolation{{Field: field, Description: fmt.Sprintf("must be at least %d bytes", MinPasswordBytes)}}
	}
	return nil
}

// checkPasswordLength checks a password before it is hashed: valid UTF-8,
// not empty, at most MaxPasswordBytes.
func checkPasswordLength(field, pass string) []FieldViolation {
	switch {
	case !utf8.ValidString(pass):
		return []FieldViolation{{Field: field, Description: "must be valid UTF-8"}}
	case pass == "":
		return []FieldViolation{{Field: field, Description: "is required"}}
	case len(pass) > MaxPasswordBytes:
		return []FieldViolation{{Field: field, Description: fmt.Sprintf("must be at most %d bytes", MaxPasswordBytes)}}
	}
	return nil
}

func checkRefreshToken(token string) error {
	var description string
	switch {
	case token == "":
		description = "is required"
	case len(token) > MaxRefreshTokenBytes:
		description = fmt.Sprintf("must be at most %d bytes", MaxRefreshTokenBytes)
	case !utf8.ValidString(token):
		description = "must be valid UTF-8"
	default:
		return nil
	}
	return &InvalidArgumentError{Violations: []FieldViolation{{Field: "refresh_token", Description: description}}}
}

// CheckAccessTokenField checks the size and encoding of an access token
// passed in a request field.
func CheckAccessTokenField(field, token string) error {
	var description string
	switch {
	case token == "":
		description = "is required"
	case len(token) > MaxAccessTokenBytes:
		description = fmt.Sprintf("must be at most %d bytes", MaxAccessTokenBytes)
	case !utf8.ValidString(token):
		description = "must be valid UTF-8"
	default:
		return nil
	}
	return &InvalidArgumentError{Violations: []FieldViolation{{Field: field, Description: description}}}
}
