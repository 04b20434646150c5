package keys

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
)

// KEKSize is the length in bytes of the key-encryption key (AES-256).
const KEKSize = 32

// ErrDecrypt reports that a stored private key could not be decrypted,
// because the key-encryption key differs from the one that sealed it or the
// stored bytes were changed.
var ErrDecrypt = errors.New("decrypt signing key: wrong key-encryption key or corrupted data")

// kekIDLabel is the message that KEKID authenticates with the KEK.
const kekIDLabel = "todoapp auth-service key-encryption key id"

// KEKID returns a short public name for a key-encryption key: the first 6
// bytes of HMAC-SHA256 keyed with the KEK over a fixed label, in hex. It
// identifies for operators the KEK that sealed a stored key without revealing it,
// because the HMAC output gives no way back to its key.
func KEKID(kek []byte) string {
	mac := hmac.New(sha256.New, kek)
	mac.Write([]byte(kekIDLabel))
	return hex.EncodeToString(mac.Sum(nil)[:6])
}

// kekIDs returns the KEKID of each key-encryption key, for messages.
func kekIDs(keks [][]byte) string {
	ids := make([]string, len(keks))
	for i, kek := range keks {
		ids[i] = KEKID(kek)
	}
	return strings.Join(ids, ", ")
}

// newKeyID returns 128 random bits in unpadded base64url, so the kid is
// unguessable and safe in URLs and JOSE headers.
func newKeyID() string {
	return base64.RawURLEncoding.EncodeToString(randomBytes(16))
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	// Since Go 1.24 crypto/rand.Read never returns an error. It crashes the
	// program when the system source fails.
	rand.Read(b)
	return b
}

// sealedKey is a freshly generated key in the form the database stores.
type sealedKey struct {
	id         string
	bits       int
	key        *rsa.PrivateKey
	publicDER  []byte
	privateBox []byte
}

func sealKey(kek []byte, kid string, key *rsa.PrivateKey) (sealedKey, error) {
	publicDER, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		return sealedKey{}, fmt.Errorf("encode public key %s: %w", kid, err)
	}
	privateDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return sealedKey{}, fmt.Errorf("encode private key %s: %w", kid, err)
	}
	box, err := seal(kek, kid, privateDER)
	if err != nil {
		return sealedKey{}, err
	}
	return sealedKey{id: kid, bits: key.N.BitLen(), key: key, publicDER: publicDER, privateBox: box}, nil
}

// seal encrypts plaintext with AES-256-GCM under kek, binding it to kid as
// additional data so a sealed key copied to another row fails to open. The
// result is nonce || ciphertext.
func seal(kek []byte, kid string, plaintext []byte) ([]byte, error) {
	aead, err := newAEAD(kek)
	if err != nil {
		return nil, err
	}
	nonce := randomBytes(aead.NonceSize())
	return aead.Seal(nonce, nonce, plaintext, []byte(kid)), nil
}

// open reverses seal. Every failure after the KEK check wraps ErrDecrypt.
func open(kek []byte, kid string, box []byte) ([]byte, error) {
	aead, err := newAEAD(kek)
	if err != nil {
		return nil, err
	}
	if len(box) < aead.NonceSize()+aead.Overhead() {
		return nil, fmt.Errorf("key %s: sealed private key has %d bytes: %w", kid, len(box), ErrDecrypt)
	}
	nonce, ciphertext := box[:aead.NonceSize()], box[aead.NonceSize():]
	plaintext, err := aead.Open(nil, nonce, ciphertext, []byte(kid))
	if err != nil {
		return nil, fmt.Errorf("key %s: %w", kid, ErrDecrypt)
	}
	return plaintext, nil
}

// openAny opens box with the first of keks that opens it and returns the
// plaintext and the index of that KEK. When none opens it, the error wraps
// ErrDecrypt and names the ids of the KEKs tried.
func openAny(keks [][]byte, kid string, box []byte) ([]byte, int, error) {
	for i, kek := range keks {
		plaintext, err := open(kek, kid, box)
		if err == nil {
			return plaintext, i, nil
		}
		if !errors.Is(err, ErrDecrypt) {
			return nil, -1, err
		}
	}
	return nil, -1, fmt.Errorf("key %s: %w (tried key-encryption key ids %s)", kid, ErrDecrypt, kekIDs(keks))
}

func newAEAD(kek []byte) (cipher.AEAD, error) {
	if len(kek) != KEKSize {
		return nil, fmt.Errorf("invalid key-encryption key: has %d bytes, must have %d", len(kek), KEKSize)
	}
	block, err := aes.NewCipher(kek)
	if err != nil {
		return nil, fmt.Errorf("create AES cipher: %w", err)
	}
	return cipher.NewGCM(block)
}

// openPrivateKey decrypts a sealed private key with the first of keks that
// opens it and returns the key with the index of that KEK. It checks that
// the key belongs to the stored public key, so a row whose columns were
// mixed up never signs tokens that its published key cannot verify.
func openPrivateKey(keks [][]byte, kid string, box []byte, public *rsa.PublicKey) (*rsa.PrivateKey, int, error) {
	der, index, err := openAny(keks, kid, box)
	if err != nil {
		return nil, -1, err
	}
	key, err := parsePrivateKey(kid, der, public)
	if err != nil {
		return nil, -1, err
	}
	return key, index, nil
}

// parsePrivateKey parses a PKCS #8 RSA private key and checks that it
// belongs to public.
func parsePrivateKey(kid string, der []byte, public *rsa.PublicKey) (*rsa.PrivateKey, error) {
	parsed, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		return nil, fmt.Errorf("key %s: parse private key: %w", kid, err)
	}
	key, ok := parsed.(*rsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("key %s: private key is %T, not RSA", kid, parsed)
	}
	if !key.PublicKey.Equal(public) {
		return nil, fmt.Errorf("key %s: private key does not match the stored public key", kid)
	}
	return key, nil
}

func parsePublicKey(kid string, der []byte) (*rsa.PublicKey, error) {
	parsed, err := x509.ParsePKIXPublicKey(der)
	if err != nil {
		return nil, fmt.Errorf("key %s: parse public key: %w", kid, err)
	}
	key, ok := parsed.(*rsa.PublicKey)
	if !ok {
		return nil, fmt.Errorf("key %s: public key is %T, not RSA", kid, parsed)
	}
	return key, nil
}
