package accesstoken

import (
	"crypto"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"strings"
	"testing"
)

// BenchmarkVerify and BenchmarkRSAVerifyPKCS1v15 run on the same token and
// key, so their ratio is the cost of parsing and claim checks on top of
// the RSA verification that Verify contains.
func BenchmarkVerify(b *testing.B) {
	v, _ := newTestVerifier(b)
	token := mustSign(b, validClaims())
	ctx := b.Context()

	b.ReportAllocs()
	for b.Loop() {
		if _, err := v.Verify(ctx, token); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRSAVerifyPKCS1v15 measures the bare signature check: SHA-256
// of the signing input and rsa.VerifyPKCS1v15, with the signature already
// decoded.
func BenchmarkRSAVerifyPKCS1v15(b *testing.B) {
	key, _ := testKeys(b)
	token := mustSign(b, validClaims())
	dot := strings.LastIndexByte(token, '.')
	input := []byte(token[:dot])
	sig, err := base64.RawURLEncoding.DecodeString(token[dot+1:])
	if err != nil {
		b.Fatal(err)
	}

	b.ReportAllocs()
	for b.Loop() {
		digest := sha256.Sum256(input)
		if err := rsa.VerifyPKCS1v15(&key.PublicKey, crypto.SHA256, digest[:], sig); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkVerifyRejectOversized measures the rejection of a 1 MB token
// of dots, which must cost nothing in proportion to its size.
func BenchmarkVerifyRejectOversized(b *testing.B) {
	v, _ := newTestVerifier(b)
	token := strings.Repeat(".", 1<<20)
	ctx := b.Context()

	b.ReportAllocs()
	for b.Loop() {
		if _, err := v.Verify(ctx, token); err == nil {
			b.Fatal("Verify accepted an oversized token")
		}
	}
}

// BenchmarkVerifyParsing runs every step of Verify except the key lookup
// and the RSA check, which is the overhead that Verify adds to
// BenchmarkRSAVerifyPKCS1v15. It is less sensitive to a busy machine
// than the difference of the two larger numbers.
func BenchmarkVerifyParsing(b *testing.B) {
	v, _ := newTestVerifier(b)
	token := mustSign(b, validClaims())

	b.ReportAllocs()
	for b.Loop() {
		parts, err := v.decode(token)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := parseHeader(parts.header); err != nil {
			b.Fatal(err)
		}
		var p payloadClaims
		if err := p.parse(parts.payload); err != nil {
			b.Fatal(err)
		}
		if _, err := v.checkClaims(&p); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSign and BenchmarkRSASignPKCS1v15 show what jwx adds to the
// RSA signature that Sign contains.
func BenchmarkSign(b *testing.B) {
	key, _ := testKeys(b)
	signingKey := SigningKey{ID: testKid, Key: key}
	c := validClaims()

	b.ReportAllocs()
	for b.Loop() {
		if _, err := Sign(c, signingKey); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkRSASignPKCS1v15(b *testing.B) {
	key, _ := testKeys(b)
	token := mustSign(b, validClaims())
	input := []byte(token[:strings.LastIndexByte(token, '.')])

	b.ReportAllocs()
	for b.Loop() {
		digest := sha256.Sum256(input)
		if _, err := rsa.SignPKCS1v15(nil, key, crypto.SHA256, digest[:]); err != nil {
			b.Fatal(err)
		}
	}
}
