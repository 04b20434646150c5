package keys

import (
	"crypto/rsa"
	"encoding/json"
	"fmt"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwk"
)

// snapshot is the key set of one load from the database. It is never
// changed after load returns it.
type snapshot struct {
	// loadTime is when the rows were read from the database.
	loadTime time.Time

	keys    []*loadedKey // ordered by activation time
	byID    map[string]*loadedKey
	current *loadedKey
	next    *loadedKey // nil when there is no next key

	// setChangeTime is when the published set is planned to change next.
	setChangeTime time.Time

	// jwks is the JSON body of the JWKS response.
	jwks []byte
}

type loadedKey struct {
	info    KeyInfo
	public  *rsa.PublicKey
	private *rsa.PrivateKey // nil for retired keys
}

// signingKey returns the key that signs at now: the next key once its
// activation time has passed, the current key before.
func (s *snapshot) signingKey(now time.Time) *loadedKey {
	if s.next != nil && !now.Before(s.next.info.ActivateTime) {
		return s.next
	}
	return s.current
}

func (s *snapshot) nextID() string {
	if s.next == nil {
		return ""
	}
	return s.next.info.ID
}

// load builds a snapshot from the keys read at loadTime and makes it the
// one the manager serves. Private keys already opened by the previous
// snapshot are reused, so each key is decrypted once per process. On error
// the previous snapshot stays.
func (m *Manager) load(records []keyRecord, loadTime time.Time) error {
	previous := m.loaded()
	s := &snapshot{
		loadTime:      loadTime,
		byID:          make(map[string]*loadedKey, len(records)),
		setChangeTime: m.cfg.setChangeTime(records),
	}

	for _, r := range records {
		k, err := m.loadKey(r, previous)
		if err != nil {
			return err
		}
		s.keys = append(s.keys, k)
		s.byID[r.ID] = k
		switch r.State {
		case StateCurrent:
			s.current = k
		case StateNext:
			s.next = k
		}
	}
	if s.current == nil {
		return fmt.Errorf("load signing keys: the database has no current key among %d keys", len(records))
	}

	body, err := encodeJWKS(s.keys)
	if err != nil {
		return err
	}
	s.jwks = body

	m.mu.Lock()
	m.snapshot = s
	m.mu.Unlock()

	m.metrics.setKeyCounts(records)
	return nil
}

func (m *Manager) loadKey(r keyRecord, previous *snapshot) (*loadedKey, error) {
	k := &loadedKey{info: r.info()}

	public, err := parsePublicKey(r.ID, r.PublicKey)
	if err != nil {
		return nil, err
	}
	k.public = public

	if r.State == StateRetired {
		return k, nil
	}
	if r.PrivateKey == nil {
		return nil, fmt.Errorf("key %s: %s key has no private key", r.ID, r.State)
	}
	if previous != nil {
		if old, ok := previous.byID[r.ID]; ok && old.private != nil && old.public.Equal(public) {
			k.private = old.private
			return k, nil
		}
	}
	k.private, _, err = openPrivateKey(m.keks, r.ID, r.PrivateKey, public)
	if err != nil {
		return nil, err
	}
	return k, nil
}

// encodeJWKS returns the JWKS JSON of the keys: public members only, each
// marked alg RS256 and use sig.
func encodeJWKS(keys []*loadedKey) ([]byte, error) {
	set := jwk.NewSet()
	for _, k := range keys {
		key, err := jwk.FromRaw(k.public)
		if err != nil {
			return nil, fmt.Errorf("key %s: build JWK: %w", k.info.ID, err)
		}
		for name, value := range map[string]any{
			jwk.KeyIDKey:     k.info.ID,
			jwk.AlgorithmKey: jwa.RS256,
			jwk.KeyUsageKey:  jwk.ForSignature,
		} {
			if err := key.Set(name, value); err != nil {
				return nil, fmt.Errorf("key %s: set JWK member %q: %w", k.info.ID, name, err)
			}
		}
		if err := set.AddKey(key); err != nil {
			return nil, fmt.Errorf("key %s: add to JWKS: %w", k.info.ID, err)
		}
	}

	body, err := json.Marshal(set)
	if err != nil {
		return nil, fmt.Errorf("encode JWKS: %w", err)
	}
	return body, nil
}
