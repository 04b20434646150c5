package accesstoken

import (
	"encoding/base64"
	"errors"
	"strings"
	"testing"
)

// FuzzVerify feeds arbitrary text to Verify. It must never panic, and
// every rejection must wrap ErrInvalidToken.
func FuzzVerify(f *testing.F) {
	key, _ := testKeys(f)
	valid := mustSign(f, validClaims())
	h, p, s := splitToken(f, valid)

	seeds := []string{
		valid,
		"",
		".",
		"..",
		"....",
		h + "." + p + ".",
		h + "." + p + "." + s + "=",
		`{"payload":"` + p + `","signatures":[]}`,
		b64(`{"alg":"none","typ":"at+jwt","kid":"k"}`) + "." + p + ".",
		b64(`{"alg":"RS256","typ":"at+jwt","kid":"k","kid":"k"}`) + "." + p + "." + s,
		b64(`{"alg":"RS256","typ":"at+jwt","kid":"\ud800"}`) + "." + p + "." + s,
		b64(`{"alg":"RS256","typ":"at+jwt","kid":"`+testKid+`","x":`+strings.Repeat("[", 40)+`}`) + "." + p + "." + s,
		signRaw(f, key, validHeader, payloadJSON(map[string]string{"exp": "1.5e3"})),
		signRaw(f, key, validHeader, payloadJSON(map[string]string{"aud": `["a",{"b":[1,2,{}]},"todo-service"]`})),
		signRaw(f, key, validHeader, payloadJSON(map[string]string{"email": `"\u00e9\ud83d\ude00\"\\\/\b\f\n\r\t"`})),
		signRaw(f, key, validHeader, `[]`),
		b64(`{"alg":"RSA-OAEP","enc":"A256GCM","zip":"DEF"}`) + ".AA.AA.AA.AA",
	}
	for _, seed := range seeds {
		f.Add(seed)
	}

	v, _ := newTestVerifier(f)
	f.Fuzz(func(t *testing.T, token string) {
		claims, err := v.Verify(t.Context(), token)
		if err == nil {
			if claims == nil {
				t.Fatal("Verify() = nil, nil")
			}
			return
		}
		if !errors.Is(err, ErrInvalidToken) {
			t.Fatalf("Verify() error = %v, want one wrapping ErrInvalidToken", err)
		}
		if claims != nil {
			t.Fatalf("Verify() claims = %+v with error %v", claims, err)
		}
	})
}

// FuzzVerifySegments builds a token from arbitrary header and payload
// JSON text with a signature that never verifies, so the fuzzer explores
// the header and claim parsers instead of base64 noise. Every such token
// must be rejected with ErrInvalidToken and without a panic.
func FuzzVerifySegments(f *testing.F) {
	_, p, s := splitToken(f, mustSign(f, validClaims()))
	signature := s[:len(s)-4] + "AAAA"
	payload, err := base64.RawURLEncoding.DecodeString(p)
	if err != nil {
		f.Fatal(err)
	}

	f.Add(validHeader, string(payload))
	f.Add(`{"alg":"RS256","typ":"at+jwt","kid":"`+testKid+`","kid":"x"}`, string(payload))
	f.Add(`{"alg":"none","typ":"JWT"}`, `{}`)
	f.Add(`{"alg":"RS256","typ":"application/at+jwt","kid":"a\u005fb"}`, payloadJSON(map[string]string{"exp": "1e3"}))
	f.Add(validHeader, payloadJSON(map[string]string{"aud": `["x",["y"],{"z":null}]`}))
	f.Add(validHeader, `{"sub":"\ud83d\ude00","email":"\u0000"}`)

	v, _ := newTestVerifier(f)
	f.Fuzz(func(t *testing.T, header, payload string) {
		token := b64(header) + "." + b64(payload) + "." + signature
		claims, err := v.Verify(t.Context(), token)
		if err == nil {
			t.Fatalf("Verify() accepted a token with a forged signature: %+v", claims)
		}
		if !errors.Is(err, ErrInvalidToken) {
			t.Fatalf("Verify() error = %v, want one wrapping ErrInvalidToken", err)
		}
	})
}
