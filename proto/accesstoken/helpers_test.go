package accesstoken

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

const (
	testIssuer   = "http://127.0.0.1:8081"
	testAudience = "todo-service"
	testKid      = "key-2026-12-04"
)

// testNow is the injected clock of every test.
var testNow = time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)

var (
	keyOnce  sync.Once
	testKey  *rsa.PrivateKey
	otherKey *rsa.PrivateKey
)

// testKeys returns two RSA 2048 keys generated once per test binary.
func testKeys(tb testing.TB) (signing, other *rsa.PrivateKey) {
	tb.Helper()
	keyOnce.Do(func() {
		var err error
		if testKey, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
			panic(err)
		}
		if otherKey, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
			panic(err)
		}
	})
	return testKey, otherKey
}

// mapResolver is a KeyResolver over a fixed map. It counts lookups so
// tests can assert that a malformed kid never reaches it.
type mapResolver struct {
	mu    sync.Mutex
	keys  map[string]*rsa.PublicKey
	err   error // returned for every lookup when set
	calls int
}

func (r *mapResolver) PublicKey(_ context.Context, kid string) (*rsa.PublicKey, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls++
	if r.err != nil {
		return nil, r.err
	}
	key, ok := r.keys[kid]
	if !ok {
		return nil, fmt.Errorf("kid %q: %w", kid, ErrUnknownKey)
	}
	return key, nil
}

func (r *mapResolver) lookups() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.calls
}

func validClaims() Claims {
	return Claims{
		Issuer:    testIssuer,
		Subject:   "0b8c6a36-8f7c-4a1e-9d7e-2f1c3b4a5d6e",
		Audience:  []string{testAudience},
		Expiry:    testNow.Add(10 * time.Minute),
		IssuedAt:  testNow.Add(-5 * time.Minute),
		NotBefore: testNow.Add(-5 * time.Minute),
		ID:        "4f1c2b3a-1d2e-4f5a-8b9c-0d1e2f3a4b5c",
		SessionID: "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d",
		Email:     "alice@example.com",
	}
}

// newTestVerifier returns a Verifier for testIssuer and testAudience with
// the clock at testNow, and the resolver behind it, which contains testKid.
func newTestVerifier(tb testing.TB) (*Verifier, *mapResolver) {
	tb.Helper()
	key, _ := testKeys(tb)
	resolver := &mapResolver{keys: map[string]*rsa.PublicKey{testKid: &key.PublicKey}}
	v, err := NewVerifier(VerifierConfig{
		Issuer:    testIssuer,
		Audiences: []string{testAudience},
		Now:       func() time.Time { return testNow },
		Keys:      resolver,
	})
	if err != nil {
		tb.Fatalf("NewVerifier: %v", err)
	}
	return v, resolver
}

func mustSign(tb testing.TB, c Claims) string {
	tb.Helper()
	key, _ := testKeys(tb)
	token, err := Sign(c, SigningKey{ID: testKid, Key: key})
	if err != nil {
		tb.Fatalf("Sign: %v", err)
	}
	return token
}

func splitToken(tb testing.TB, token string) (header, payload, signature string) {
	tb.Helper()
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		tb.Fatalf("token has %d segments, want 3", len(parts))
	}
	return parts[0], parts[1], parts[2]
}

const validHeader = `{"alg":"RS256","typ":"at+jwt","kid":"` + testKid + `"}`

// claimOrder fixes the member order of payloads built by payloadJSON.
var claimOrder = []string{"iss", "sub", "aud", "exp", "iat", "nbf", "jti", "sid", "email"}

// payloadJSON returns the JSON text of validClaims with some members
// replaced by raw JSON text. An empty replacement drops the member.
func payloadJSON(replace map[string]string) string {
	c := validClaims()
	values := map[string]string{
		"iss":   strconv.Quote(c.Issuer),
		"sub":   strconv.Quote(c.Subject),
		"aud":   strconv.Quote(c.Audience[0]),
		"exp":   strconv.FormatInt(c.Expiry.Unix(), 10),
		"iat":   strconv.FormatInt(c.IssuedAt.Unix(), 10),
		"nbf":   strconv.FormatInt(c.NotBefore.Unix(), 10),
		"jti":   strconv.Quote(c.ID),
		"sid":   strconv.Quote(c.SessionID),
		"email": strconv.Quote(c.Email),
	}
	for name, value := range replace {
		values[name] = value
	}

	var b strings.Builder
	b.WriteByte('{')
	for _, name := range claimOrder {
		value := values[name]
		if value == "" {
			continue
		}
		if b.Len() > 1 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.Quote(name) + ":" + value)
	}
	b.WriteByte('}')
	return b.String()
}

// unixText returns t as a NumericDate in JSON text.
func unixText(t time.Time) string {
	return strconv.FormatInt(t.Unix(), 10)
}

func b64(s string) string {
	return base64.RawURLEncoding.EncodeToString([]byte(s))
}

// signRaw returns a compact JWS over the given header and payload JSON
// text, signed with RS256 by key.
func signRaw(tb testing.TB, key *rsa.PrivateKey, header, payload string) string {
	tb.Helper()
	input := b64(header) + "." + b64(payload)
	digest := sha256.Sum256([]byte(input))
	sig, err := rsa.SignPKCS1v15(nil, key, crypto.SHA256, digest[:])
	if err != nil {
		tb.Fatalf("SignPKCS1v15: %v", err)
	}
	return input + "." + base64.RawURLEncoding.EncodeToString(sig)
}

// signPayload signs payload JSON text under the valid header with the
// test key.
func signPayload(tb testing.TB, payload string) string {
	tb.Helper()
	key, _ := testKeys(tb)
	return signRaw(tb, key, validHeader, payload)
}

// signHeader signs the valid payload under header JSON text with the test
// key.
func signHeader(tb testing.TB, header string) string {
	tb.Helper()
	key, _ := testKeys(tb)
	return signRaw(tb, key, header, payloadJSON(nil))
}
