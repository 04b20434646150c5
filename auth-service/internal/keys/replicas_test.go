package keys

import (
	"context"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"example.com/todoapp/auth-service/internal/store"
	"example.com/todoapp/auth-service/internal/store/storetest"
)

// openSharedPair opens two connection pools on one fresh database, as two
// replicas would.
func openSharedPair(tb testing.TB, kind string) (*sqlx.DB, *sqlx.DB) {
	tb.Helper()

	var cfg store.Config
	switch kind {
	case "sqlite":
		cfg.SQLitePath = filepath.Join(tb.TempDir(), "auth.db")
	case "postgres":
		cfg.DatabaseURL = storetest.NewPostgresDatabase(tb)
	}

	ctx := testContext(tb)
	var dbs [2]*sqlx.DB
	for i := range dbs {
		s, err := store.Open(ctx, cfg)
		if err != nil {
			tb.Fatalf("store.Open(%s) = %v", cfg.Describe(), err)
		}
		tb.Cleanup(func() { s.Close() })
		if _, err := s.Migrate(ctx); err != nil {
			tb.Fatalf("Migrate(%s) = %v", cfg.Describe(), err)
		}
		dbs[i] = s.DB()
	}
	return dbs[0], dbs[1]
}

func eachSharedStore(t *testing.T, fn func(t *testing.T, a, b *sqlx.DB)) {
	for _, kind := range []string{"sqlite", "postgres"} {
		t.Run(kind, func(t *testing.T) {
			a, b := openSharedPair(t, kind)
			fn(t, a, b)
		})
	}
}

// together runs fa and fb at once, released by one channel so both reach
// the database as close together as the scheduler allows.
func together(fa, fb func()) {
	start := make(chan struct{})
	var wg sync.WaitGroup
	for _, f := range []func(){fa, fb} {
		wg.Go(func() {
			<-start
			f()
		})
	}
	close(start)
	wg.Wait()
}

func TestReplicasStartTogether(t *testing.T) {
	eachSharedStore(t, func(t *testing.T, dbA, dbB *sqlx.DB) {
		clock := newTestClock()
		cfg := testConfig(clock)
		a := newTestManager(t, dbA, testKEK(), cfg, nil)
		b := newTestManager(t, dbB, testKEK(), cfg, nil)

		var errA, errB error
		together(
			func() { errA = a.Start(testContext(t)) },
			func() { errB = b.Start(testContext(t)) },
		)
		if errA != nil || errB != nil {
			t.Fatalf("Start() = %v and %v, want nil", errA, errB)
		}

		infos := listKeys(t, a)
		if len(infos) != 1 {
			t.Fatalf("keys after two replicas started = %d (%+v), want 1", len(infos), infos)
		}
		idA, idB := signingKeyID(t, a), signingKeyID(t, b)
		if idA != infos[0].ID || idB != infos[0].ID {
			t.Errorf("SigningKey() = %s and %s, want both %s", idA, idB, infos[0].ID)
		}
	})
}

func TestReplicasRaceTransitions(t *testing.T) {
	const rounds = 40

	eachSharedStore(t, func(t *testing.T, dbA, dbB *sqlx.DB) {
		ctx := testContext(t)
		clock := newTestClock()
		cfg := testConfig(clock)
		// Retired keys outlive the next rotation, so deletions, creations
		// and activations fall due at different times.
		cfg.RetiredLifetime = cfg.RotationPeriod + 7*time.Hour
		a := startTestManager(t, dbA, cfg)
		b := startTestManager(t, dbB, cfg)

		performed := map[transition]int{}
		for round := range rounds {
			records, err := selectKeys(ctx, dbA)
			if err != nil {
				t.Fatal(err)
			}
			clock.Set(cfg.dueTime(records))

			var doneA, doneB []transition
			var errA, errB error
			together(
				func() { doneA, errA = a.refresh(ctx) },
				func() { doneB, errB = b.refresh(ctx) },
			)
			if errA != nil || errB != nil {
				t.Fatalf("round %d: refresh() = %v and %v, want nil", round, errA, errB)
			}

			switch {
			case len(doneA) == 0 && len(doneB) == 0:
				t.Fatalf("round %d at %v: no replica performed the due transition", round, clock.Now())
			case len(doneA) > 0 && len(doneB) > 0:
				t.Fatalf("round %d: both replicas performed transitions: %v and %v", round, doneA, doneB)
			}
			for _, tr := range append(doneA, doneB...) {
				performed[tr]++
			}

			// The replica that lost picks up the result on its next poll.
			refresh(t, a)
			refresh(t, b)
			checkSameKeys(t, round, a, b)
			infos := listKeys(t, a)
			if n := countState(infos, StateCurrent); n != 1 {
				t.Fatalf("round %d: %d current keys, want 1", round, n)
			}
			if n := countState(infos, StateNext); n > 1 {
				t.Fatalf("round %d: %d next keys, want at most 1", round, n)
			}
		}

		kinds := map[string]int{}
		for tr, n := range performed {
			if n != 1 {
				t.Errorf("transition %s of key %s performed %d times, want once", tr.Kind, tr.KeyID, n)
			}
			kinds[tr.Kind]++
		}
		if kinds[transitionActivate] < rounds/4 {
			t.Errorf("activations over %d rounds = %d, want at least %d", rounds, kinds[transitionActivate], rounds/4)
		}
		if kinds[transitionDelete] == 0 {
			t.Errorf("deletions over %d rounds = 0, want some", rounds)
		}
	})
}

func TestReplicasRaceRotate(t *testing.T) {
	eachSharedStore(t, func(t *testing.T, dbA, dbB *sqlx.DB) {
		clock := newTestClock()
		cfg := testConfig(clock)
		a := startTestManager(t, dbA, cfg)
		b := startTestManager(t, dbB, cfg)
		clock.Advance(time.Hour)

		var errA, errB error
		together(
			func() { errA = a.Rotate(testContext(t), false) },
			func() { errB = b.Rotate(testContext(t), false) },
		)
		if errA != nil || errB != nil {
			t.Fatalf("Rotate(false) = %v and %v, want nil", errA, errB)
		}
		infos := listKeys(t, a)
		if n := countState(infos, StateNext); n != 1 {
			t.Errorf("next keys after two concurrent Rotate(false) = %d, want 1", n)
		}
		if len(infos) != 2 {
			t.Errorf("keys after two concurrent Rotate(false) = %d, want 2", len(infos))
		}
	})
}

// checkSameKeys fails the test unless both managers serve the same JWKS
// and sign with the same key.
func checkSameKeys(tb testing.TB, round int, a, b *Manager) {
	tb.Helper()
	if idA, idB := signingKeyID(tb, a), signingKeyID(tb, b); idA != idB {
		tb.Fatalf("round %d: SigningKey() = %s and %s, want the same key", round, idA, idB)
	}
	if bodyA, bodyB := string(a.loaded().jwks), string(b.loaded().jwks); bodyA != bodyB {
		tb.Fatalf("round %d: replicas serve different JWKS:\n%s\n%s", round, bodyA, bodyB)
	}
}

func TestPollLoopLoadsOtherReplicaChange(t *testing.T) {
	dbA, dbB := openSharedPair(t, "sqlite")
	clock := newTestClock()
	cfg := testConfig(clock)
	cfg.PollInterval = 10 * time.Millisecond
	a := startTestManager(t, dbA, cfg)
	b := startTestManager(t, dbB, cfg)
	dropped := signingKeyID(t, b)

	if err := a.Rotate(testContext(t), true); err != nil {
		t.Fatalf("Rotate(true) = %v", err)
	}
	fresh := signingKeyID(t, a)

	// Wait for b's poll loop. The deadline only bounds a broken loop.
	ctx, cancel := context.WithTimeout(testContext(t), 10*time.Second)
	defer cancel()
	for signingKeyID(t, b) == dropped {
		select {
		case <-ctx.Done():
			t.Fatalf("SigningKey() on the other replica = %s after 10s, want %s", dropped, fresh)
		case <-time.After(5 * time.Millisecond):
		}
	}
	if got := signingKeyID(t, b); got != fresh {
		t.Errorf("SigningKey() on the other replica = %s, want %s", got, fresh)
	}
}

func TestMetrics(t *testing.T) {
	clock := newTestClock()
	cfg := testConfig(clock)
	reg := prometheus.NewPedanticRegistry()
	m := newTestManager(t, openSQLite(t), testKEK(), cfg, reg)
	if err := m.Start(testContext(t)); err != nil {
		t.Fatalf("Start() = %v", err)
	}
	t0 := clock.Now()

	clock.Set(t0.Add(cfg.RotationPeriod - cfg.PublishLead))
	refresh(t, m)
	for state, want := range map[string]float64{"next": 1, "current": 1, "retired": 0} {
		if got := gatherValue(t, reg, "auth_signing_keys", "state", state); got != want {
			t.Errorf("auth_signing_keys{state=%q} = %v, want %v", state, got, want)
		}
	}

	clock.Set(t0.Add(cfg.RotationPeriod))
	refresh(t, m)
	if got := gatherValue(t, reg, "auth_signing_key_rotations_total", "reason", "scheduled"); got != 1 {
		t.Errorf("auth_signing_key_rotations_total{reason=scheduled} = %v, want 1", got)
	}
	if got := gatherValue(t, reg, "auth_signing_keys", "state", "retired"); got != 1 {
		t.Errorf("auth_signing_keys{state=retired} = %v, want 1", got)
	}

	clock.Advance(90 * time.Minute)
	if got := gatherValue(t, reg, "auth_signing_key_current_age_seconds", "", ""); got != 5400 {
		t.Errorf("auth_signing_key_current_age_seconds = %v, want 5400", got)
	}

	if err := m.Rotate(testContext(t), true); err != nil {
		t.Fatalf("Rotate(true) = %v", err)
	}
	if got := gatherValue(t, reg, "auth_signing_key_rotations_total", "reason", "drop_current"); got != 1 {
		t.Errorf("auth_signing_key_rotations_total{reason=drop_current} = %v, want 1", got)
	}
	if got := gatherValue(t, reg, "auth_signing_key_current_age_seconds", "", ""); got != 0 {
		t.Errorf("auth_signing_key_current_age_seconds after the drop = %v, want 0", got)
	}
}

// gatherValue returns the value of the metric called name whose label has
// the given value. An empty label matches the first series.
func gatherValue(tb testing.TB, reg *prometheus.Registry, name, label, value string) float64 {
	tb.Helper()
	families, err := reg.Gather()
	if err != nil {
		tb.Fatalf("Gather() = %v", err)
	}
	for _, family := range families {
		if family.GetName() != name {
			continue
		}
		for _, metric := range family.GetMetric() {
			if label != "" && !hasLabel(metric.GetLabel(), label, value) {
				continue
			}
			switch {
			case metric.Counter != nil:
				return metric.GetCounter().GetValue()
			case metric.Gauge != nil:
				return metric.GetGauge().GetValue()
			}
		}
	}
	tb.Fatalf("metric %s{%s=%q} not gathered", name, label, value)
	return 0
}

func hasLabel(pairs []*dto.LabelPair, name, value string) bool {
	for _, pair := range pairs {
		if pair.GetName() == name && pair.GetValue() == value {
			return true
		}
	}
	return false
}

// TestReplicasRaceOnDeferredSQLite uses SQLite handles that open
// transactions with a plain (deferred) BEGIN, unlike store.Open. Without
// the write lock taken at the start of a transition, one of two racing
// replicas would fail with SQLITE_BUSY on nearly every round.
func TestReplicasRaceOnDeferredSQLite(t *testing.T) {
	const rounds = 20

	path := filepath.Join(t.TempDir(), "auth.db")
	s, err := store.Open(testContext(t), store.Config{SQLitePath: path})
	if err != nil {
		t.Fatalf("store.Open() = %v", err)
	}
	if _, err := s.Migrate(testContext(t)); err != nil {
		t.Fatalf("Migrate() = %v", err)
	}
	s.Close()

	dsn := "file:" + path + "?_pragma=busy_timeout(10000)&_pragma=journal_mode(WAL)"
	var dbs [2]*sqlx.DB
	for i := range dbs {
		db, err := sqlx.Open("sqlite", dsn)
		if err != nil {
			t.Fatalf("sqlx.Open(%s) = %v", dsn, err)
		}
		t.Cleanup(func() { db.Close() })
		dbs[i] = db
	}

	ctx := testContext(t)
	clock := newTestClock()
	cfg := testConfig(clock)
	a := startTestManager(t, dbs[0], cfg)
	b := startTestManager(t, dbs[1], cfg)
	for round := range rounds {
		records, err := selectKeys(ctx, dbs[0])
		if err != nil {
			t.Fatal(err)
		}
		clock.Set(cfg.dueTime(records))

		var doneA, doneB []transition
		var errA, errB error
		together(
			func() { doneA, errA = a.refresh(ctx) },
			func() { doneB, errB = b.refresh(ctx) },
		)
		if errA != nil || errB != nil {
			t.Fatalf("round %d: refresh() = %v and %v, want nil", round, errA, errB)
		}
		if len(doneA) > 0 && len(doneB) > 0 {
			t.Fatalf("round %d: both replicas performed transitions: %v and %v", round, doneA, doneB)
		}
		if len(doneA) == 0 && len(doneB) == 0 {
			t.Fatalf("round %d: no replica performed the due transition", round)
		}
	}
}
