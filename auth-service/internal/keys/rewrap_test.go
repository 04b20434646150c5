package keys

import (
	"bytes"
	"errors"
	"slices"
	"testing"

	"github.com/jmoiron/sqlx"
)

// otherKEK returns a key-encryption key that differs from testKEK and from
// every other seed.
func otherKEK(seed byte) []byte {
	kek := bytes.Repeat([]byte{seed}, KEKSize)
	kek[0] = 0xa5
	return kek
}

// newRingManager returns a manager with a primary and previous KEKs, with
// pooled keys, closed when the test ends. It is not started.
func newRingManager(tb testing.TB, db *sqlx.DB, cfg Config, primary []byte, previous ...[]byte) *Manager {
	tb.Helper()
	m, err := NewManager(db, primary, cfg, nil, nil, WithPreviousKEKs(previous...))
	if err != nil {
		tb.Fatalf("NewManager() = %v", err)
	}
	m.generateKey = pooledKey(tb)
	tb.Cleanup(m.Close)
	return m
}

// storedPrivateKeys returns the sealed private key of each stored key that
// has one, by kid.
func storedPrivateKeys(tb testing.TB, db *sqlx.DB) map[string][]byte {
	tb.Helper()
	records, err := selectKeys(testContext(tb), db)
	if err != nil {
		tb.Fatalf("selectKeys() = %v", err)
	}
	boxes := make(map[string][]byte)
	for _, r := range records {
		if r.PrivateKey != nil {
			boxes[r.ID] = r.PrivateKey
		}
	}
	return boxes
}

// storeRetiredCurrentAndNext starts a manager under kek and moves time on
// until the database holds a retired, a current and a next key.
func storeRetiredCurrentAndNext(t *testing.T, db *sqlx.DB, clock *testClock, kek []byte) *Manager {
	t.Helper()
	cfg := testConfig(clock)
	m := newRingManager(t, db, cfg, kek)
	if err := m.Start(testContext(t)); err != nil {
		t.Fatalf("Start() = %v", err)
	}
	if err := m.Rotate(testContext(t), false); err != nil {
		t.Fatalf("Rotate() = %v", err)
	}
	clock.Advance(cfg.PublishLead)
	refresh(t, m)
	if err := m.Rotate(testContext(t), false); err != nil {
		t.Fatalf("second Rotate() = %v", err)
	}

	infos := listKeys(t, m)
	for _, state := range []State{StateRetired, StateCurrent, StateNext} {
		keyWithState(t, infos, state)
	}
	return m
}

func TestKEKID(t *testing.T) {
	id := KEKID(testKEK())
	if len(id) != 12 {
		t.Errorf("KEKID() = %q with %d characters, want 12", id, len(id))
	}
	if again := KEKID(testKEK()); again != id {
		t.Errorf("KEKID() of the same KEK = %q, then %q", id, again)
	}
	if other := KEKID(otherKEK(1)); other == id {
		t.Errorf("KEKID() of two KEKs = %q for both", id)
	}
}

func TestNewManagerRejectsRepeatedKEK(t *testing.T) {
	db := openSQLite(t)
	if _, err := NewManager(db, testKEK(), DefaultConfig(), nil, nil, WithPreviousKEKs(testKEK())); err == nil {
		t.Error("NewManager() with the primary KEK as previous KEK = nil error, want an error")
	}
	if _, err := NewManager(db, testKEK(), DefaultConfig(), nil, nil, WithPreviousKEKs(make([]byte, 16))); err == nil {
		t.Error("NewManager() with a 16-byte previous KEK = nil error, want an error")
	}
}

func TestRewrapRoundTrip(t *testing.T) {
	eachStore(t, func(t *testing.T, open func(testing.TB) *sqlx.DB) {
		clock := newTestClock()
		cfg := testConfig(clock)
		db := open(t)
		oldKEK, newKEK := testKEK(), otherKEK(1)
		old := storeRetiredCurrentAndNext(t, db, clock, oldKEK)
		tokenBefore := signTestToken(t, old, clock)
		before := storedPrivateKeys(t, db)

		rewrapper := newRingManager(t, db, cfg, newKEK, oldKEK)
		rewrapped, err := rewrapper.Rewrap(testContext(t))
		if err != nil {
			t.Fatalf("Rewrap() = %v", err)
		}
		var want []string
		for kid := range before {
			want = append(want, kid)
		}
		slices.Sort(want)
		slices.Sort(rewrapped)
		if !slices.Equal(rewrapped, want) {
			t.Errorf("Rewrap() re-sealed %q, want every key with a private key %q", rewrapped, want)
		}

		after := storedPrivateKeys(t, db)
		for kid, box := range after {
			if bytes.Equal(box, before[kid]) {
				t.Errorf("key %s: sealed private key unchanged by Rewrap", kid)
			}
			if _, _, err := openAny([][]byte{newKEK}, kid, box); err != nil {
				t.Errorf("key %s: open under the new KEK = %v", kid, err)
			}
			if _, _, err := openAny([][]byte{oldKEK}, kid, box); !errors.Is(err, ErrDecrypt) {
				t.Errorf("key %s: open under the old KEK = %v, want ErrDecrypt", kid, err)
			}
		}
		for _, info := range listKeys(t, rewrapper) {
			want := KEKID(newKEK)
			if info.State == StateRetired {
				want = ""
			}
			if info.KEKID != want {
				t.Errorf("List() key %s (%s) KEKID = %q, want %q", info.ID, info.State, info.KEKID, want)
			}
		}

		// A replica with only the new KEK starts, verifies the token signed
		// before the rewrap and signs new ones.
		fresh := newRingManager(t, db, cfg, newKEK)
		if err := fresh.Start(testContext(t)); err != nil {
			t.Fatalf("Start() with only the new KEK = %v", err)
		}
		verifier := newTestVerifier(t, fresh, clock)
		if _, err := verifier.Verify(testContext(t), tokenBefore); err != nil {
			t.Errorf("Verify(token signed before the rewrap) = %v", err)
		}
		if _, err := verifier.Verify(testContext(t), signTestToken(t, fresh, clock)); err != nil {
			t.Errorf("Verify(token signed after the rewrap) = %v", err)
		}

		stale := newRingManager(t, db, cfg, oldKEK)
		if err := stale.Start(testContext(t)); !errors.Is(err, ErrDecrypt) {
			t.Errorf("Start() with only the old KEK = %v, want ErrDecrypt", err)
		}

		again, err := rewrapper.Rewrap(testContext(t))
		if err != nil || len(again) != 0 {
			t.Errorf("second Rewrap() = %q, %v; want nothing re-sealed", again, err)
		}
	})
}

func TestRewrapWrongKEKChangesNothing(t *testing.T) {
	eachStore(t, func(t *testing.T, open func(testing.TB) *sqlx.DB) {
		clock := newTestClock()
		cfg := testConfig(clock)
		db := open(t)
		oldKEK := testKEK()
		storeRetiredCurrentAndNext(t, db, clock, oldKEK)
		before := storedPrivateKeys(t, db)

		tests := []struct {
			name     string
			primary  []byte
			previous [][]byte
		}{
			{"new KEK without previous", otherKEK(1), nil},
			{"wrong previous KEK", otherKEK(1), [][]byte{otherKEK(2)}},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				m := newRingManager(t, db, cfg, tt.primary, tt.previous...)
				if got, err := m.Rewrap(testContext(t)); !errors.Is(err, ErrDecrypt) {
					t.Errorf("Rewrap() = %q, %v; want ErrDecrypt", got, err)
				}
				after := storedPrivateKeys(t, db)
				for kid, box := range before {
					if !bytes.Equal(after[kid], box) {
						t.Errorf("key %s: sealed private key changed by a failed Rewrap", kid)
					}
				}
			})
		}
	})
}

func TestRewrapOneBadKeyChangesNothing(t *testing.T) {
	eachStore(t, func(t *testing.T, open func(testing.TB) *sqlx.DB) {
		clock := newTestClock()
		cfg := testConfig(clock)
		db := open(t)
		oldKEK, newKEK := testKEK(), otherKEK(1)
		storeRetiredCurrentAndNext(t, db, clock, oldKEK)

		// Seal the next key under a KEK that the rewrapper lacks, so the
		// current key opens and the next one does not.
		next := keyWithState(t, listKeys(t, newRingManager(t, db, cfg, oldKEK)), StateNext)
		der, _, err := openAny([][]byte{oldKEK}, next.ID, storedPrivateKeys(t, db)[next.ID])
		if err != nil {
			t.Fatalf("open next key = %v", err)
		}
		foreign, err := seal(otherKEK(3), next.ID, der)
		if err != nil {
			t.Fatalf("seal() = %v", err)
		}
		if _, err := db.ExecContext(testContext(t), db.Rebind(`UPDATE signing_keys SET private_key = ? WHERE kid = ?`), foreign, next.ID); err != nil {
			t.Fatalf("replace next key = %v", err)
		}
		before := storedPrivateKeys(t, db)

		m := newRingManager(t, db, cfg, newKEK, oldKEK)
		if got, err := m.Rewrap(testContext(t)); !errors.Is(err, ErrDecrypt) {
			t.Fatalf("Rewrap() = %q, %v; want ErrDecrypt for key %s", got, err, next.ID)
		}
		after := storedPrivateKeys(t, db)
		for kid, box := range before {
			if !bytes.Equal(after[kid], box) {
				t.Errorf("key %s: sealed private key changed although key %s failed", kid, next.ID)
			}
		}
	})
}

// TestReplicasDuringKEKChange follows the documented order: replicas with
// the old KEK run while replicas with the new KEK plus the old one as
// previous start, then the keys are re-sealed, then replicas with only the
// new KEK start.
func TestReplicasDuringKEKChange(t *testing.T) {
	eachSharedStore(t, func(t *testing.T, dbA, dbB *sqlx.DB) {
		clock := newTestClock()
		cfg := testConfig(clock)
		oldKEK, newKEK := testKEK(), otherKEK(1)

		oldReplica := newRingManager(t, dbA, cfg, oldKEK)
		if err := oldReplica.Start(testContext(t)); err != nil {
			t.Fatalf("Start() with the old KEK = %v", err)
		}

		// Rollout: a replica with both KEKs starts beside the old one and
		// creates a key. It seals the key under the old KEK, because every
		// stored key opens under it, so the old replica still loads it.
		bothBefore := newRingManager(t, dbB, cfg, newKEK, oldKEK)
		if err := bothBefore.Start(testContext(t)); err != nil {
			t.Fatalf("Start() with new and previous KEK before the rewrap = %v", err)
		}
		if err := bothBefore.Rotate(testContext(t), false); err != nil {
			t.Fatalf("Rotate() with new and previous KEK = %v", err)
		}
		for kid := range storedPrivateKeys(t, dbA) {
			info := findKey(t, listKeys(t, bothBefore), kid)
			if info.KEKID != KEKID(oldKEK) {
				t.Errorf("key %s created during the rollout has KEKID %q, want the old KEK %q", kid, info.KEKID, KEKID(oldKEK))
			}
		}
		clock.Advance(cfg.PublishLead)
		refresh(t, oldReplica)
		refresh(t, bothBefore)
		if a, b := signingKeyID(t, oldReplica), signingKeyID(t, bothBefore); a != b {
			t.Errorf("signing keys during the rollout = %s (old KEK) and %s (both KEKs), want the same", a, b)
		}

		// The rollout has finished: the old replica stops, the keys are
		// re-sealed while the replica with both KEKs keeps running.
		oldReplica.Close()
		command := newRingManager(t, dbA, cfg, newKEK, oldKEK)
		if _, err := command.Rewrap(testContext(t)); err != nil {
			t.Fatalf("Rewrap() = %v", err)
		}
		refresh(t, bothBefore)
		verifier := newTestVerifier(t, bothBefore, clock)
		if _, err := verifier.Verify(testContext(t), signTestToken(t, bothBefore, clock)); err != nil {
			t.Errorf("Verify(token of the running replica after the rewrap) = %v", err)
		}

		bothAfter := newRingManager(t, dbB, cfg, newKEK, oldKEK)
		if err := bothAfter.Start(testContext(t)); err != nil {
			t.Fatalf("Start() with new and previous KEK after the rewrap = %v", err)
		}
		if err := bothAfter.Rotate(testContext(t), false); err != nil {
			t.Fatalf("Rotate() after the rewrap = %v", err)
		}
		next := keyWithState(t, listKeys(t, bothAfter), StateNext)
		if next.KEKID != KEKID(newKEK) {
			t.Errorf("key created after the rewrap has KEKID %q, want the new KEK %q", next.KEKID, KEKID(newKEK))
		}

		// The old KEK is dropped from the configuration.
		newOnly := newRingManager(t, dbA, cfg, newKEK)
		if err := newOnly.Start(testContext(t)); err != nil {
			t.Fatalf("Start() with only the new KEK = %v", err)
		}
		clock.Advance(cfg.PublishLead)
		refresh(t, newOnly)
		refresh(t, bothAfter)
		if a, b := signingKeyID(t, newOnly), signingKeyID(t, bothAfter); a != b || a != next.ID {
			t.Errorf("signing keys after the change = %s and %s, want the next key %s", a, b, next.ID)
		}
	})
}

func findKey(tb testing.TB, infos []KeyInfo, kid string) KeyInfo {
	tb.Helper()
	for _, info := range infos {
		if info.ID == kid {
			return info
		}
	}
	tb.Fatalf("key %s not in %+v", kid, infos)
	return KeyInfo{}
}

// TestRewrapRacesRotate runs a rewrap and a rotation by two replicas at
// once. The transition lock orders them, and in either order every key
// ends sealed under the new KEK.
func TestRewrapRacesRotate(t *testing.T) {
	eachSharedStore(t, func(t *testing.T, dbA, dbB *sqlx.DB) {
		clock := newTestClock()
		cfg := testConfig(clock)
		oldKEK, newKEK := testKEK(), otherKEK(1)
		old := storeRetiredCurrentAndNext(t, dbA, clock, oldKEK)
		clock.Advance(cfg.PublishLead)
		refresh(t, old)
		if n := countState(listKeys(t, old), StateNext); n != 0 {
			t.Fatalf("next keys before the race = %d, want 0 so that Rotate creates one", n)
		}

		rewrapper := newRingManager(t, dbA, cfg, newKEK, oldKEK)
		rotator := newRingManager(t, dbB, cfg, newKEK, oldKEK)
		var rewrapErr, rotateErr error
		together(
			func() { _, rewrapErr = rewrapper.Rewrap(testContext(t)) },
			func() { rotateErr = rotator.Rotate(testContext(t), false) },
		)
		if rewrapErr != nil {
			t.Errorf("Rewrap() = %v", rewrapErr)
		}
		if rotateErr != nil {
			t.Errorf("Rotate() = %v", rotateErr)
		}

		infos := listKeys(t, rewrapper)
		keyWithState(t, infos, StateNext)
		for _, info := range infos {
			if info.State != StateRetired && info.KEKID != KEKID(newKEK) {
				t.Errorf("key %s (%s) KEKID = %q, want the new KEK %q", info.ID, info.State, info.KEKID, KEKID(newKEK))
			}
		}
	})
}
