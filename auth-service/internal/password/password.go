// Package password hashes and checks passwords with argon2id and caps how
// many hashes run at once.
package password

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"

	"golang.org/x/crypto/argon2"
)

// Params are the argon2id cost parameters stored in every encoded hash.
type Params struct {
	MemoryKiB   uint32
	Iterations  uint32
	Parallelism uint8
	SaltBytes   int
	KeyBytes    uint32
}

// DefaultParams are the argon2id settings that the OWASP Password Storage
// Cheat Sheet recommends as its first option: 19 MiB of memory, two
// iterations, one lane.
var DefaultParams = Params{MemoryKiB: 19456, Iterations: 2, Parallelism: 1, SaltBytes: 16, KeyBytes: 32}

// ErrMismatch is returned by Compare when the password does not match the
// hash.
var ErrMismatch = errors.New("password does not match")

// ErrInvalidHash is returned for an encoded hash that is not a valid argon2id
// PHC string.
var ErrInvalidHash = errors.New("invalid argon2id hash encoding")

// Hasher hashes passwords, running at most a fixed number of argon2id
// computations at once so that a burst of logins cannot use more than about
// limit × MemoryKiB of memory for hashing.
type Hasher struct {
	params Params
	slots  chan struct{}
	// dummy is a hash of a random password at params, compared against when
	// the account does not exist so that the work is the same.
	dummy string
}

// NewHasher returns a Hasher that runs at most maxConcurrent hashes at once.
func NewHasher(params Params, maxConcurrent int) (*Hasher, error) {
	if maxConcurrent < 1 {
		return nil, fmt.Errorf("invalid max concurrent hashes %d: must be at least 1", maxConcurrent)
	}
	if params.MemoryKiB < 8*uint32(params.Parallelism) || params.Iterations < 1 || params.Parallelism < 1 ||
		params.SaltBytes < 8 || params.KeyBytes < 16 {
		return nil, fmt.Errorf("invalid argon2id parameters %+v", params)
	}

	h := &Hasher{params: params, slots: make(chan struct{}, maxConcurrent)}

	secret := make([]byte, 32)
	rand.Read(secret)
	dummy, err := h.Hash(context.Background(), secret)
	if err != nil {
		return nil, err
	}
	h.dummy = dummy
	return h, nil
}

// Hash returns the PHC-style encoding of password's argon2id hash with a new
// random salt:
//
//	$argon2id$v=19$m=19456,t=2,p=1$<salt>$<key>
//
// with salt and key in unpadded standard base64. It waits for a free hashing
// slot and returns ctx.Err() if ctx ends first.
func (h *Hasher) Hash(ctx context.Context, password []byte) (string, error) {
	salt := make([]byte, h.params.SaltBytes)
	rand.Read(salt)

	key, err := h.derive(ctx, password, salt, h.params)
	if err != nil {
		return "", err
	}
	return encode(h.params, salt, key), nil
}

// Compare checks password against an encoded hash, using the parameters the
// hash carries. It returns ErrMismatch when they differ and ErrInvalidHash
// when encoded cannot be parsed.
func (h *Hasher) Compare(ctx context.Context, encoded string, password []byte) error {
	params, salt, want, err := decode(encoded)
	if err != nil {
		return err
	}

	got, err := h.derive(ctx, password, salt, params)
	if err != nil {
		return err
	}
	if subtle.ConstantTimeCompare(got, want) != 1 {
		return ErrMismatch
	}
	return nil
}

// CompareDummy does the work of Compare against a hash of a random password,
// so that a login for an unknown account takes as long as one with a wrong
// password. It always returns ErrMismatch unless ctx ends first.
func (h *Hasher) CompareDummy(ctx context.Context, password []byte) error {
	if err := h.Compare(ctx, h.dummy, password); err != nil {
		return err
	}
	return ErrMismatch
}

func (h *Hasher) derive(ctx context.Context, password, salt []byte, params Params) ([]byte, error) {
	select {
	case h.slots <- struct{}{}:
	case <-ctx.Done():
		return nil, fmt.Errorf("wait for password hashing slot: %w", ctx.Err())
	}
	defer func() { <-h.slots }()

	return argon2.IDKey(password, salt, params.Iterations, params.MemoryKiB, params.Parallelism, params.KeyBytes), nil
}

func encode(params Params, salt, key []byte) string {
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s",
		argon2.Version, params.MemoryKiB, params.Iterations, params.Parallelism,
		base64.RawStdEncoding.EncodeToString(salt), base64.RawStdEncoding.EncodeToString(key))
}

// maxDecodeMemoryKiB bounds the memory parameter accepted from a stored hash,
// so that a corrupted row cannot make one comparison allocate gigabytes.
const maxDecodeMemoryKiB = 1 << 20 // 1 GiB

func decode(encoded string) (params Params, salt, key []byte, err error) {
	parts := strings.Split(encoded, "$")
	if len(parts) != 6 || parts[0] != "" || parts[1] != "argon2id" {
		return Params{}, nil, nil, ErrInvalidHash
	}

	var version int
	if _, err := fmt.Sscanf(parts[2], "v=%d", &version); err != nil || version != argon2.Version {
		return Params{}, nil, nil, fmt.Errorf("%w: unsupported version %q", ErrInvalidHash, parts[2])
	}
	if _, err := fmt.Sscanf(parts[3], "m=%d,t=%d,p=%d", &params.MemoryKiB, &params.Iterations, &params.Parallelism); err != nil {
		return Params{}, nil, nil, fmt.Errorf("%w: parameters %q", ErrInvalidHash, parts[3])
	}
	if params.MemoryKiB == 0 || params.MemoryKiB > maxDecodeMemoryKiB || params.Iterations == 0 || params.Parallelism == 0 {
		return Params{}, nil, nil, fmt.Errorf("%w: parameters %q out of range", ErrInvalidHash, parts[3])
	}

	salt, err = base64.RawStdEncoding.Strict().DecodeString(parts[4])
	if err != nil || len(salt) == 0 {
		return Params{}, nil, nil, fmt.Errorf("%w: salt", ErrInvalidHash)
	}
	key, err = base64.RawStdEncoding.Strict().DecodeString(parts[5])
	if err != nil || len(key) == 0 {
		return Params{}, nil, nil, fmt.Errorf("%w: key", ErrInvalidHash)
	}
	params.SaltBytes = len(salt)
	params.KeyBytes = uint32(len(key))
	return params, salt, key, nil
}
