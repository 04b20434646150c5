package jwks

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/lestrrat-go/jwx/v2/jwk"

	"example.com/todoapp/proto/accesstoken"
)

func ecJWK(t *testing.T, kid string) map[string]any {
	t.Helper()
	private, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatalf("ecdsa.GenerateKey() error = %v", err)
	}
	key, err := jwk.FromRaw(&private.PublicKey)
	if err != nil {
		t.Fatalf("jwk.FromRaw(ecdsa public key) error = %v", err)
	}
	raw, err := json.Marshal(key)
	if err != nil {
		t.Fatalf("json.Marshal(EC JWK) error = %v", err)
	}
	var members map[string]any
	if err := json.Unmarshal(raw, &members); err != nil {
		t.Fatalf("json.Unmarshal(EC JWK) error = %v", err)
	}
	return with(members, map[string]any{"kid": kid, "alg": "RS256", "use": "sig"})
}

// TestParseKeySetRejectsKey checks each acceptance rule on a set of one
// bad key and one good key: the bad key is dropped with its reason and the
// good key is kept.
func TestParseKeySetRejectsKey(t *testing.T) {
	good := publicJWK("good", keyA())
	// 1025 bytes with the top bit set: an 8200-bit modulus.
	hugeModulus := append([]byte{0x80}, make([]byte, 1024)...)
	hugeModulus[len(hugeModulus)-1] = 1

	tests := []struct {
		name string
		key  any
		want string
	}{
		{"1024-bit modulus", publicJWK("bad", weakKey()), reasonModulusSize},
		{"8200-bit modulus", with(publicJWK("bad", keyB()), map[string]any{"n": b64(hugeModulus)}), reasonModulusSize},
		{"exponent 3", with(publicJWK("bad", keyB()), map[string]any{"e": "Aw"}), reasonExponent},
		{"exponent 65539", with(publicJWK("bad", keyB()), map[string]any{"e": "AQAD"}), reasonExponent},
		{"exponent over 64 bits", with(publicJWK("bad", keyB()), map[string]any{"e": b64(append([]byte{1}, make([]byte, 8)...))}), reasonExponent},
		{"member d", with(publicJWK("bad", keyB()), map[string]any{"d": "AQAB"}), reasonPrivateMember},
		{"member p", with(publicJWK("bad", keyB()), map[string]any{"p": "AQAB"}), reasonPrivateMember},
		{"member q", with(publicJWK("bad", keyB()), map[string]any{"q": "AQAB"}), reasonPrivateMember},
		{"member dp", with(publicJWK("bad", keyB()), map[string]any{"dp": "AQAB"}), reasonPrivateMember},
		{"member dq", with(publicJWK("bad", keyB()), map[string]any{"dq": "AQAB"}), reasonPrivateMember},
		{"member qi", with(publicJWK("bad", keyB()), map[string]any{"qi": "AQAB"}), reasonPrivateMember},
		{"member oth", with(publicJWK("bad", keyB()), map[string]any{"oth": []any{map[string]any{"r": "AQAB"}}}), reasonPrivateMember},
		{"member d null", with(publicJWK("bad", keyB()), map[string]any{"d": json.RawMessage("null")}), reasonPrivateMember},
		{"full private key", privateJWK("bad", keyB()), reasonPrivateMember},
		{"missing alg", with(publicJWK("bad", keyB()), map[string]any{"alg": nil}), reasonAlgorithm},
		{"alg RS512", with(publicJWK("bad", keyB()), map[string]any{"alg": "RS512"}), reasonAlgorithm},
		{"alg PS256", with(publicJWK("bad", keyB()), map[string]any{"alg": "PS256"}), reasonAlgorithm},
		{"alg none", with(publicJWK("bad", keyB()), map[string]any{"alg": "none"}), reasonAlgorithm},
		{"missing use", with(publicJWK("bad", keyB()), map[string]any{"use": nil}), reasonUse},
		{"use enc", with(publicJWK("bad", keyB()), map[string]any{"use": "enc"}), reasonUse},
		{"key_ops without verify", with(publicJWK("bad", keyB()), map[string]any{"key_ops": []string{"encrypt"}}), reasonKeyOps},
		{"kty EC", ecJWK(t, "bad"), reasonKeyType},
		{"kty oct", map[string]any{"kty": "oct", "kid": "bad", "alg": "RS256", "use": "sig", "k": "c2VjcmV0"}, reasonKeyType},
		{"unknown kty", with(publicJWK("bad", keyB()), map[string]any{"kty": "XYZ"}), reasonMalformed},
		{"missing kid", with(publicJWK("bad", keyB()), map[string]any{"kid": nil}), reasonKID},
		{"kid of 129 bytes", publicJWK(strings.Repeat("k", 129), keyB()), reasonKID},
		{"kid with space", publicJWK("bad kid", keyB()), reasonKID},
		{"kid with dot", publicJWK("bad.kid", keyB()), reasonKID},
		{"kid not a string", with(publicJWK("bad", keyB()), map[string]any{"kid": 7}), reasonMalformed},
		{"missing modulus", with(publicJWK("bad", keyB()), map[string]any{"n": nil}), reasonMalformed},
		{"empty modulus", with(publicJWK("bad", keyB()), map[string]any{"n": ""}), reasonModulusSize},
		{"modulus not base64url", with(publicJWK("bad", keyB()), map[string]any{"n": "!!!"}), reasonMalformed},
		{"key not an object", 42, reasonMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			body, err := json.Marshal(map[string]any{"keys": []any{tt.key, good}})
			if err != nil {
				t.Fatalf("json.Marshal() error = %v", err)
			}

			parsed, err := parseKeySet(body)
			if err != nil {
				t.Fatalf("parseKeySet() error = %v, want nil because the good key is usable", err)
			}
			if got := (&keySet{keys: parsed.keys}).keyIDs(); !slices.Equal(got, []string{"good"}) {
				t.Errorf("parseKeySet() kept kids %q, want only %q", got, "good")
			}
			if len(parsed.rejected) != 1 {
				t.Fatalf("parseKeySet() rejected %d keys, want 1: %+v", len(parsed.rejected), parsed.rejected)
			}
			if got := parsed.rejected[0]; got.reason != tt.want || got.index != 0 {
				t.Errorf("rejected key = index %d, reason %q (%v); want index 0, reason %q", got.index, got.reason, got.err, tt.want)
			}
		})
	}
}

func TestParseKeySetAcceptsKey(t *testing.T) {
	tests := []struct {
		name string
		key  map[string]any
	}{
		{"published form", publicJWK("a", keyA())},
		{"3072-bit modulus", publicJWK("a", keyC())},
		{"key_ops with verify", with(publicJWK("a", keyA()), map[string]any{"key_ops": []string{"verify"}})},
		{"exponent with leading zero", with(publicJWK("a", keyA()), map[string]any{"e": "AAEAAQ"})},
		{"unknown public member", with(publicJWK("a", keyA()), map[string]any{"x5t": "abc", "ext": true})},
		{"kid of 128 bytes", publicJWK(strings.Repeat("k", 128), keyA())},
		{"kid of every base64url character", publicJWK("ABCXYZabcxyz0189-_", keyA())},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			parsed, err := parseKeySet(jwksBody(t, tt.key))
			if err != nil {
				t.Fatalf("parseKeySet() error = %v, rejected %+v", err, parsed.rejected)
			}
			kid := tt.key["kid"].(string)
			if got := parsed.keys[kid]; got == nil || got.E != 65537 {
				t.Errorf("parseKeySet() keys[%q] = %v, want the RSA key with exponent 65537", kid, got)
			}
		})
	}
}

func TestParseKeySetDuplicateKids(t *testing.T) {
	t.Run("both usable", func(t *testing.T) {
		parsed, err := parseKeySet(jwksBody(t,
			publicJWK("dup", keyA()), publicJWK("other", keyC()), publicJWK("dup", keyB())))
		if err != nil {
			t.Fatalf("parseKeySet() error = %v", err)
		}
		if _, ok := parsed.keys["dup"]; ok {
			t.Errorf("parseKeySet() kept kid %q that two keys share, want both dropped", "dup")
		}
		if _, ok := parsed.keys["other"]; !ok {
			t.Errorf("parseKeySet() dropped kid %q, want it kept", "other")
		}
		var indexes []int
		for _, r := range parsed.rejected {
			if r.reason != reasonDuplicateKID {
				t.Errorf("rejected keys[%d] reason = %q, want %q", r.index, r.reason, reasonDuplicateKID)
			}
			indexes = append(indexes, r.index)
		}
		if !slices.Equal(indexes, []int{0, 2}) {
			t.Errorf("rejected indexes = %v, want [0 2]", indexes)
		}
	})

	t.Run("only duplicates", func(t *testing.T) {
		_, err := parseKeySet(jwksBody(t, publicJWK("dup", keyA()), publicJWK("dup", keyB())))
		if !errors.Is(err, errNoUsableKey) {
			t.Errorf("parseKeySet() error = %v, want errNoUsableKey", err)
		}
	})

	t.Run("one copy unusable", func(t *testing.T) {
		parsed, err := parseKeySet(jwksBody(t, publicJWK("dup", weakKey()), publicJWK("dup", keyA())))
		if err != nil {
			t.Fatalf("parseKeySet() error = %v", err)
		}
		if got := parsed.keys["dup"]; got == nil || !got.Equal(&keyA().PublicKey) {
			t.Errorf("parseKeySet() keys[dup] = %v, want the only usable key with that kid", got)
		}
	})
}

func TestParseKeySetRejectsDocument(t *testing.T) {
	tests := []struct {
		name string
		body string
		want error
	}{
		{"empty", "", errNotKeySet},
		{"html", "<html></html>", errNotKeySet},
		{"array", "[]", errNotKeySet},
		{"missing keys", `{"kty":"RSA"}`, errNotKeySet},
		{"null keys", `{"keys":null}`, errNotKeySet},
		{"keys object", `{"keys":{}}`, errNotKeySet},
		{"trailing data", `{"keys":[]}x`, errNotKeySet},
		{"empty keys", `{"keys":[]}`, errEmptySet},
		{"only unusable keys", `{"keys":[{"kty":"RSA"}]}`, errNoUsableKey},
		{"101 keys", `{"keys":[` + strings.Repeat(`{},`, 100) + `{}]}`, errTooManyKeys},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := parseKeySet([]byte(tt.body))
			if !errors.Is(err, tt.want) {
				t.Errorf("parseKeySet(%q) error = %v, want %v", tt.body, err, tt.want)
			}
		})
	}
}

func TestEncodeKeySetRoundTrip(t *testing.T) {
	want, err := parseKeySet(jwksBody(t, publicJWK("b", keyB()), publicJWK("a", keyA())))
	if err != nil {
		t.Fatalf("parseKeySet() error = %v", err)
	}

	body, err := encodeKeySet(want.keys)
	if err != nil {
		t.Fatalf("encodeKeySet() error = %v", err)
	}
	got, err := parseKeySet(body)
	if err != nil {
		t.Fatalf("parseKeySet(encoded) error = %v", err)
	}

	if len(got.keys) != 2 || len(got.rejected) != 0 {
		t.Fatalf("round trip kept %d keys and rejected %d, want 2 and 0", len(got.keys), len(got.rejected))
	}
	for kid, key := range want.keys {
		if !got.keys[kid].Equal(key) {
			t.Errorf("round trip changed key %q", kid)
		}
	}
	if !strings.HasPrefix(string(body), `{"keys":[{"kty":"RSA","kid":"a"`) {
		t.Errorf("encodeKeySet() = %.40s..., want keys sorted by kid", body)
	}
}

// TestCacheIgnoresUnacceptableKeysInFetch checks the rules end to end: a
// fetched set with bad keys installs only the good one and counts the rest.
func TestCacheIgnoresUnacceptableKeysInFetch(t *testing.T) {
	env := newTestEnv(t, nil)
	env.server.serveBody("", jwksBody(t,
		publicJWK("weak", weakKey()),
		with(publicJWK("e3", keyB()), map[string]any{"e": "Aw"}),
		privateJWK("private", keyB()),
		with(publicJWK("no-alg", keyB()), map[string]any{"alg": nil}),
		with(publicJWK("no-use", keyB()), map[string]any{"use": nil}),
		publicJWK("good", keyA()),
	))

	env.start(t)

	env.mustPublicKey(t, "good", keyA())
	for _, kid := range []string{"weak", "e3", "private", "no-alg", "no-use"} {
		env.mustFail(t, kid, accesstoken.ErrUnknownKey)
	}
	for reason, want := range map[string]float64{
		reasonModulusSize: 1, reasonExponent: 1, reasonPrivateMember: 1, reasonAlgorithm: 1, reasonUse: 1,
	} {
		if got := env.metricValue(t, "todo_jwks_keys_rejected_total", reason); got < want {
			t.Errorf("keys rejected{reason=%s} = %v, want at least %v", reason, got, want)
		}
	}
	if got := env.metricValue(t, "todo_jwks_keys", ""); got != 1 {
		t.Errorf("keys gauge = %v, want 1", got)
	}
	// The first unknown kid caused one refetch, and the cooldown
	// suppressed the others.
	env.wantFetches(t, 2)
}

func FuzzParseKeySet(f *testing.F) {
	f.Add([]byte(`{"keys":[]}`))
	f.Add([]byte(`{"keys":[{"kty":"RSA","kid":"a","alg":"RS256","use":"sig","n":"AQAB","e":"AQAB"}]}`))
	f.Add([]byte(`{"keys":[{"kty":"EC","crv":"P-256","x":"AQAB","y":"AQAB"}]}`))
	f.Add([]byte(`<html>`))
	f.Fuzz(func(t *testing.T, body []byte) {
		parsed, err := parseKeySet(body)
		if err == nil && !json.Valid(body) {
			t.Errorf("parseKeySet() accepted a body that is not valid JSON")
		}
		if err == nil && len(parsed.keys) == 0 {
			t.Errorf("parseKeySet() returned no keys and no error")
		}
		for kid, key := range parsed.keys {
			if validateKID(kid) != nil || key.E != requiredExponent || key.N.BitLen() < minModulusBits {
				t.Errorf("parseKeySet() accepted key %q that breaks the rules", kid)
			}
		}
	})
}

func TestParseKeySetKeyCountLimit(t *testing.T) {
	keys := make([]map[string]any, 0, maxKeys+1)
	for i := range maxKeys + 1 {
		keys = append(keys, publicJWK(fmt.Sprintf("key-%d", i), keyA()))
	}

	parsed, err := parseKeySet(jwksBody(t, keys[:maxKeys]...))
	if err != nil || len(parsed.keys) != maxKeys {
		t.Errorf("parseKeySet(%d keys) = %d keys, %v; want %d keys, nil", maxKeys, len(parsed.keys), err, maxKeys)
	}
	if _, err := parseKeySet(jwksBody(t, keys...)); !errors.Is(err, errTooManyKeys) {
		t.Errorf("parseKeySet(%d keys) error = %v, want errTooManyKeys", maxKeys+1, err)
	}
}
