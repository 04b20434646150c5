package jwks

import (
	"bytes"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"slices"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwk"
)

// Key acceptance rules. A key that breaks any of them is dropped from the
// set, and the other keys are still used.
const (
	maxKIDBytes      = 128
	minModulusBits   = 2048
	maxModulusBits   = 8192 // bounds the cost of one verification
	requiredExponent = 65537
	// maxKeys bounds the work of parsing a hostile set: 1 MiB of "{}," is
	// about 350,000 keys. The auth service publishes two or three.
	maxKeys = 100
)

// privateMembers are the JWK members of RSA private keys (RFC 7518, section
// 6.3.2). A key that has any of them is rejected.
var privateMembers = []string{"d", "p", "q", "dp", "dq", "qi", "oth"}

// Reasons for rejecting a key, used as metric label values.
const (
	reasonMalformed     = "malformed"
	reasonPrivateMember = "private_member"
	reasonKeyType       = "key_type"
	reasonAlgorithm     = "algorithm"
	reasonUse           = "use"
	reasonKeyOps        = "key_ops"
	reasonKID           = "kid"
	reasonExponent      = "exponent"
	reasonModulusSize   = "modulus_size"
	reasonDuplicateKID  = "duplicate_kid"
)

var rejectReasons = []string{
	reasonMalformed, reasonPrivateMember, reasonKeyType, reasonAlgorithm, reasonUse,
	reasonKeyOps, reasonKID, reasonExponent, reasonModulusSize, reasonDuplicateKID,
}

var (
	errNotKeySet   = errors.New("body is not a JWKS document")
	errEmptySet    = errors.New("key set contains no keys")
	errNoUsableKey = errors.New("key set contains no usable key")
	errTooManyKeys = errors.New("key set contains too many keys")
)

// keySet is an immutable set of verification keys.
type keySet struct {
	keys      map[string]*rsa.PublicKey
	fetchedAt time.Time
}

func (s *keySet) keyIDs() []string {
	ids := make([]string, 0, len(s.keys))
	for kid := range s.keys {
		ids = append(ids, kid)
	}
	slices.Sort(ids)
	return ids
}

func sameKeyIDs(a, b *keySet) bool {
	return slices.Equal(a.keyIDs(), b.keyIDs())
}

// rejectedKey is a key that parseKeySet dropped, with the reason.
type rejectedKey struct {
	index  int // position in the "keys" array
	kid    string
	reason string
	err    error
}

type parsedKeySet struct {
	keys     map[string]*rsa.PublicKey
	rejected []rejectedKey
}

// parseKeySet parses a JWKS document and keeps the keys that may verify
// RS256 access tokens. Such a key has
//   - no private member,
//   - kty RSA and a kid of 1 to 128 base64url characters,
//   - alg RS256 and use sig (a key lacking alg or use is dropped, like one
//     with another value), and key_ops absent or including verify,
//   - exponent 65537 and a modulus of 2048 to 8192 bits.
//
// When several acceptable keys share a kid, all of them are dropped, so the
// result never depends on their order.
//
// parseKeySet returns errNotKeySet (wrapped) when body is not a JSON object
// with a "keys" array, errEmptySet when the array is empty, errTooManyKeys
// (wrapped) when it has more than 100 keys and errNoUsableKey when no key is
// acceptable.
func parseKeySet(body []byte) (parsedKeySet, error) {
	keys, err := splitKeySet(body)
	if err != nil {
		return parsedKeySet{}, err
	}
	if len(keys) == 0 {
		return parsedKeySet{}, errEmptySet
	}

	var result parsedKeySet
	accepted := make(map[string][]int) // kid to indexes of acceptable keys
	candidates := make(map[int]*rsa.PublicKey)
	for i, raw := range keys {
		kid, key, reason, err := parseKey(raw)
		if err != nil {
			result.rejected = append(result.rejected, rejectedKey{index: i, kid: kid, reason: reason, err: err})
			continue
		}
		accepted[kid] = append(accepted[kid], i)
		candidates[i] = key
	}

	result.keys = make(map[string]*rsa.PublicKey, len(accepted))
	for kid, indexes := range accepted {
		if len(indexes) == 1 {
			result.keys[kid] = candidates[indexes[0]]
			continue
		}
		for _, i := range indexes {
			result.rejected = append(result.rejected, rejectedKey{
				index: i, kid: kid, reason: reasonDuplicateKID,
				err: fmt.Errorf("%d keys in the set have kid %q", len(indexes), kid),
			})
		}
	}
	slices.SortFunc(result.rejected, func(a, b rejectedKey) int { return a.index - b.index })

	if len(result.keys) == 0 {
		return result, errNoUsableKey
	}
	return result, nil
}

// splitKeySet returns the elements of the "keys" array of a JWKS document
// without decoding them. It stops at the element after the 100th, so that a
// hostile set costs little work. The errors wrap errNotKeySet or
// errTooManyKeys.
func splitKeySet(body []byte) ([]json.RawMessage, error) {
	decoder := json.NewDecoder(bytes.NewReader(body))
	if err := expectDelim(decoder, '{'); err != nil {
		return nil, err
	}

	var (
		keys  []json.RawMessage
		found bool
	)
	for decoder.More() {
		token, err := decoder.Token()
		if err != nil {
			return nil, fmt.Errorf("%w: %w", errNotKeySet, err)
		}
		if name, _ := token.(string); name != "keys" {
			var skipped json.RawMessage
			if err := decoder.Decode(&skipped); err != nil {
				return nil, fmt.Errorf("%w: %w", errNotKeySet, err)
			}
			continue
		}
		if found {
			return nil, fmt.Errorf("%w: the \"keys\" member appears twice", errNotKeySet)
		}
		found = true
		if keys, err = splitKeysArray(decoder); err != nil {
			return nil, err
		}
	}

	if err := expectDelim(decoder, '}'); err != nil {
		return nil, err
	}
	if _, err := decoder.Token(); err != io.EOF {
		return nil, fmt.Errorf("%w: data after the JSON object", errNotKeySet)
	}
	if !found {
		return nil, fmt.Errorf("%w: the \"keys\" member is missing", errNotKeySet)
	}
	return keys, nil
}

// splitKeysArray reads the value of the "keys" member, which must be an
// array of at most 100 elements.
func splitKeysArray(decoder *json.Decoder) ([]json.RawMessage, error) {
	token, err := decoder.Token()
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errNotKeySet, err)
	}
	if delim, ok := token.(json.Delim); !ok || delim != '[' {
		return nil, fmt.Errorf("%w: the \"keys\" member is %v, not an array", errNotKeySet, token)
	}

	keys := []json.RawMessage{}
	for decoder.More() {
		if len(keys) == maxKeys {
			return nil, fmt.Errorf("%w: more than %d", errTooManyKeys, maxKeys)
		}
		var raw json.RawMessage
		if err := decoder.Decode(&raw); err != nil {
			return nil, fmt.Errorf("%w: %w", errNotKeySet, err)
		}
		keys = append(keys, raw)
	}
	if err := expectDelim(decoder, ']'); err != nil {
		return nil, err
	}
	return keys, nil
}

func expectDelim(decoder *json.Decoder, want json.Delim) error {
	token, err := decoder.Token()
	if err != nil {
		return fmt.Errorf("%w: %w", errNotKeySet, err)
	}
	if delim, ok := token.(json.Delim); !ok || delim != want {
		return fmt.Errorf("%w: found %v where %v was expected", errNotKeySet, token, want)
	}
	return nil
}

// parseKey checks one JWK against the acceptance rules of parseKeySet. On
// rejection it returns the reason and an error that explains it, and the kid
// for the log when the key has a valid one.
func parseKey(raw json.RawMessage) (kid string, key *rsa.PublicKey, reason string, err error) {
	var members map[string]json.RawMessage
	if err := json.Unmarshal(raw, &members); err != nil {
		return "", nil, reasonMalformed, fmt.Errorf("key is not a JSON object: %w", err)
	}

	// Checked on the raw members because jwx keeps unknown members such as
	// "oth" without complaint.
	for _, name := range privateMembers {
		if _, ok := members[name]; ok {
			return loggableKID(members), nil, reasonPrivateMember, fmt.Errorf("key has the private member %q", name)
		}
	}

	parsed, err := jwk.ParseKey(raw)
	if err != nil {
		return "", nil, reasonMalformed, err
	}
	rsaKey, ok := parsed.(jwk.RSAPublicKey)
	if !ok || parsed.KeyType() != jwa.RSA {
		return "", nil, reasonKeyType, fmt.Errorf("key type is %q, want RSA", parsed.KeyType())
	}
	kid = parsed.KeyID()
	if err := validateKID(kid); err != nil {
		return "", nil, reasonKID, err
	}
	if alg := parsed.Algorithm().String(); alg != jwa.RS256.String() {
		return kid, nil, reasonAlgorithm, fmt.Errorf("alg is %q, want RS256", alg)
	}
	if use := parsed.KeyUsage(); use != string(jwk.ForSignature) {
		return kid, nil, reasonUse, fmt.Errorf("use is %q, want sig", use)
	}
	if _, ok := members["key_ops"]; ok && !slices.Contains(parsed.KeyOps(), jwk.KeyOpVerify) {
		return kid, nil, reasonKeyOps, fmt.Errorf("key_ops %v lacks verify", parsed.KeyOps())
	}

	e := new(big.Int).SetBytes(rsaKey.E())
	if !e.IsInt64() || e.Int64() != requiredExponent {
		return kid, nil, reasonExponent, fmt.Errorf("exponent is %s, want %d", e, requiredExponent)
	}
	n := new(big.Int).SetBytes(rsaKey.N())
	if bits := n.BitLen(); bits < minModulusBits || bits > maxModulusBits {
		return kid, nil, reasonModulusSize, fmt.Errorf("modulus has %d bits, want %d to %d",
			bits, minModulusBits, maxModulusBits)
	}
	return kid, &rsa.PublicKey{N: n, E: requiredExponent}, "", nil
}

// loggableKID returns the kid member of a key when it is a valid kid, and
// an empty string otherwise.
func loggableKID(members map[string]json.RawMessage) string {
	var kid string
	if json.Unmarshal(members["kid"], &kid) != nil || validateKID(kid) != nil {
		return ""
	}
	return kid
}

// validateKID returns an error unless kid has 1 to 128 bytes of the
// base64url alphabet (A-Z, a-z, 0-9, "-" and "_"). accesstoken.Verify
// accepts the same kids, so a key whose kid breaks the rule could never be
// used.
func validateKID(kid string) error {
	if kid == "" {
		return errors.New("kid is empty")
	}
	if len(kid) > maxKIDBytes {
		return fmt.Errorf("kid has %d bytes, more than %d", len(kid), maxKIDBytes)
	}
	for i := 0; i < len(kid); i++ {
		if !isBase64URLByte(kid[i]) {
			return fmt.Errorf("kid has the byte 0x%02x at offset %d, outside the base64url alphabet", kid[i], i)
		}
	}
	return nil
}

func isBase64URLByte(b byte) bool {
	return 'A' <= b && b <= 'Z' || 'a' <= b && b <= 'z' || '0' <= b && b <= '9' || b == '-' || b == '_'
}

// encodeKeySet returns a JWKS document with the public members of keys,
// sorted by kid. The cache persists this instead of the fetched body so that
// private members of rejected keys are never written to the database.
func encodeKeySet(keys map[string]*rsa.PublicKey) ([]byte, error) {
	type jsonKey struct {
		KeyType   string `json:"kty"`
		KeyID     string `json:"kid"`
		Algorithm string `json:"alg"`
		Use       string `json:"use"`
		Modulus   string `json:"n"`
		Exponent  string `json:"e"`
	}

	var doc struct {
		Keys []jsonKey `json:"keys"`
	}
	for kid, key := range keys {
		doc.Keys = append(doc.Keys, jsonKey{
			KeyType:   "RSA",
			KeyID:     kid,
			Algorithm: "RS256",
			Use:       "sig",
			Modulus:   base64.RawURLEncoding.EncodeToString(key.N.Bytes()),
			Exponent:  base64.RawURLEncoding.EncodeToString(big.NewInt(int64(key.E)).Bytes()),
		})
	}
	slices.SortFunc(doc.Keys, func(a, b jsonKey) int { return bytes.Compare([]byte(a.KeyID), []byte(b.KeyID)) })
	return json.Marshal(doc)
}
