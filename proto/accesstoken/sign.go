package accesstoken

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jws"
)

// tokenPayload is the JSON form of Claims. Dates are integer seconds.
type tokenPayload struct {
	Issuer    string `json:"iss"`
	Subject   string `json:"sub"`
	Audience  any    `json:"aud"` // a string for one audience, else an array
	Expiry    int64  `json:"exp"`
	IssuedAt  int64  `json:"iat"`
	NotBefore int64  `json:"nbf,omitempty"`
	ID        string `json:"jti"`
	SessionID string `json:"sid"`
	Email     string `json:"email,omitempty"`
}

// Sign returns a compact RS256 JWS with header alg=RS256, typ=at+jwt, kid.
//
// Dates are truncated to whole seconds, and a zero NotBefore leaves out
// nbf. Sign rejects claims that Verify would reject whatever the clock and
// configuration: an empty iss, jti or sid, a sub that is not a UUID, no
// audience, a zero or negative iat, or an exp not after iat. It also
// rejects a key shorter than 2048 bits and a key ID that Verify would not
// accept (1 to 128 characters from [A-Za-z0-9_-]).
func Sign(c Claims, key SigningKey) (string, error) {
	if err := checkSigningKey(key); err != nil {
		return "", err
	}
	body, err := marshalClaims(c)
	if err != nil {
		return "", err
	}

	header := jws.NewHeaders()
	if err := header.Set(jws.TypeKey, TokenType); err != nil {
		return "", fmt.Errorf("accesstoken: set typ header: %w", err)
	}
	if err := header.Set(jws.KeyIDKey, key.ID); err != nil {
		return "", fmt.Errorf("accesstoken: set kid header: %w", err)
	}

	signed, err := jws.Sign(body, jws.WithKey(jwa.RS256, key.Key, jws.WithProtectedHeaders(header)))
	if err != nil {
		return "", fmt.Errorf("accesstoken: sign with kid %q: %w", key.ID, err)
	}
	return string(signed), nil
}

func checkSigningKey(key SigningKey) error {
	if key.Key == nil || key.Key.N == nil {
		return errors.New("accesstoken: signing key is nil")
	}
	if bits := key.Key.N.BitLen(); bits < minKeyBits {
		return fmt.Errorf("accesstoken: signing key %q has %d bits, want at least %d", key.ID, bits, minKeyBits)
	}
	if checkKid([]byte(key.ID)) != nil {
		return fmt.Errorf("accesstoken: key ID %q is not 1 to %d characters from [A-Za-z0-9_-]", key.ID, maxKidBytes)
	}
	return nil
}

func marshalClaims(c Claims) ([]byte, error) {
	switch {
	case c.Issuer == "":
		return nil, errors.New("accesstoken: issuer is empty")
	case !isUUID([]byte(c.Subject)):
		return nil, fmt.Errorf("accesstoken: subject %q is not a UUID", c.Subject)
	case len(c.Audience) == 0:
		return nil, errors.New("accesstoken: audience is empty")
	case c.ID == "":
		return nil, errors.New("accesstoken: token ID (jti) is empty")
	case c.SessionID == "":
		return nil, errors.New("accesstoken: session ID (sid) is empty")
	case c.IssuedAt.Unix() <= 0:
		return nil, fmt.Errorf("accesstoken: issued-at time %v is not after 1970", c.IssuedAt)
	case c.Expiry.Unix() <= c.IssuedAt.Unix():
		return nil, fmt.Errorf("accesstoken: expiry %v is not after issued-at time %v", c.Expiry, c.IssuedAt)
	case c.Expiry.Unix() > maxNumericDate:
		return nil, fmt.Errorf("accesstoken: expiry %v is after the year 9999", c.Expiry)
	}
	for i, aud := range c.Audience {
		if aud == "" {
			return nil, fmt.Errorf("accesstoken: audience %d is empty", i)
		}
	}

	p := tokenPayload{
		Issuer:    c.Issuer,
		Subject:   c.Subject,
		Expiry:    c.Expiry.Unix(),
		IssuedAt:  c.IssuedAt.Unix(),
		ID:        c.ID,
		SessionID: c.SessionID,
		Email:     c.Email,
	}
	if len(c.Audience) == 1 {
		p.Audience = c.Audience[0]
	} else {
		p.Audience = c.Audience
	}
	if !c.NotBefore.IsZero() {
		if c.NotBefore.Unix() <= 0 {
			return nil, fmt.Errorf("accesstoken: not-before time %v is not after 1970", c.NotBefore)
		}
		p.NotBefore = c.NotBefore.Unix()
	}

	body, err := json.Marshal(p)
	if err != nil {
		return nil, fmt.Errorf("accesstoken: encode claims: %w", err)
	}
	return body, nil
}
