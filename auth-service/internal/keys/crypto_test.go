package keys

import (
	"bytes"
	"errors"
	"testing"
)

func TestSealOpenRoundTrip(t *testing.T) {
	kek := testKEK()
	plaintext := []byte("private key bytes")

	box, err := seal(kek, "kid-1", plaintext)
	if err != nil {
		t.Fatalf("seal() = %v", err)
	}
	if bytes.Contains(box, plaintext) {
		t.Error("sealed box contains the plaintext")
	}
	got, err := open(kek, "kid-1", box)
	if err != nil {
		t.Fatalf("open() = %v", err)
	}
	if !bytes.Equal(got, plaintext) {
		t.Errorf("open() = %q, want %q", got, plaintext)
	}

	again, err := seal(kek, "kid-1", plaintext)
	if err != nil {
		t.Fatalf("second seal() = %v", err)
	}
	if bytes.Equal(box, again) {
		t.Error("two seals of the same plaintext are equal, want a fresh nonce each")
	}
}

func TestOpenRejects(t *testing.T) {
	kek := testKEK()
	box, err := seal(kek, "kid-1", []byte("private key bytes"))
	if err != nil {
		t.Fatalf("seal() = %v", err)
	}
	wrongKEK := testKEK()
	wrongKEK[31] ^= 1
	tampered := bytes.Clone(box)
	tampered[len(tampered)-1] ^= 1

	tests := []struct {
		name string
		kek  []byte
		kid  string
		box  []byte
	}{
		{"wrong KEK", wrongKEK, "kid-1", box},
		{"other kid", kek, "kid-2", box},
		{"tampered ciphertext", kek, "kid-1", tampered},
		{"truncated box", kek, "kid-1", box[:10]},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := open(tt.kek, tt.kid, tt.box); !errors.Is(err, ErrDecrypt) {
				t.Errorf("open() = %v, want ErrDecrypt", err)
			}
		})
	}

	if _, err := open(kek[:16], "kid-1", box); err == nil || errors.Is(err, ErrDecrypt) {
		t.Errorf("open() with a 16-byte KEK = %v, want a KEK size error", err)
	}
}

func TestSealKeyRoundTrip(t *testing.T) {
	key, err := pooledKey(t)(2048)
	if err != nil {
		t.Fatal(err)
	}
	kek := testKEK()

	sealed, err := sealKey(kek, newKeyID(), key)
	if err != nil {
		t.Fatalf("sealKey() = %v", err)
	}
	public, err := parsePublicKey(sealed.id, sealed.publicDER)
	if err != nil {
		t.Fatalf("parsePublicKey() = %v", err)
	}
	got, index, err := openPrivateKey([][]byte{kek}, sealed.id, sealed.privateBox, public)
	if err != nil {
		t.Fatalf("openPrivateKey() = %v", err)
	}
	if index != 0 {
		t.Errorf("openPrivateKey() KEK index = %d, want 0", index)
	}
	if !got.Equal(key) {
		t.Error("openPrivateKey() returned a different key")
	}

	wrongKEK := testKEK()
	wrongKEK[0] ^= 1
	if _, _, err := openPrivateKey([][]byte{wrongKEK}, sealed.id, sealed.privateBox, public); !errors.Is(err, ErrDecrypt) {
		t.Errorf("openPrivateKey() with the wrong KEK = %v, want ErrDecrypt", err)
	}

	other, err := pooledKey(t)(2048)
	if err != nil {
		t.Fatal(err)
	}
	if other.Equal(key) {
		t.Skip("key pool returned the same key twice")
	}
	if _, _, err := openPrivateKey([][]byte{kek}, sealed.id, sealed.privateBox, &other.PublicKey); err == nil {
		t.Error("openPrivateKey() with another public key = nil, want a mismatch error")
	}
}

func TestNewKeyID(t *testing.T) {
	seen := map[string]bool{}
	for range 100 {
		id := newKeyID()
		if len(id) != 22 {
			t.Fatalf("newKeyID() = %q with %d characters, want 22", id, len(id))
		}
		for _, c := range id {
			if !('A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
				t.Fatalf("newKeyID() = %q has %q, want base64url only", id, c)
			}
		}
		if seen[id] {
			t.Fatalf("newKeyID() repeated %q", id)
		}
		seen[id] = true
	}
}
