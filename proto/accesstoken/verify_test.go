package accesstoken

import (
	"crypto"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	_ "crypto/sha512" // registers crypto.SHA512 for the RS512 case
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"
)

// hostileCase is one token that Verify must reject, with the reason it
// must give.
type hostileCase struct {
	name  string
	token func(t *testing.T) string
	want  error
	// lookup is true when the token is well-formed enough that Verify
	// looks up its kid with the KeyResolver. For every other case a
	// lookup is a failure.
	lookup bool
}

func fixed(token string) func(*testing.T) string {
	return func(*testing.T) string { return token }
}

func header(h string) func(*testing.T) string {
	return func(t *testing.T) string { return signHeader(t, h) }
}

func payload(p string) func(*testing.T) string {
	return func(t *testing.T) string { return signPayload(t, p) }
}

func claims(replace map[string]string) func(*testing.T) string {
	return payload(payloadJSON(replace))
}

// withSegments replaces segments of a validly signed token.
func withSegments(edit func(h, p, s string) string) func(*testing.T) string {
	return func(t *testing.T) string {
		h, p, s := splitToken(t, signPayload(t, payloadJSON(nil)))
		return edit(h, p, s)
	}
}

// signedWith builds a token whose header names alg and whose signature is
// computed by sign over the signing input.
func signedWith(alg string, sign func(t *testing.T, input []byte) []byte) func(*testing.T) string {
	return func(t *testing.T) string {
		h := `{"alg":"` + alg + `","typ":"at+jwt","kid":"` + testKid + `"}`
		input := b64(h) + "." + b64(payloadJSON(nil))
		return input + "." + base64.RawURLEncoding.EncodeToString(sign(t, []byte(input)))
	}
}

func structureCases() []hostileCase {
	validPayload := b64(payloadJSON(nil))
	return []hostileCase{
		{name: "empty token", token: fixed(""), want: errEmpty},
		{name: "one megabyte of dots", token: fixed(strings.Repeat(".", 1<<20)), want: errTooLarge},
		{name: "just over the size cap", token: fixed(strings.Repeat("A", defaultMaxTokenBytes+1)), want: errTooLarge},
		{name: "JWS JSON serialization", token: func(t *testing.T) string {
			h, p, s := splitToken(t, signPayload(t, payloadJSON(nil)))
			return `{"payload":"` + p + `","protected":"` + h + `","signature":"` + s + `"}`
		}, want: errJSONSerialized},
		{name: "JWE five segments", token: fixed(b64(`{"alg":"RSA-OAEP","enc":"A256GCM"}`) + ".AAAA.AAAA.AAAA.AAAA"), want: errJWE},
		{name: "two segments", token: withSegments(func(h, p, _ string) string { return h + "." + p }), want: errSegments},
		{name: "four segments", token: withSegments(func(h, p, s string) string { return h + "." + p + "." + s + "." + s }), want: errSegments},
		{name: "no dots", token: fixed("AAAA"), want: errSegments},
		{name: "empty signature", token: withSegments(func(h, p, _ string) string { return h + "." + p + "." }), want: errEmptySignature},
		{name: "empty header", token: withSegments(func(_, p, s string) string { return "." + p + "." + s }), want: errHeaderJSON},
		{name: "padded header", token: fixed(b64(validHeader+" ") + "=." + validPayload + ".AAAA"), want: errBase64},
		{name: "padded signature", token: withSegments(func(h, p, s string) string { return h + "." + p + "." + s + "==" }), want: errBase64},
		{name: "plus in signature", token: withSegments(func(h, p, s string) string { return h + "." + p + ".+" + s[1:] }), want: errBase64},
		{name: "slash in payload", token: withSegments(func(h, p, s string) string { return h + "./" + p[1:] + "." + s }), want: errBase64},
		{name: "newline in payload", token: withSegments(func(h, p, s string) string { return h + "." + p[:4] + "\n" + p[4:] + "." + s }), want: errBase64},
		{name: "space in header", token: withSegments(func(h, p, s string) string { return " " + h + "." + p + "." + s }), want: errBase64},
		// "QR" decodes to 0x41 with non-zero trailing bits, which strict
		// decoding rejects.
		{name: "non-canonical base64 tail", token: fixed("QR." + validPayload + ".AAAA"), want: errBase64},
		{name: "impossible base64 length", token: fixed("Q." + validPayload + ".AAAA"), want: errBase64},
	}
}

func headerCases() []hostileCase {
	kidHeader := func(kid string) func(*testing.T) string {
		return header(`{"alg":"RS256","typ":"at+jwt","kid":` + kid + `}`)
	}
	extra := func(member string) func(*testing.T) string {
		return header(`{"alg":"RS256","typ":"at+jwt","kid":"` + testKid + `",` + member + `}`)
	}
	zeroSignature := func(n int) func(*testing.T, []byte) []byte {
		return func(*testing.T, []byte) []byte { return make([]byte, n) }
	}
	rsaSign := func(hash crypto.Hash, pss bool) func(*testing.T, []byte) []byte {
		return func(t *testing.T, input []byte) []byte {
			key, _ := testKeys(t)
			h := hash.New()
			h.Write(input)
			var sig []byte
			var err error
			if pss {
				sig, err = rsa.SignPSS(rand.Reader, key, hash, h.Sum(nil), nil)
			} else {
				sig, err = rsa.SignPKCS1v15(nil, key, hash, h.Sum(nil))
			}
			if err != nil {
				t.Fatal(err)
			}
			return sig
		}
	}
	// The classic key-confusion attack: HS256 keyed with the bytes of the
	// verifier's own public key in PEM form.
	hmacWithPublicKey := func(t *testing.T, input []byte) []byte {
		key, _ := testKeys(t)
		der, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
		if err != nil {
			t.Fatal(err)
		}
		mac := hmac.New(sha256.New, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
		mac.Write(input)
		return mac.Sum(nil)
	}

	return []hostileCase{
		{name: "header is an array", token: header(`["RS256"]`), want: errHeaderJSON},
		{name: "header is a string", token: header(`"RS256"`), want: errHeaderJSON},
		{name: "header is null", token: header(`null`), want: errHeaderJSON},
		{name: "header with trailing data", token: header(validHeader + `{}`), want: errHeaderJSON},
		{name: "header with trailing comma", token: header(`{"alg":"RS256","typ":"at+jwt","kid":"` + testKid + `",}`), want: errHeaderJSON},
		{name: "header with invalid UTF-8", token: header("{\"alg\":\"RS256\",\"typ\":\"at+jwt\",\"kid\":\"key\xff\"}"), want: errHeaderJSON},
		{name: "header with lone surrogate", token: header(`{"alg":"RS256","typ":"at+jwt","kid":"\ud800"}`), want: errHeaderJSON},
		{name: "duplicate kid", token: header(`{"alg":"RS256","typ":"at+jwt","kid":"` + testKid + `","kid":"other"}`), want: errHeaderDup},
		{name: "duplicate alg", token: header(`{"alg":"RS256","alg":"RS256","typ":"at+jwt","kid":"` + testKid + `"}`), want: errHeaderDup},
		{name: "duplicate kid by escape", token: header(`{"alg":"RS256","typ":"at+jwt","kid":"` + testKid + `","k\u0069d":"other"}`), want: errHeaderDup},

		{name: "alg none", token: header(`{"alg":"none","typ":"at+jwt","kid":"` + testKid + `"}`), want: errAlgNone},
		{name: "alg None", token: header(`{"alg":"None","typ":"at+jwt","kid":"` + testKid + `"}`), want: errAlgNone},
		{name: "alg NONE", token: header(`{"alg":"NONE","typ":"at+jwt","kid":"` + testKid + `"}`), want: errAlgNone},
		{name: "alg nOnE", token: header(`{"alg":"nOnE","typ":"at+jwt","kid":"` + testKid + `"}`), want: errAlgNone},
		{name: "alg none with empty signature", token: func(t *testing.T) string {
			return b64(`{"alg":"none","typ":"at+jwt","kid":"`+testKid+`"}`) + "." + b64(payloadJSON(nil)) + "."
		}, want: errEmptySignature},
		{name: "alg HS256 keyed with public key", token: signedWith("HS256", hmacWithPublicKey), want: errAlg},
		{name: "alg RS512", token: signedWith("RS512", rsaSign(crypto.SHA512, false)), want: errAlg},
		{name: "alg PS256", token: signedWith("PS256", rsaSign(crypto.SHA256, true)), want: errAlg},
		{name: "alg ES256 zero signature", token: signedWith("ES256", zeroSignature(64)), want: errAlg},
		{name: "alg rs256 lower case", token: header(`{"alg":"rs256","typ":"at+jwt","kid":"` + testKid + `"}`), want: errAlg},
		{name: "alg missing", token: header(`{"typ":"at+jwt","kid":"` + testKid + `"}`), want: errAlg},
		{name: "alg not a string", token: header(`{"alg":256,"typ":"at+jwt","kid":"` + testKid + `"}`), want: errAlg},

		{name: "typ JWT", token: header(`{"alg":"RS256","typ":"JWT","kid":"` + testKid + `"}`), want: errType},
		{name: "typ missing", token: header(`{"alg":"RS256","kid":"` + testKid + `"}`), want: errType},
		{name: "typ of an ID token", token: header(`{"alg":"RS256","typ":"id+jwt","kid":"` + testKid + `"}`), want: errType},
		{name: "typ padded", token: header(`{"alg":"RS256","typ":"at+jwt ","kid":"` + testKid + `"}`), want: errType},
		{name: "typ not a string", token: header(`{"alg":"RS256","typ":["at+jwt"],"kid":"` + testKid + `"}`), want: errType},

		{name: "crit header", token: extra(`"crit":["exp"]`), want: errCrit},
		{name: "jku header", token: extra(`"jku":"http://127.0.0.1:1/jwks.json"`), want: errKeyHeader},
		{name: "x5u header", token: extra(`"x5u":"http://127.0.0.1:1/cert.pem"`), want: errKeyHeader},
		{name: "jwk header", token: extra(`"jwk":{"kty":"RSA","n":"AQAB","e":"AQAB"}`), want: errKeyHeader},
		{name: "x5c header", token: extra(`"x5c":["MIIB"]`), want: errKeyHeader},
		{name: "zip header", token: extra(`"zip":"DEF"`), want: errJWE},
		{name: "enc header", token: extra(`"enc":"A256GCM"`), want: errJWE},
		{name: "PBES2 huge count", token: extra(`"p2c":2147483647,"p2s":"AAAAAAAAAAA"`), want: errJWE},
		{name: "cty header", token: extra(`"cty":"JWT"`), want: errHeaderParam},
		{name: "b64 header", token: extra(`"b64":false`), want: errHeaderParam},

		{name: "kid missing", token: header(`{"alg":"RS256","typ":"at+jwt"}`), want: errKidMissing},
		{name: "kid number", token: kidHeader(`12345`), want: errKidType},
		{name: "kid null", token: kidHeader(`null`), want: errKidType},
		{name: "kid object", token: kidHeader(`{"$ne":""}`), want: errKidType},
		{name: "kid empty", token: kidHeader(`""`), want: errKidLength},
		{name: "kid over 128 bytes", token: kidHeader(`"` + strings.Repeat("k", maxKidBytes+1) + `"`), want: errKidLength},
		{name: "kid path traversal", token: kidHeader(`"../../../../dev/null"`), want: errKidCharset},
		{name: "kid SQL", token: kidHeader(`"x' UNION SELECT 'secret' --"`), want: errKidCharset},
		{name: "kid URL", token: kidHeader(`"http://127.0.0.1:1/key"`), want: errKidCharset},
		{name: "kid NUL byte", token: kidHeader(`"key\u0000"`), want: errKidCharset},
		{name: "kid non-ASCII", token: kidHeader(`"k\u00e9y"`), want: errKidCharset},

		{name: "unknown kid", token: kidHeader(`"no-such-key"`), want: errUnknownKid, lookup: true},
		{name: "signed by another key", token: func(t *testing.T) string {
			_, other := testKeys(t)
			return signRaw(t, other, validHeader, payloadJSON(nil))
		}, want: errBadSignature, lookup: true},
		{name: "signature bit flipped", token: withSegments(func(h, p, s string) string {
			sig, _ := base64.RawURLEncoding.DecodeString(s)
			sig[len(sig)/2] ^= 1
			return h + "." + p + "." + base64.RawURLEncoding.EncodeToString(sig)
		}), want: errBadSignature, lookup: true},
		{name: "signature too short", token: withSegments(func(h, p, _ string) string { return h + "." + p + ".AAAA" }), want: errBadSignature, lookup: true},
		{name: "signature too long", token: withSegments(func(h, p, s string) string { return h + "." + p + "." + s + "AAAA" }), want: errBadSignature, lookup: true},
	}
}

func claimCases() []hostileCase {
	now := testNow
	skew := defaultClockSkew
	times := func(exp, iat, nbf time.Time) map[string]string {
		return map[string]string{"exp": unixText(exp), "iat": unixText(iat), "nbf": unixText(nbf)}
	}
	deep := strings.Repeat("[", maxJSONDepth+1) + strings.Repeat("]", maxJSONDepth+1)
	var many strings.Builder
	for i := range maxMembers {
		fmt.Fprintf(&many, `"x%d":0,`, i)
	}

	cases := []hostileCase{
		{name: "payload is an array", token: payload(`[1]`), want: errPayloadJSON},
		{name: "payload is null", token: payload(`null`), want: errPayloadJSON},
		{name: "payload is a number", token: payload(`1`), want: errPayloadJSON},
		{name: "payload truncated", token: payload(strings.TrimSuffix(payloadJSON(nil), "}")), want: errPayloadJSON},
		{name: "payload with trailing data", token: payload(payloadJSON(nil) + "x"), want: errPayloadJSON},
		{name: "payload nested too deep", token: claims(map[string]string{"email": `"a@example.com","x":` + deep}), want: errPayloadJSON},
		{name: "payload with too many claims", token: payload(`{` + many.String() + strings.TrimPrefix(payloadJSON(nil), "{")), want: errPayloadJSON},
		{name: "duplicate sub", token: claims(map[string]string{"email": `"a@example.com","sub":"11111111-2222-4333-8444-555555555555"`}), want: errClaimDup},
		{name: "duplicate exp by escape", token: claims(map[string]string{"email": `"a@example.com","\u0065xp":9999999999`}), want: errClaimDup},

		{name: "exp missing", token: claims(map[string]string{"exp": ""}), want: errExpMissing},
		{name: "exp zero", token: claims(map[string]string{"exp": "0"}), want: errExpMissing},
		{name: "exp string", token: claims(map[string]string{"exp": `"` + unixText(now.Add(time.Minute)) + `"`}), want: errNumericDate},
		{name: "exp null", token: claims(map[string]string{"exp": `null`}), want: errNumericDate},
		{name: "exp fractional", token: claims(map[string]string{"exp": unixText(now.Add(time.Minute)) + ".5"}), want: errNumericDate},
		{name: "exp exponent", token: claims(map[string]string{"exp": "1.7e9"}), want: errNumericDate},
		{name: "exp negative", token: claims(map[string]string{"exp": "-1"}), want: errNumericDate},
		{name: "exp huge", token: claims(map[string]string{"exp": "9223372036854775808"}), want: errNumericDate},
		{name: "exp after year 9999", token: claims(map[string]string{"exp": "253402300800"}), want: errNumericDate},
		{name: "exp leading zero", token: claims(map[string]string{"exp": "0" + unixText(now.Add(time.Minute))}), want: errPayloadJSON},
		{name: "iat missing", token: claims(map[string]string{"iat": ""}), want: errIatMissing},
		{name: "iat fractional", token: claims(map[string]string{"iat": unixText(now) + ".25"}), want: errNumericDate},
		{name: "nbf negative", token: claims(map[string]string{"nbf": "-100"}), want: errNumericDate},
		{name: "exp equal to iat", token: claims(times(now.Add(time.Minute), now.Add(time.Minute), now)), want: errExpBeforeIat},
		{name: "exp before iat", token: claims(times(now.Add(time.Minute), now.Add(2*time.Minute), now)), want: errExpBeforeIat},
		{name: "lifetime above maximum", token: claims(times(now.Add(time.Hour), now.Add(-time.Second), now.Add(-time.Second))), want: errLifetime},
		{name: "lifetime overflowing Duration", token: claims(map[string]string{"exp": "253402300799", "iat": "1", "nbf": "1"}), want: errLifetime},

		{name: "expired beyond skew", token: claims(times(now.Add(-skew), now.Add(-10*time.Minute), now.Add(-10*time.Minute))), want: errExpired},
		{name: "expired long ago", token: claims(times(now.Add(-24*time.Hour), now.Add(-25*time.Hour), now.Add(-25*time.Hour))), want: errExpired},
		{name: "nbf in the future beyond skew", token: claims(times(now.Add(10*time.Minute), now.Add(-time.Minute), now.Add(skew+time.Second))), want: errNotYetValid},
		{name: "iat in the future beyond skew", token: claims(times(now.Add(10*time.Minute), now.Add(skew+time.Second), now)), want: errIssuedInFuture},

		{name: "aud wrong", token: claims(map[string]string{"aud": `"auth-service"`}), want: errAudience},
		{name: "aud padded", token: claims(map[string]string{"aud": `" todo-service"`}), want: errAudience},
		{name: "aud other case", token: claims(map[string]string{"aud": `"Todo-Service"`}), want: errAudience},
		{name: "aud empty string", token: claims(map[string]string{"aud": `""`}), want: errAudience},
		{name: "aud empty array", token: claims(map[string]string{"aud": `[]`}), want: errAudience},
		{name: "aud missing", token: claims(map[string]string{"aud": ""}), want: errAudience},
		{name: "aud array of others", token: claims(map[string]string{"aud": `["a","b"]`}), want: errAudience},
		{name: "aud number", token: claims(map[string]string{"aud": `1`}), want: errClaimType},
		{name: "aud array with number", token: claims(map[string]string{"aud": `["todo-service",1]`}), want: errClaimType},
		{name: "aud array too long", token: claims(map[string]string{"aud": `[` + strings.Repeat(`"x",`, maxAudiences) + `"todo-service"]`}), want: errAudienceCount},

		{name: "iss https scheme", token: claims(map[string]string{"iss": `"https://127.0.0.1:8081"`}), want: errIssuer},
		{name: "iss trailing slash", token: claims(map[string]string{"iss": `"http://127.0.0.1:8081/"`}), want: errIssuer},
		{name: "iss other case", token: claims(map[string]string{"iss": `"HTTP://127.0.0.1:8081"`}), want: errIssuer},
		{name: "iss missing", token: claims(map[string]string{"iss": ""}), want: errIssuer},
		{name: "iss not a string", token: claims(map[string]string{"iss": `["http://127.0.0.1:8081"]`}), want: errClaimType},

		{name: "sub missing", token: claims(map[string]string{"sub": ""}), want: errSubject},
		{name: "sub empty", token: claims(map[string]string{"sub": `""`}), want: errSubject},
		{name: "sub not a UUID", token: claims(map[string]string{"sub": `"alice"`}), want: errSubject},
		{name: "sub UUID in braces", token: claims(map[string]string{"sub": `"{0b8c6a36-8f7c-4a1e-9d7e-2f1c3b4a5d6e}"`}), want: errSubject},
		{name: "sub UUID without dashes", token: claims(map[string]string{"sub": `"0b8c6a368f7c4a1e9d7e2f1c3b4a5d6e1234"`}), want: errSubject},
		{name: "sub number", token: claims(map[string]string{"sub": `42`}), want: errClaimType},
		{name: "jti missing", token: claims(map[string]string{"jti": ""}), want: errJTIMissing},
		{name: "jti empty", token: claims(map[string]string{"jti": `""`}), want: errJTIMissing},
		{name: "sid missing", token: claims(map[string]string{"sid": ""}), want: errSIDMissing},
		{name: "sid empty", token: claims(map[string]string{"sid": `""`}), want: errSIDMissing},
		{name: "email not a string", token: claims(map[string]string{"email": `true`}), want: errClaimType},
	}

	// Claim values are checked after the signature, so these reasons
	// come after one key lookup.
	afterSignature := []error{
		errIssuer, errAudience, errSubject, errJTIMissing, errSIDMissing,
		errExpMissing, errIatMissing, errExpBeforeIat, errLifetime,
		errExpired, errNotYetValid, errIssuedInFuture,
	}
	for i := range cases {
		for _, reason := range afterSignature {
			if cases[i].want == reason {
				cases[i].lookup = true
			}
		}
	}
	return cases
}

func TestVerifyRejectsHostileTokens(t *testing.T) {
	groups := map[string][]hostileCase{
		"structure": structureCases(),
		"header":    headerCases(),
		"claims":    claimCases(),
	}
	for group, cases := range groups {
		t.Run(group, func(t *testing.T) {
			for _, tt := range cases {
				t.Run(tt.name, func(t *testing.T) {
					v, resolver := newTestVerifier(t)
					token := tt.token(t)

					got, err := v.Verify(t.Context(), token)
					if got != nil {
						t.Errorf("Verify() claims = %+v, want nil", got)
					}
					if !errors.Is(err, ErrInvalidToken) {
						t.Fatalf("Verify() error = %v, want one wrapping ErrInvalidToken", err)
					}
					if !errors.Is(err, tt.want) {
						t.Errorf("Verify() error = %v, want reason %q", err, tt.want)
					}

					// The reason must never quote the token: callers log it.
					for _, segment := range strings.Split(token, ".") {
						if len(segment) >= 8 && strings.Contains(err.Error(), segment) {
							t.Errorf("Verify() error %q contains a token segment", err)
						}
					}

					wantLookups := 0
					if tt.lookup {
						wantLookups = 1
					}
					if n := resolver.lookups(); n != wantLookups {
						t.Errorf("KeyResolver lookups = %d, want %d", n, wantLookups)
					}
				})
			}
		})
	}
}

func TestVerifyAcceptsEdgeCases(t *testing.T) {
	now := testNow
	skew := defaultClockSkew
	times := func(exp, iat, nbf time.Time) map[string]string {
		return map[string]string{"exp": unixText(exp), "iat": unixText(iat), "nbf": unixText(nbf)}
	}
	tests := []struct {
		name  string
		token func(t *testing.T) string
	}{
		{"valid token", claims(nil)},
		{"typ application/at+jwt", header(`{"alg":"RS256","typ":"application/at+jwt","kid":"` + testKid + `"}`)},
		{"typ upper case", header(`{"alg":"RS256","typ":"AT+JWT","kid":"` + testKid + `"}`)},
		{"header members reordered", header(`{"kid":"` + testKid + `","typ":"at+jwt","alg":"RS256"}`)},
		{"header with white space", header(" {\n\t\"alg\" : \"RS256\", \"typ\":\"at+jwt\" ,\"kid\":\"" + testKid + "\"}\r\n")},
		{"aud array containing ours", claims(map[string]string{"aud": `["other","todo-service"]`})},
		{"nbf missing", claims(map[string]string{"nbf": ""})},
		{"email missing", claims(map[string]string{"email": ""})},
		{"unknown claims ignored", claims(map[string]string{"email": `"a@example.com","scope":"todo","client_id":"cli","cnf":{"x5t#S256":["a",{"b":[null,true,false,-1.5e+3]}]}`})},
		{"expired within skew", claims(times(now.Add(-skew+time.Second), now.Add(-10*time.Minute), now.Add(-10*time.Minute)))},
		{"nbf within skew", claims(times(now.Add(10*time.Minute), now.Add(-time.Minute), now.Add(skew)))},
		{"iat within skew", claims(times(now.Add(10*time.Minute), now.Add(skew), now))},
		{"lifetime exactly maximum", claims(times(now.Add(30*time.Minute), now.Add(-30*time.Minute), now.Add(-30*time.Minute)))},
		{"escaped strings", claims(map[string]string{"email": `"al\u0069ce\/x@example.com \ud83d\ude00"`})},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v, _ := newTestVerifier(t)
			if _, err := v.Verify(t.Context(), tt.token(t)); err != nil {
				t.Errorf("Verify() error = %v, want nil", err)
			}
		})
	}
}

func TestVerifyKeyResolverErrors(t *testing.T) {
	token := mustSign(t, validClaims())
	otherErr := errors.New("disk on fire")

	tests := []struct {
		name        string
		resolverErr error
		wantIs      []error
		wantNotIs   []error
	}{
		{
			name:        "unknown key becomes invalid token",
			resolverErr: fmt.Errorf("kid %q: %w", testKid, ErrUnknownKey),
			wantIs:      []error{ErrInvalidToken, errUnknownKid, ErrUnknownKey},
		},
		{
			name:        "keys unavailable passes through",
			resolverErr: fmt.Errorf("no key set loaded: %w", ErrKeysUnavailable),
			wantIs:      []error{ErrKeysUnavailable},
			wantNotIs:   []error{ErrInvalidToken},
		},
		{
			name:        "other error is not invalid token",
			resolverErr: otherErr,
			wantIs:      []error{otherErr},
			wantNotIs:   []error{ErrInvalidToken, ErrKeysUnavailable},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v, resolver := newTestVerifier(t)
			resolver.err = tt.resolverErr

			_, err := v.Verify(t.Context(), token)
			for _, want := range tt.wantIs {
				if !errors.Is(err, want) {
					t.Errorf("Verify() error = %v, want one wrapping %q", err, want)
				}
			}
			for _, notWant := range tt.wantNotIs {
				if errors.Is(err, notWant) {
					t.Errorf("Verify() error = %v, want one not wrapping %q", err, notWant)
				}
			}
		})
	}
}

func TestVerifyRejectsSmallKey(t *testing.T) {
	small, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	v, resolver := newTestVerifier(t)
	resolver.keys[testKid] = &small.PublicKey

	_, err = v.Verify(t.Context(), signRaw(t, small, validHeader, payloadJSON(nil)))
	if !errors.Is(err, errKeyTooSmall) {
		t.Errorf("Verify(token signed with RSA 1024) error = %v, want %q", err, errKeyTooSmall)
	}
}

func TestVerifyConfiguredLimits(t *testing.T) {
	key, _ := testKeys(t)
	resolver := &mapResolver{keys: map[string]*rsa.PublicKey{testKid: &key.PublicKey}}
	now := testNow
	v, err := NewVerifier(VerifierConfig{
		Issuer:        testIssuer,
		Audiences:     []string{"other-service", testAudience},
		ClockSkew:     5 * time.Second,
		MaxLifetime:   10 * time.Minute,
		MaxTokenBytes: 2048,
		Now:           func() time.Time { return now },
		Keys:          resolver,
	})
	if err != nil {
		t.Fatalf("NewVerifier: %v", err)
	}
	times := func(exp, iat time.Time) string {
		return payloadJSON(map[string]string{"exp": unixText(exp), "iat": unixText(iat), "nbf": unixText(iat)})
	}

	tests := []struct {
		name    string
		payload string
		want    error // nil: accepted
	}{
		{"second audience accepted", payloadJSON(map[string]string{"aud": `"other-service"`, "exp": unixText(now.Add(time.Minute)), "iat": unixText(now)}), nil},
		{"lifetime at configured maximum", times(now.Add(5*time.Minute), now.Add(-5*time.Minute)), nil},
		{"lifetime above configured maximum", times(now.Add(5*time.Minute), now.Add(-5*time.Minute-time.Second)), errLifetime},
		{"expired beyond configured skew", times(now.Add(-5*time.Second), now.Add(-time.Minute)), errExpired},
		{"iat beyond configured skew", times(now.Add(5*time.Minute), now.Add(6*time.Second)), errIssuedInFuture},
		{"token above configured size", payloadJSON(map[string]string{"email": `"` + strings.Repeat("a", 2048) + `"`}), errTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := v.Verify(t.Context(), signRaw(t, key, validHeader, tt.payload))
			if tt.want == nil {
				if err != nil {
					t.Errorf("Verify() error = %v, want nil", err)
				}
				return
			}
			if !errors.Is(err, ErrInvalidToken) || !errors.Is(err, tt.want) {
				t.Errorf("Verify() error = %v, want reason %q", err, tt.want)
			}
		})
	}
}

func TestNewVerifierRejectsBadConfig(t *testing.T) {
	key, _ := testKeys(t)
	resolver := &mapResolver{keys: map[string]*rsa.PublicKey{testKid: &key.PublicKey}}
	valid := func() VerifierConfig {
		return VerifierConfig{Issuer: testIssuer, Audiences: []string{testAudience}, Keys: resolver}
	}
	tests := []struct {
		name string
		edit func(*VerifierConfig)
	}{
		{"empty issuer", func(c *VerifierConfig) { c.Issuer = "" }},
		{"no audience", func(c *VerifierConfig) { c.Audiences = nil }},
		{"empty audience", func(c *VerifierConfig) { c.Audiences = []string{testAudience, ""} }},
		{"nil resolver", func(c *VerifierConfig) { c.Keys = nil }},
		{"negative skew", func(c *VerifierConfig) { c.ClockSkew = -time.Second }},
		{"negative lifetime", func(c *VerifierConfig) { c.MaxLifetime = -time.Second }},
		{"negative size", func(c *VerifierConfig) { c.MaxTokenBytes = -1 }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := valid()
			tt.edit(&cfg)
			if _, err := NewVerifier(cfg); err == nil {
				t.Errorf("NewVerifier(%s) error = nil, want an error", tt.name)
			}
		})
	}

	if _, err := NewVerifier(valid()); err != nil {
		t.Errorf("NewVerifier(valid config) error = %v, want nil", err)
	}
}

// TestVerifyAllocationsBounded checks that rejecting a 1 MB token
// allocates a small constant, not memory in proportion to its size.
func TestVerifyAllocationsBounded(t *testing.T) {
	v, _ := newTestVerifier(t)
	tokens := map[string]string{
		"dots":            strings.Repeat(".", 1<<20),
		"base64":          strings.Repeat("A", 1<<20),
		"five segments":   strings.Repeat("A", 1<<19) + "...." + strings.Repeat("A", 1<<19),
		"JSON serialized": "{" + strings.Repeat(" ", 1<<20) + "}",
	}
	for name, token := range tokens {
		t.Run(name, func(t *testing.T) {
			const runs = 50
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			for range runs {
				if _, err := v.Verify(t.Context(), token); !errors.Is(err, errTooLarge) {
					t.Fatalf("Verify(1 MB token) error = %v, want %q", err, errTooLarge)
				}
			}
			runtime.ReadMemStats(&after)

			perRun := (after.TotalAlloc - before.TotalAlloc) / runs
			if perRun > 1024 {
				t.Errorf("Verify(1 MB token) allocated %d bytes per call, want at most 1024", perRun)
			}
		})
	}
}
