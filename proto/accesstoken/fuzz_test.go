package accesstoken

import (
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
