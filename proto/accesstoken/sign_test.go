package accesstoken

import (
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestSignVerifyRoundTrip(t *testing.T) {
	v, _ := newTestVerifier(t)

	tests := []struct {
		name   string
		claims func() Claims
	}{
		{"one audience", validClaims},
		{"several audiences", func() Claims {
			c := validClaims()
			c.Audience = []string{"other-service", testAudience}
			return c
		}},
		{"no nbf and no email", func() Claims {
			c := validClaims()
			c.NotBefore = time.Time{}
			c.Email = ""
			return c
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			want := tt.claims()
			token := mustSign(t, want)

			got, err := v.Verify(t.Context(), token)
			if err != nil {
				t.Fatalf("Verify(signed token) error = %v, want nil", err)
			}
			if diff := cmp.Diff(&want, got); diff != "" {
				t.Errorf("Verify(signed token) claims mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestVerifyRejectsTamperedPayload(t *testing.T) {
	v, _ := newTestVerifier(t)
	token := mustSign(t, validClaims())

	other := validClaims()
	other.Subject = "11111111-2222-4333-8444-555555555555"
	forged := mustSign(t, other)

	// Header of one token, payload of another, signature of the first.
	h, _, sig := splitToken(t, token)
	_, p, _ := splitToken(t, forged)
	_, err := v.Verify(t.Context(), h+"."+p+"."+sig)
	if !errors.Is(err, ErrInvalidToken) || !errors.Is(err, errBadSignature) {
		t.Errorf("Verify(tampered) error = %v, want %v", err, errBadSignature)
	}
}

func TestSignHeader(t *testing.T) {
	h, _, _ := splitToken(t, mustSign(t, validClaims()))
	raw, err := base64.RawURLEncoding.DecodeString(h)
	if err != nil {
		t.Fatalf("decode header: %v", err)
	}
	var got map[string]any
	if err := json.Unmarshal(raw, &got); err != nil {
		t.Fatalf("unmarshal header %s: %v", raw, err)
	}

	want := map[string]any{"alg": "RS256", "typ": TokenType, "kid": testKid}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Sign() header mismatch (-want +got):\n%s", diff)
	}
}

func TestSignPayloadDates(t *testing.T) {
	c := validClaims()
	c.Expiry = c.Expiry.Add(700 * time.Millisecond)
	_, p, _ := splitToken(t, mustSign(t, c))
	raw, err := base64.RawURLEncoding.DecodeString(p)
	if err != nil {
		t.Fatalf("decode payload: %v", err)
	}

	// The dates must be JSON integers, which Verify requires.
	want := `"exp":` + unixText(c.Expiry) + `,"iat":` + unixText(c.IssuedAt) + `,"nbf":` + unixText(c.NotBefore) + `,`
	if !strings.Contains(string(raw), want) {
		t.Errorf("Sign() payload = %s, want it to contain %s", raw, want)
	}
}

func TestSignRejectsInvalidInput(t *testing.T) {
	key, _ := testKeys(t)
	small, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name string
		edit func(*Claims)
		key  SigningKey // zero: the valid test key
	}{
		{name: "nil key", key: SigningKey{ID: testKid}},
		{name: "1024-bit key", key: SigningKey{ID: testKid, Key: small}},
		{name: "empty kid", key: SigningKey{ID: "", Key: key}},
		{name: "kid with slash", key: SigningKey{ID: "a/b", Key: key}},
		{name: "empty issuer", edit: func(c *Claims) { c.Issuer = "" }},
		{name: "subject not a UUID", edit: func(c *Claims) { c.Subject = "alice" }},
		{name: "no audience", edit: func(c *Claims) { c.Audience = nil }},
		{name: "empty audience", edit: func(c *Claims) { c.Audience = []string{testAudience, ""} }},
		{name: "empty jti", edit: func(c *Claims) { c.ID = "" }},
		{name: "empty sid", edit: func(c *Claims) { c.SessionID = "" }},
		{name: "zero issued-at", edit: func(c *Claims) { c.IssuedAt = time.Time{} }},
		{name: "expiry equal to issued-at", edit: func(c *Claims) { c.Expiry = c.IssuedAt }},
		{name: "expiry before issued-at", edit: func(c *Claims) { c.Expiry = c.IssuedAt.Add(-time.Second) }},
		{name: "expiry after year 9999", edit: func(c *Claims) { c.Expiry = time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC) }},
		{name: "not-before before 1970", edit: func(c *Claims) { c.NotBefore = time.Unix(-5, 0) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := validClaims()
			if tt.edit != nil {
				tt.edit(&c)
			}
			signingKey := tt.key
			if tt.edit != nil {
				signingKey = SigningKey{ID: testKid, Key: key}
			}

			token, err := Sign(c, signingKey)
			if err == nil {
				t.Errorf("Sign() = %d-byte token, want an error", len(token))
			}
		})
	}
}
