package keys

import (
	"context"
	"fmt"

	"github.com/jmoiron/sqlx"
)

// transitionRewrap marks each key that applyRewrap re-sealed.
const transitionRewrap = "rewrap"

// Rewrap re-seals every stored private key under the primary
// key-encryption key, in one transaction under the transition lock, and
// returns the ids of the keys it re-sealed. A key that already opens under
// the primary KEK stays as it is, so running Rewrap again changes nothing.
// Retired keys have no private key and are not touched.
//
// Rewrap opens each key with the first configured KEK that opens it, checks
// the key against its stored public key, seals it under the primary KEK
// with a fresh nonce and checks that the result opens again. When any key
// fails a step the transaction rolls back, so the database keeps every
// key as it was. The error wraps ErrDecrypt when a key opens under none of
// the configured KEKs. Rewrap works without Start, and replicas that have
// both KEKs keep serving while it runs.
func (m *Manager) Rewrap(ctx context.Context) ([]string, error) {
	done, err := m.withTransitionLock(ctx, func(tx *sqlx.Tx, records []keyRecord, _ []byte) ([]transition, error) {
		return m.applyRewrap(ctx, tx, records)
	})
	if err != nil {
		return nil, err
	}

	ids := make([]string, len(done))
	for i, t := range done {
		m.logger.Info("signing key re-sealed under the primary key-encryption key",
			"kid", t.KeyID, "kek_id", KEKID(m.keks[0]))
		ids[i] = t.KeyID
	}
	return ids, nil
}

// applyRewrap re-seals inside tx every private key that does not open
// under the primary KEK. The caller holds the transition lock.
func (m *Manager) applyRewrap(ctx context.Context, tx *sqlx.Tx, records []keyRecord) ([]transition, error) {
	primary := m.keks[0]
	var done []transition

	for _, r := range records {
		if r.PrivateKey == nil {
			continue
		}
		public, err := parsePublicKey(r.ID, r.PublicKey)
		if err != nil {
			return nil, err
		}
		der, index, err := openAny(m.keks, r.ID, r.PrivateKey)
		if err != nil {
			return nil, err
		}
		if index == 0 {
			continue
		}
		key, err := parsePrivateKey(r.ID, der, public)
		if err != nil {
			return nil, err
		}

		box, err := seal(primary, r.ID, der)
		if err != nil {
			return nil, err
		}
		// A sealed key that fails to open would lock every replica out of
		// its signing keys, so check before anything is stored.
		reopened, _, err := openPrivateKey([][]byte{primary}, r.ID, box, public)
		if err != nil {
			return nil, fmt.Errorf("check re-sealed key %s: %w", r.ID, err)
		}
		if !reopened.Equal(key) {
			return nil, fmt.Errorf("check re-sealed key %s: opens to a different private key", r.ID)
		}

		if err := replacePrivateKey(ctx, tx, r.ID, box); err != nil {
			return nil, err
		}
		done = append(done, transition{transitionRewrap, r.ID})
	}
	return done, nil
}
