package password

import (
	"context"
	"errors"
	"strings"
	"testing"
)

// fastParams keep the unit tests quick; the encoding and comparison logic
// does not depend on the cost.
var fastParams = Params{MemoryKiB: 64, Iterations: 1, Parallelism: 1, SaltBytes: 16, KeyBytes: 32}

func TestHashAndCompare(t *testing.T) {
	h, err := NewHasher(fastParams, 2)
	if err != nil {
		t.Fatalf("NewHasher() = %v", err)
	}
	ctx := t.Context()

	encoded, err := h.Hash(ctx, []byte("correct horse"))
	if err != nil {
		t.Fatalf("Hash() = %v", err)
	}
	if !strings.HasPrefix(encoded, "$argon2id$v=19$m=64,t=1,p=1$") {
		t.Errorf("Hash() = %q, want the PHC prefix with its parameters", encoded)
	}

	if err := h.Compare(ctx, encoded, []byte("correct horse")); err != nil {
		t.Errorf("Compare(right password) = %v, want nil", err)
	}
	if err := h.Compare(ctx, encoded, []byte("wrong horse")); !errors.Is(err, ErrMismatch) {
		t.Errorf("Compare(wrong password) = %v, want ErrMismatch", err)
	}
	if err := h.CompareDummy(ctx, []byte("correct horse")); !errors.Is(err, ErrMismatch) {
		t.Errorf("CompareDummy() = %v, want ErrMismatch", err)
	}

	other, err := h.Hash(ctx, []byte("correct horse"))
	if err != nil {
		t.Fatalf("Hash() = %v", err)
	}
	if other == encoded {
		t.Error("Hash() returned the same encoding twice, want a new salt each time")
	}
}

func TestDefaultParamsEncoding(t *testing.T) {
	h, err := NewHasher(DefaultParams, 1)
	if err != nil {
		t.Fatalf("NewHasher() = %v", err)
	}
	encoded, err := h.Hash(t.Context(), []byte("password"))
	if err != nil {
		t.Fatalf("Hash() = %v", err)
	}
	if want := "$argon2id$v=19$m=19456,t=2,p=1$"; !strings.HasPrefix(encoded, want) {
		t.Errorf("Hash() = %q, want prefix %q", encoded, want)
	}
}

func TestCompareInvalidHash(t *testing.T) {
	h, err := NewHasher(fastParams, 1)
	if err != nil {
		t.Fatalf("NewHasher() = %v", err)
	}
	tests := []struct {
		name    string
		encoded string
	}{
		{"empty", ""},
		{"bcrypt", "$2a$10$abcdefghijklmnopqrstuu"},
		{"argon2i", "$argon2i$v=19$m=64,t=1,p=1$c2FsdHNhbHQ$a2V5a2V5a2V5a2V5"},
		{"old version", "$argon2id$v=16$m=64,t=1,p=1$c2FsdHNhbHQ$a2V5a2V5a2V5a2V5"},
		{"zero memory", "$argon2id$v=19$m=0,t=1,p=1$c2FsdHNhbHQ$a2V5a2V5a2V5a2V5"},
		{"huge memory", "$argon2id$v=19$m=4294967295,t=1,p=1$c2FsdHNhbHQ$a2V5a2V5a2V5a2V5"},
		{"padded salt", "$argon2id$v=19$m=64,t=1,p=1$c2FsdA==$a2V5a2V5a2V5a2V5"},
		{"missing key", "$argon2id$v=19$m=64,t=1,p=1$c2FsdHNhbHQ$"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := h.Compare(t.Context(), tt.encoded, []byte("x")); !errors.Is(err, ErrInvalidHash) {
				t.Errorf("Compare(%q) = %v, want ErrInvalidHash", tt.encoded, err)
			}
		})
	}
}

func TestHasherCapsConcurrency(t *testing.T) {
	const limit = 2
	h, err := NewHasher(fastParams, limit)
	if err != nil {
		t.Fatalf("NewHasher() = %v", err)
	}

	// Take every slot, then check that one more hash waits for a slot and
	// gives up when its context ends.
	for range limit {
		h.slots <- struct{}{}
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := h.Hash(ctx, []byte("x")); !errors.Is(err, context.Canceled) {
		t.Errorf("Hash() with every slot taken = %v, want context.Canceled", err)
	}
	for range limit {
		<-h.slots
	}

}

// BenchmarkCompareUnknownVersusWrong prints the time of a comparison against
// a stored hash with a wrong password and the time of the dummy comparison
// used for an unknown account, at the default parameters. The two should be
// close; the benchmark reports them rather than asserting on timing.
func BenchmarkCompareUnknownVersusWrong(b *testing.B) {
	h, err := NewHasher(DefaultParams, 1)
	if err != nil {
		b.Fatalf("NewHasher() = %v", err)
	}
	ctx := context.Background()
	stored, err := h.Hash(ctx, []byte("the real password"))
	if err != nil {
		b.Fatalf("Hash() = %v", err)
	}

	b.Run("wrong_password", func(b *testing.B) {
		for b.Loop() {
			h.Compare(ctx, stored, []byte("a wrong password"))
		}
	})
	b.Run("unknown_account", func(b *testing.B) {
		for b.Loop() {
			h.CompareDummy(ctx, []byte("a wrong password"))
		}
	})
}
