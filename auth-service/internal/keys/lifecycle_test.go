package keys

import (
	"crypto/rsa"
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/jmoiron/sqlx"

	"example.com/todoapp/proto/accesstoken"
)

func TestLifecycle(t *testing.T) {
	eachStore(t, func(t *testing.T, open func(testing.TB) *sqlx.DB) {
		clock := newTestClock()
		cfg := testConfig(clock)
		m := startTestManager(t, open(t), cfg)
		t0 := clock.Now()

		first := keyWithState(t, listKeys(t, m), StateCurrent)
		if got := len(listKeys(t, m)); got != 1 {
			t.Fatalf("keys after Start = %d, want 1", got)
		}
		if !first.ActivateTime.Equal(t0) {
			t.Errorf("first key ActivateTime = %v, want %v", first.ActivateTime, t0)
		}
		if got := signingKeyID(t, m); got != first.ID {
			t.Errorf("SigningKey() = %s, want first key %s", got, first.ID)
		}

		// Nothing is due until one publish lead before the period ends.
		createNextAt := t0.Add(cfg.RotationPeriod - cfg.PublishLead)
		clock.Set(createNextAt.Add(-time.Second))
		if done := refresh(t, m); len(done) != 0 {
			t.Errorf("refresh() before the next key is due = %v, want no transitions", done)
		}

		clock.Set(createNextAt)
		done := refresh(t, m)
		if len(done) != 1 || done[0].Kind != transitionCreateNext {
			t.Fatalf("refresh() when the next key is due = %v, want one %s", done, transitionCreateNext)
		}
		infos := listKeys(t, m)
		next := keyWithState(t, infos, StateNext)
		if !next.CreateTime.Equal(createNextAt) {
			t.Errorf("next key CreateTime = %v, want %v", next.CreateTime, createNextAt)
		}
		if want := t0.Add(cfg.RotationPeriod); !next.ActivateTime.Equal(want) {
			t.Errorf("next key ActivateTime = %v, want %v", next.ActivateTime, want)
		}
		if got := signingKeyID(t, m); got != first.ID {
			t.Errorf("SigningKey() while next is waiting = %s, want first key %s", got, first.ID)
		}
		if _, err := m.PublicKey(testContext(t), next.ID); err != nil {
			t.Errorf("PublicKey(next) = %v, want the published next key", err)
		}

		// At the activation time the replica signs with the next key before
		// the database records the change.
		clock.Set(next.ActivateTime)
		if got := signingKeyID(t, m); got != next.ID {
			t.Errorf("SigningKey() at activation before refresh = %s, want next key %s", got, next.ID)
		}
		done = refresh(t, m)
		if len(done) != 1 || done[0] != (transition{transitionActivate, next.ID}) {
			t.Fatalf("refresh() at activation = %v, want activate %s", done, next.ID)
		}
		infos = listKeys(t, m)
		if got := keyWithState(t, infos, StateCurrent).ID; got != next.ID {
			t.Errorf("current key after activation = %s, want %s", got, next.ID)
		}
		retired := keyWithState(t, infos, StateRetired)
		wantRetired := KeyInfo{
			ID:           first.ID,
			State:        StateRetired,
			Bits:         2048,
			CreateTime:   t0,
			ActivateTime: t0,
			RetireTime:   next.ActivateTime,
			DeleteTime:   next.ActivateTime.Add(cfg.RetiredLifetime),
		}
		if diff := cmp.Diff(wantRetired, retired); diff != "" {
			t.Errorf("retired key mismatch (-want +got):\n%s", diff)
		}
		if _, err := m.PublicKey(testContext(t), first.ID); err != nil {
			t.Errorf("PublicKey(retired) = %v, want the published retired key", err)
		}

		// The retired key stays until its delete time, then goes.
		clock.Set(retired.DeleteTime.Add(-time.Microsecond))
		if done := refresh(t, m); len(done) != 0 {
			t.Errorf("refresh() before the delete time = %v, want no transitions", done)
		}
		clock.Set(retired.DeleteTime)
		done = refresh(t, m)
		if len(done) != 1 || done[0] != (transition{transitionDelete, first.ID}) {
			t.Fatalf("refresh() at the delete time = %v, want delete %s", done, first.ID)
		}
		if got := len(listKeys(t, m)); got != 1 {
			t.Errorf("keys after delete = %d, want 1", got)
		}
		if _, err := m.PublicKey(testContext(t), first.ID); !errors.Is(err, accesstoken.ErrUnknownKey) {
			t.Errorf("PublicKey(deleted) = %v, want ErrUnknownKey", err)
		}
	})
}

func TestLifecycleAfterLongDowntime(t *testing.T) {
	eachStore(t, func(t *testing.T, open func(testing.TB) *sqlx.DB) {
		clock := newTestClock()
		cfg := testConfig(clock)
		db := open(t)
		first := startTestManager(t, db, cfg)
		firstID := signingKeyID(t, first)
		first.Close()

		// Three periods later no next key was ever published, so the old
		// key keeps signing until a new one has been published for the lead.
		clock.Advance(3 * cfg.RotationPeriod)
		m := startTestManager(t, db, cfg)
		infos := listKeys(t, m)
		next := keyWithState(t, infos, StateNext)
		if want := clock.Now().Add(cfg.PublishLead); !next.ActivateTime.Equal(want) {
			t.Errorf("next key ActivateTime = %v, want now + publish lead %v", next.ActivateTime, want)
		}
		if got := signingKeyID(t, m); got != firstID {
			t.Errorf("SigningKey() = %s, want the old key %s until the lead ends", got, firstID)
		}
	})
}

func TestRotateWithoutDrop(t *testing.T) {
	eachStore(t, func(t *testing.T, open func(testing.TB) *sqlx.DB) {
		clock := newTestClock()
		cfg := testConfig(clock)
		m := startTestManager(t, open(t), cfg)
		firstID := signingKeyID(t, m)

		// Without a next key Rotate publishes one that signs one lead later.
		clock.Advance(time.Hour)
		if err := m.Rotate(testContext(t), false); err != nil {
			t.Fatalf("Rotate(false) = %v", err)
		}
		next := keyWithState(t, listKeys(t, m), StateNext)
		if want := clock.Now().Add(cfg.PublishLead); !next.ActivateTime.Equal(want) {
			t.Errorf("next key ActivateTime = %v, want %v", next.ActivateTime, want)
		}
		if got := signingKeyID(t, m); got != firstID {
			t.Errorf("SigningKey() right after Rotate(false) = %s, want %s", got, firstID)
		}

		// Rotating again before the lead ends changes nothing.
		clock.Advance(cfg.PublishLead / 2)
		if err := m.Rotate(testContext(t), false); err != nil {
			t.Fatalf("second Rotate(false) = %v", err)
		}
		if got := keyWithState(t, listKeys(t, m), StateNext); got != next {
			t.Errorf("next key after a second Rotate(false) = %+v, want unchanged %+v", got, next)
		}

		clock.Set(next.ActivateTime)
		refresh(t, m)
		if got := signingKeyID(t, m); got != next.ID {
			t.Errorf("SigningKey() after the lead = %s, want %s", got, next.ID)
		}
		if got := keyWithState(t, listKeys(t, m), StateRetired).ID; got != firstID {
			t.Errorf("retired key = %s, want %s", got, firstID)
		}
	})
}

func TestRotateActivatesPublishedNextKey(t *testing.T) {
	// A replica with a longer publish lead schedules the next key. An
	// operator command with the default lead then finds it published for
	// more than that lead, so it makes the key sign at once.
	clock := newTestClock()
	db := openSQLite(t)
	longLead := testConfig(clock)
	longLead.PublishLead = 100 * time.Hour
	scheduler := startTestManager(t, db, longLead)
	t0 := clock.Now()

	clock.Set(t0.Add(longLead.RotationPeriod - longLead.PublishLead))
	refresh(t, scheduler)
	next := keyWithState(t, listKeys(t, scheduler), StateNext)
	clock.Advance(50 * time.Hour)

	cfg := testConfig(clock)
	operator := newTestManager(t, db, testKEK(), cfg, nil)
	if err := operator.Rotate(testContext(t), false); err != nil {
		t.Fatalf("Rotate(false) = %v", err)
	}
	current := keyWithState(t, listKeys(t, operator), StateCurrent)
	if current.ID != next.ID {
		t.Errorf("current key after Rotate(false) = %s, want the next key %s", current.ID, next.ID)
	}
	if !current.ActivateTime.Equal(clock.Now()) {
		t.Errorf("ActivateTime = %v, want now %v", current.ActivateTime, clock.Now())
	}

	refresh(t, scheduler)
	if got := signingKeyID(t, scheduler); got != next.ID {
		t.Errorf("SigningKey() on the other replica after its poll = %s, want %s", got, next.ID)
	}
}

func TestRotateDropCurrent(t *testing.T) {
	eachStore(t, func(t *testing.T, open func(testing.TB) *sqlx.DB) {
		ctx := testContext(t)
		clock := newTestClock()
		cfg := testConfig(clock)
		cfg.RetiredLifetime = cfg.RotationPeriod
		m := startTestManager(t, open(t), cfg)
		verifier := newTestVerifier(t, m, clock)

		// Reach a state with a current, a next and a retired key.
		t0 := clock.Now()
		for _, at := range []time.Time{
			t0.Add(cfg.RotationPeriod - cfg.PublishLead),
			t0.Add(cfg.RotationPeriod),
			t0.Add(2*cfg.RotationPeriod - cfg.PublishLead),
		} {
			clock.Set(at)
			refresh(t, m)
		}
		before := listKeys(t, m)
		compromised := keyWithState(t, before, StateCurrent)
		pending := keyWithState(t, before, StateNext)
		retired := keyWithState(t, before, StateRetired)

		oldToken := signTestToken(t, m, clock)
		if _, err := verifier.Verify(ctx, oldToken); err != nil {
			t.Fatalf("Verify(token of the current key) = %v before the drop", err)
		}

		clock.Advance(time.Minute)
		if err := m.Rotate(ctx, true); err != nil {
			t.Fatalf("Rotate(true) = %v", err)
		}

		after := listKeys(t, m)
		if got := len(after); got != 2 {
			t.Errorf("keys after the drop = %d (%+v), want the fresh and the retired key", got, after)
		}
		fresh := keyWithState(t, after, StateCurrent)
		if fresh.ID == compromised.ID || fresh.ID == pending.ID {
			t.Errorf("current key after the drop = %s, want a fresh key", fresh.ID)
		}
		if !fresh.ActivateTime.Equal(clock.Now()) {
			t.Errorf("fresh key ActivateTime = %v, want now %v", fresh.ActivateTime, clock.Now())
		}
		if got := keyWithState(t, after, StateRetired).ID; got != retired.ID {
			t.Errorf("retired key after the drop = %s, want %s kept", got, retired.ID)
		}
		if got := signingKeyID(t, m); got != fresh.ID {
			t.Errorf("SigningKey() after the drop = %s, want %s", got, fresh.ID)
		}

		body := string(getJWKS(t, m).body)
		for _, id := range []string{compromised.ID, pending.ID} {
			if containsKID(t, body, id) {
				t.Errorf("JWKS after the drop still has dropped key %s", id)
			}
			if _, err := m.PublicKey(ctx, id); !errors.Is(err, accesstoken.ErrUnknownKey) {
				t.Errorf("PublicKey(%s) after the drop = %v, want ErrUnknownKey", id, err)
			}
		}
		if !containsKID(t, body, fresh.ID) {
			t.Errorf("JWKS after the drop lacks the fresh key %s", fresh.ID)
		}

		if _, err := verifier.Verify(ctx, oldToken); !errors.Is(err, accesstoken.ErrInvalidToken) {
			t.Errorf("Verify(token of the dropped key) = %v, want ErrInvalidToken", err)
		}
		if _, err := verifier.Verify(ctx, signTestToken(t, m, clock)); err != nil {
			t.Errorf("Verify(token of the fresh key) = %v", err)
		}
	})
}

func TestStartWithWrongKEK(t *testing.T) {
	eachStore(t, func(t *testing.T, open func(testing.TB) *sqlx.DB) {
		clock := newTestClock()
		cfg := testConfig(clock)
		db := open(t)
		startTestManager(t, db, cfg)

		wrongKEK := testKEK()
		wrongKEK[0] ^= 0xff
		m := newTestManager(t, db, wrongKEK, cfg, nil)
		if err := m.Start(testContext(t)); !errors.Is(err, ErrDecrypt) {
			t.Errorf("Start() with the wrong KEK = %v, want ErrDecrypt", err)
		}

		// An operator command with the wrong KEK must not add a key the
		// service cannot open.
		for _, drop := range []bool{false, true} {
			if err := m.Rotate(testContext(t), drop); !errors.Is(err, ErrDecrypt) {
				t.Errorf("Rotate(%v) with the wrong KEK = %v, want ErrDecrypt", drop, err)
			}
		}
		if got := len(listKeys(t, m)); got != 1 {
			t.Errorf("keys after rejected rotations = %d, want 1", got)
		}
	})
}

func TestStartTwiceAndClose(t *testing.T) {
	clock := newTestClock()
	m := startTestManager(t, openSQLite(t), testConfig(clock))

	if err := m.Start(testContext(t)); err == nil {
		t.Error("second Start() = nil, want an error")
	}
	m.Close()
	m.Close()

	// The loaded keys keep serving after Close.
	if _, err := m.SigningKey(testContext(t)); err != nil {
		t.Errorf("SigningKey() after Close = %v", err)
	}
}

func TestSigningKeyBeforeStart(t *testing.T) {
	m := newTestManager(t, openSQLite(t), testKEK(), testConfig(newTestClock()), nil)

	if _, err := m.SigningKey(testContext(t)); !errors.Is(err, accesstoken.ErrKeysUnavailable) {
		t.Errorf("SigningKey() before Start = %v, want ErrKeysUnavailable", err)
	}
	if _, err := m.PublicKey(testContext(t), "kid"); !errors.Is(err, accesstoken.ErrKeysUnavailable) {
		t.Errorf("PublicKey() before Start = %v, want ErrKeysUnavailable", err)
	}
}

func TestSigningKeyStale(t *testing.T) {
	clock := newTestClock()
	cfg := testConfig(clock)
	m := startTestManager(t, openSQLite(t), cfg)

	clock.Advance(cfg.PublishLead)
	if _, err := m.SigningKey(testContext(t)); err != nil {
		t.Errorf("SigningKey() one publish lead after the load = %v, want a key", err)
	}

	clock.Advance(time.Second)
	if _, err := m.SigningKey(testContext(t)); !errors.Is(err, accesstoken.ErrKeysUnavailable) {
		t.Errorf("SigningKey() past the publish lead = %v, want ErrKeysUnavailable", err)
	}

	refresh(t, m)
	if _, err := m.SigningKey(testContext(t)); err != nil {
		t.Errorf("SigningKey() after a refresh = %v, want a key", err)
	}
}

func TestSpareKeyReused(t *testing.T) {
	clock := newTestClock()
	cfg := testConfig(clock)
	m := newTestManager(t, openSQLite(t), testKEK(), cfg, nil)
	pooled := m.generateKey
	generated := 0
	m.generateKey = func(bits int) (*rsa.PrivateKey, error) {
		generated++
		return pooled(bits)
	}

	if err := m.Start(testContext(t)); err != nil {
		t.Fatalf("Start() = %v", err)
	}
	if generated != 1 {
		t.Errorf("keys generated by Start() = %d, want 1", generated)
	}

	// A Rotate that finds a next key waiting creates none, so its spare
	// key is kept for the next creation.
	clock.Advance(cfg.RotationPeriod - cfg.PublishLead)
	refresh(t, m)
	if err := m.Rotate(testContext(t), false); err != nil {
		t.Fatalf("Rotate(false) = %v", err)
	}
	if generated != 3 {
		t.Errorf("keys generated after the next key and Rotate(false) = %d, want 3", generated)
	}
	if m.spare == nil {
		t.Fatal("spare key after a Rotate(false) that created nothing = nil, want the generated key")
	}

	// One period later the next key has activated and its successor is
	// due, which uses the spare key.
	clock.Advance(cfg.RotationPeriod)
	refresh(t, m)
	keyWithState(t, listKeys(t, m), StateNext)
	if generated != 3 {
		t.Errorf("keys generated after the spare key was used = %d, want still 3", generated)
	}
	if m.spare != nil {
		t.Error("spare key after a creation = set, want nil")
	}
}
