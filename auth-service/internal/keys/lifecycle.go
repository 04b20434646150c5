package keys

import (
	"context"
	"crypto/rsa"
	"fmt"
	"time"

	"github.com/jmoiron/sqlx"
)

// State is the lifecycle stage of a signing key. Every stored key is
// published in the JWKS. A deleted key has no state because its row is
// gone.
type State string

const (
	// StateNext is a key that is published but does not sign yet.
	StateNext State = "next"
	// StateCurrent is the key that signs new tokens.
	StateCurrent State = "current"
	// StateRetired is a key that no longer signs and stays published until
	// the tokens it signed have expired.
	StateRetired State = "retired"
)

// Kinds of transition, as logged and returned by the transition functions.
const (
	transitionCreateCurrent = "create_current" // first key, or the fresh key after a drop
	transitionCreateNext    = "create_next"
	transitionActivate      = "activate" // next becomes current, the old current retires
	transitionReschedule    = "reschedule"
	transitionDelete        = "delete"
	transitionDrop          = "drop"
)

// transition is one change that a replica made to the stored keys.
type transition struct {
	Kind  string
	KeyID string
}

// classify returns the current and next keys (nil when absent) and the
// retired keys.
func classify(records []keyRecord) (current, next *keyRecord, retired []*keyRecord) {
	for i := range records {
		r := &records[i]
		switch r.State {
		case StateCurrent:
			current = r
		case StateNext:
			next = r
		case StateRetired:
			retired = append(retired, r)
		}
	}
	return current, next, retired
}

// nextCreateTime returns when the key that follows the one activated at
// activateTime should be created, which is one publish lead before the
// rotation period of the earlier key ends.
func (c Config) nextCreateTime(activateTime int64) time.Time {
	return fromMicros(activateTime).Add(c.RotationPeriod - c.PublishLead)
}

// dueTime returns the earliest time at which a transition of the stored
// keys is due. The zero time means a transition is due at once.
func (c Config) dueTime(records []keyRecord) time.Time {
	current, next, retired := classify(records)
	if current == nil {
		return time.Time{}
	}

	var due time.Time
	if next != nil {
		due = fromMicros(next.ActivateTime)
	} else {
		due = c.nextCreateTime(current.ActivateTime)
	}
	for _, r := range retired {
		due = earliest(due, fromNullMicros(r.DeleteTime))
	}
	return due
}

// setChangeTime returns the earliest time at which the published key set
// is planned to change, because a next key is created or a retired key is
// deleted. A key that moves from next to current stays published, so
// activation does not change the set. The zero time means the set is about
// to change.
func (c Config) setChangeTime(records []keyRecord) time.Time {
	current, next, retired := classify(records)
	if current == nil {
		return time.Time{}
	}

	var change time.Time
	if next != nil {
		change = c.nextCreateTime(next.ActivateTime)
		// The current key retires when next activates and is deleted one
		// retired lifetime later.
		change = earliest(change, fromMicros(next.ActivateTime).Add(c.RetiredLifetime))
	} else {
		change = c.nextCreateTime(current.ActivateTime)
	}
	for _, r := range retired {
		change = earliest(change, fromNullMicros(r.DeleteTime))
	}
	return change
}

func earliest(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

// applyDue performs every transition that is due at now, in lifecycle
// order, inside tx, and seals the keys it creates under sealKEK. The caller
// holds the transition lock.
func (m *Manager) applyDue(ctx context.Context, tx *sqlx.Tx, records []keyRecord, now time.Time, sealKEK []byte) ([]transition, error) {
	current, next, retired := classify(records)
	nowUS := micros(now)
	var done []transition

	if current == nil {
		if next != nil {
			// No key signs, which only happens when rows were removed by
			// hand. Signing with a key published for less than the lead
			// is better than not signing at all.
			m.logger.Warn("no current signing key: promoting the next key before its activation time",
				"kid", next.ID, "activate_time", fromMicros(next.ActivateTime))
			activate := min(next.ActivateTime, nowUS)
			if err := promoteKey(ctx, tx, next.ID, activate); err != nil {
				return nil, err
			}
			done = append(done, transition{transitionActivate, next.ID})
			next.State, next.ActivateTime = StateCurrent, activate
			current, next = next, nil
		} else {
			created, err := m.createKey(ctx, tx, sealKEK, StateCurrent, nowUS, nowUS)
			if err != nil {
				return nil, err
			}
			done = append(done, transition{transitionCreateCurrent, created.ID})
			current = &created
		}
	}

	if next != nil && next.ActivateTime <= nowUS {
		// The old key stops signing at the planned activation time even
		// when this transition runs later, because SigningKey on every
		// replica switches to the next key at that time on its own.
		retireTime := next.ActivateTime
		deleteTime := micros(fromMicros(retireTime).Add(m.cfg.RetiredLifetime))
		if err := retireKey(ctx, tx, current.ID, retireTime, deleteTime); err != nil {
			return nil, err
		}
		if err := promoteKey(ctx, tx, next.ID, next.ActivateTime); err != nil {
			return nil, err
		}
		done = append(done, transition{transitionActivate, next.ID})

		current.State = StateRetired
		current.DeleteTime.Int64, current.DeleteTime.Valid = deleteTime, true
		retired = append(retired, current)
		current, next = next, nil
	}

	if next == nil && !now.Before(m.cfg.nextCreateTime(current.ActivateTime)) {
		// The next key signs when the current key's period ends, but never
		// before it has been published for the whole lead.
		activate := max(micros(fromMicros(current.ActivateTime).Add(m.cfg.RotationPeriod)),
			micros(now.Add(m.cfg.PublishLead)))
		created, err := m.createKey(ctx, tx, sealKEK, StateNext, nowUS, activate)
		if err != nil {
			return nil, err
		}
		done = append(done, transition{transitionCreateNext, created.ID})
	}

	for _, r := range retired {
		if r.DeleteTime.Int64 > nowUS {
			continue
		}
		if err := deleteKey(ctx, tx, r.ID); err != nil {
			return nil, err
		}
		done = append(done, transition{transitionDelete, r.ID})
	}
	return done, nil
}

// applyRotate starts a rotation at now inside tx, and seals the keys it
// creates under sealKEK. The caller holds the transition lock.
//
// Without dropCurrent the next key signs as soon as it has been published
// for the publish lead. An existing next key that was published long
// enough ago signs at once. When there is no next key, one is created.
//
// With dropCurrent the current key and the next key are deleted, so both
// leave the JWKS at once and the tokens they signed fail, and a fresh key
// signs from now on. The next key goes too because it was stored beside
// the compromised one. Retired keys stay.
func (m *Manager) applyRotate(ctx context.Context, tx *sqlx.Tx, records []keyRecord, now time.Time, dropCurrent bool, sealKEK []byte) ([]transition, error) {
	current, next, _ := classify(records)
	nowUS := micros(now)
	var done []transition

	if dropCurrent {
		for _, r := range []*keyRecord{current, next} {
			if r == nil {
				continue
			}
			if err := deleteKey(ctx, tx, r.ID); err != nil {
				return nil, err
			}
			done = append(done, transition{transitionDrop, r.ID})
		}
		created, err := m.createKey(ctx, tx, sealKEK, StateCurrent, nowUS, nowUS)
		if err != nil {
			return nil, err
		}
		return append(done, transition{transitionCreateCurrent, created.ID}), nil
	}

	switch {
	case next != nil:
		earliestActivate := max(micros(fromMicros(next.CreateTime).Add(m.cfg.PublishLead)), nowUS)
		if earliestActivate < next.ActivateTime {
			if err := rescheduleKey(ctx, tx, next.ID, earliestActivate); err != nil {
				return nil, err
			}
			next.ActivateTime = earliestActivate
			done = append(done, transition{transitionReschedule, next.ID})
		}
	case current != nil:
		activate := micros(now.Add(m.cfg.PublishLead))
		created, err := m.createKey(ctx, tx, sealKEK, StateNext, nowUS, activate)
		if err != nil {
			return nil, err
		}
		records = append(records, created)
		done = append(done, transition{transitionCreateNext, created.ID})
	}

	due, err := m.applyDue(ctx, tx, records, now, sealKEK)
	if err != nil {
		return nil, err
	}
	return append(done, due...), nil
}

// keyCreationDue reports whether applyDue at now would create a key, so
// the caller can generate one before it takes the transition lock.
func (c Config) keyCreationDue(records []keyRecord, now time.Time) bool {
	current, next, _ := classify(records)
	switch {
	case current == nil:
		return next == nil
	case next == nil:
		return !now.Before(c.nextCreateTime(current.ActivateTime))
	default:
		return !now.Before(fromMicros(next.ActivateTime)) && !now.Before(c.nextCreateTime(next.ActivateTime))
	}
}

// prepareSpareKey generates the key that the next createKey stores, unless
// one is waiting already. Generating outside the transition lock and the
// database deadline matters for 4096-bit keys, which can take seconds.
func (m *Manager) prepareSpareKey() error {
	m.spareMu.Lock()
	defer m.spareMu.Unlock()
	if m.spare != nil {
		return nil
	}
	key, err := m.generateKey(m.cfg.KeyBits)
	if err != nil {
		return err
	}
	m.spare = key
	return nil
}

// takeKey returns the spare key, or a newly generated one when there is
// none.
func (m *Manager) takeKey() (*rsa.PrivateKey, error) {
	m.spareMu.Lock()
	defer m.spareMu.Unlock()
	if key := m.spare; key != nil {
		m.spare = nil
		return key, nil
	}
	return m.generateKey(m.cfg.KeyBits)
}

// createKey stores a key sealed under sealKEK and returns its row.
func (m *Manager) createKey(ctx context.Context, tx *sqlx.Tx, sealKEK []byte, state State, createTime, activateTime int64) (keyRecord, error) {
	key, err := m.takeKey()
	if err != nil {
		return keyRecord{}, err
	}
	sealed, err := sealKey(sealKEK, newKeyID(), key)
	if err != nil {
		return keyRecord{}, err
	}

	r := keyRecord{
		ID:           sealed.id,
		State:        state,
		Bits:         sealed.bits,
		PublicKey:    sealed.publicDER,
		PrivateKey:   sealed.privateBox,
		CreateTime:   createTime,
		ActivateTime: activateTime,
	}
	if err := insertKey(ctx, tx, r); err != nil {
		return keyRecord{}, err
	}
	return r, nil
}

// sealingKEK returns the key-encryption key that seals the keys created in
// a transaction over records. It is the first configured KEK that opens
// every stored private key. So while the stored keys are still sealed
// under a previous KEK, new keys are sealed under it too, and replicas that
// have only that KEK keep loading every key. When no private key is stored,
// or no single KEK opens them all, it is the primary KEK.
//
// The error wraps ErrDecrypt when a stored private key opens under none of
// the configured KEKs. A replica or operator command with the wrong KEK
// must not add keys that the other replicas cannot open.
func (m *Manager) sealingKEK(records []keyRecord) ([]byte, error) {
	opens := make([]int, len(m.keks)) // stored private keys each KEK opens
	sealed := 0
	for _, r := range records {
		if r.PrivateKey == nil {
			continue
		}
		sealed++
		opened := false
		for i, kek := range m.keks {
			if _, err := open(kek, r.ID, r.PrivateKey); err == nil {
				opens[i]++
				opened = true
			}
		}
		if !opened {
			_, _, err := openAny(m.keks, r.ID, r.PrivateKey)
			return nil, err
		}
	}
	for i, n := range opens {
		if sealed > 0 && n == sealed {
			return m.keks[i], nil
		}
	}
	return m.keks[0], nil
}

// withTransitionLock runs fn in a transaction that holds the transition
// lock, with the keys as stored once the lock is held and the KEK that
// seals new keys (see sealingKEK), and commits.
func (m *Manager) withTransitionLock(ctx context.Context, fn func(tx *sqlx.Tx, records []keyRecord, sealKEK []byte) ([]transition, error)) ([]transition, error) {
	tx, err := m.db.BeginTxx(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("begin signing-key transaction: %w", err)
	}
	defer tx.Rollback()

	if err := lockTransitions(ctx, tx); err != nil {
		return nil, err
	}
	records, err := selectKeys(ctx, tx)
	if err != nil {
		return nil, err
	}
	sealKEK, err := m.sealingKEK(records)
	if err != nil {
		return nil, err
	}
	done, err := fn(tx, records, sealKEK)
	if err != nil {
		return nil, err
	}
	if err := tx.Commit(); err != nil {
		return nil, fmt.Errorf("commit signing-key transaction: %w", err)
	}
	return done, nil
}
