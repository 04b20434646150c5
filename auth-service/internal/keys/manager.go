// Package keys manages the RSA keys that sign access tokens: it creates,
// rotates, retires and deletes them in the database that every auth-service
// replica shares, and publishes their public parts as a JWKS.
//
// A key moves next -> current -> retired -> deleted. A next key is
// published for Config.PublishLead before it signs. A retired key stays
// published for Config.RetiredLifetime after it stops, until the tokens it
// signed have expired. So a verifier that refreshes its copy of the JWKS
// as often as Config promises meets no token whose key it lacks, unless an
// operator drops a key with Rotate.
//
// Each replica polls the database. Under a lock (a PostgreSQL advisory
// lock, or the SQLite write lock) exactly one replica performs each
// transition, and the others load the result on their next poll.
package keys

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/prometheus/client_golang/prometheus"

	"example.com/todoapp/proto/accesstoken"
)

// KeyInfo is the state and schedule of one stored key, as List returns it.
type KeyInfo struct {
	ID    string
	State State
	Bits  int
	// CreateTime is when the key was generated and published.
	CreateTime time.Time
	// ActivateTime is when the key starts (next) or started (current,
	// retired) to sign.
	ActivateTime time.Time
	// RetireTime is when the key stopped signing. It is zero unless the
	// key is retired.
	RetireTime time.Time
	// DeleteTime is when the key leaves the JWKS and the database. It is
	// zero unless the key is retired.
	DeleteTime time.Time
	// KEKID is the id (see func KEKID) of the configured key-encryption
	// key that opens the stored private key. It is empty for a retired key, which has no
	// private key, and when none of the configured KEKs opens it.
	KEKID string
}

// Manager keeps the signing keys of one replica in step with the database.
// Its methods are safe for concurrent use.
type Manager struct {
	db *sqlx.DB
	// keks are the key-encryption keys that open stored private keys. The
	// first is the primary KEK, which seals new keys once every stored key
	// opens under it (see sealingKEK) and which Rewrap seals under. The
	// others are previous KEKs.
	keks    [][]byte
	cfg     Config
	logger  *slog.Logger
	metrics *metrics

	// generateKey creates an RSA key. Tests replace it with a pool of
	// pre-generated keys, because 2048-bit generation is slow.
	generateKey func(bits int) (*rsa.PrivateKey, error)

	spareMu sync.Mutex
	spare   *rsa.PrivateKey // generated before a transition needs it, guarded by spareMu

	mu       sync.RWMutex
	snapshot *snapshot // nil until the first load, guarded by mu

	lifeMu  sync.Mutex
	started bool               // guarded by lifeMu
	cancel  context.CancelFunc // stops the poll loop, guarded by lifeMu
	done    chan struct{}      // closed when the poll loop ends, guarded by lifeMu
}

// Option sets an optional setting of NewManager.
type Option func(*options)

type options struct {
	previousKEKs [][]byte
}

// WithPreviousKEKs adds key-encryption keys that open stored private keys
// but never become the primary KEK. They let replicas load keys sealed
// under an earlier KEK until Rewrap has re-sealed them under the primary
// KEK.
func WithPreviousKEKs(keks ...[]byte) Option {
	return func(o *options) {
		o.previousKEKs = append(o.previousKEKs, keks...)
	}
}

// NewManager returns a Manager over the signing_keys table of db, which
// must be migrated. kek is the 32-byte primary key-encryption key that
// seals the private keys (see WithPreviousKEKs for earlier ones). A nil
// reg registers no metrics.
//
// NewManager returns an error when cfg is invalid, a KEK has the wrong
// size, a previous KEK equals another configured KEK, or the metrics
// cannot be registered. It does not touch the database.
func NewManager(db *sqlx.DB, kek []byte, cfg Config, logger *slog.Logger, reg prometheus.Registerer, opts ...Option) (*Manager, error) {
	if db == nil {
		return nil, errors.New("missing database: the signing-key manager needs the migrated auth database")
	}
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	keks := [][]byte{bytes.Clone(kek)}
	for _, previous := range o.previousKEKs {
		keks = append(keks, bytes.Clone(previous))
	}
	for i, k := range keks {
		if len(k) != KEKSize {
			return nil, fmt.Errorf("invalid key-encryption key %d of %d: has %d bytes, must have %d", i+1, len(keks), len(k), KEKSize)
		}
		for _, earlier := range keks[:i] {
			if bytes.Equal(k, earlier) {
				return nil, fmt.Errorf("invalid previous key-encryption key %s: equals another configured KEK, but it must be the KEK that sealed the stored keys", KEKID(k))
			}
		}
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("invalid signing-key configuration: %w", err)
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}

	m := &Manager{
		db:     db,
		keks:   keks,
		cfg:    cfg,
		logger: logger,
		generateKey: func(bits int) (*rsa.PrivateKey, error) {
			key, err := rsa.GenerateKey(rand.Reader, bits)
			if err != nil {
				return nil, fmt.Errorf("generate %d-bit RSA key: %w", bits, err)
			}
			return key, nil
		},
	}
	met, err := newMetrics(reg, m.signingKeyAge)
	if err != nil {
		return nil, err
	}
	m.metrics = met
	return m, nil
}

// Start creates the first key when the database has none, performs the
// transitions that are due, loads the keys and starts polling the
// database every Config.PollInterval until ctx ends or Close is called.
// It returns an error when the keys cannot be loaded or decrypted (for
// example under the wrong key-encryption key), or when called twice.
func (m *Manager) Start(ctx context.Context) error {
	m.lifeMu.Lock()
	defer m.lifeMu.Unlock()
	if m.started {
		return errors.New("signing-key manager already started")
	}

	if _, err := m.refresh(ctx); err != nil {
		return err
	}
	s := m.loaded()
	published := make([]string, 0, len(s.keys))
	for _, k := range s.keys {
		published = append(published, k.info.ID)
	}
	m.logger.Info("signing keys loaded",
		"current_kid", s.current.info.ID, "next_kid", s.nextID(), "published_kids", published,
		"kek_id", KEKID(m.keks[0]), "previous_kek_ids", m.previousKEKIDs())

	loopCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	stop := context.AfterFunc(ctx, cancel)
	m.started, m.cancel, m.done = true, cancel, make(chan struct{})
	go func() {
		defer close(m.done)
		defer stop()
		m.poll(loopCtx)
	}()
	return nil
}

// Close stops the poll loop and waits for it to end. The keys already
// loaded keep serving until they are stale (see SigningKey and
// JWKSHandler). Close is safe to call more than once and without Start.
func (m *Manager) Close() {
	m.lifeMu.Lock()
	cancel, done := m.cancel, m.done
	m.lifeMu.Unlock()

	if cancel == nil {
		return
	}
	cancel()
	<-done
}

func (m *Manager) poll(ctx context.Context) {
	ticker := time.NewTicker(m.cfg.PollInterval)
	defer ticker.Stop()

	for {
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}

		_, err := m.refresh(ctx)
		if err != nil && ctx.Err() == nil {
			m.metrics.refreshFailures.Inc()
			m.logger.Error("refresh signing keys failed, so the keys loaded before stay in use", "err", err)
		}
	}
}

// dbTimeout bounds each database step of a poll: one read, or one
// transition that may wait for another replica's transition.
func (m *Manager) dbTimeout() time.Duration {
	return max(m.cfg.PollInterval, 10*time.Second)
}

// readKeys is selectKeys on the manager's database with the poll deadline.
func (m *Manager) readKeys(ctx context.Context) ([]keyRecord, error) {
	ctx, cancel := context.WithTimeout(ctx, m.dbTimeout())
	defer cancel()
	return selectKeys(ctx, m.db)
}

// refresh performs the transitions that are due, if any, and loads the
// keys. It returns the transitions this replica performed.
func (m *Manager) refresh(ctx context.Context) ([]transition, error) {
	loadTime := m.cfg.now()
	records, err := m.readKeys(ctx)
	if err != nil {
		return nil, err
	}

	// Checking without the lock first keeps replicas off the lock while
	// nothing is due, which is nearly always.
	var done []transition
	if now := m.cfg.now(); !now.Before(m.cfg.dueTime(records)) {
		if m.cfg.keyCreationDue(records, now) {
			if err := m.prepareSpareKey(); err != nil {
				return nil, err
			}
		}

		txCtx, cancel := context.WithTimeout(ctx, m.dbTimeout())
		done, err = m.withTransitionLock(txCtx, func(tx *sqlx.Tx, records []keyRecord, sealKEK []byte) ([]transition, error) {
			return m.applyDue(txCtx, tx, records, m.cfg.now(), sealKEK)
		})
		cancel()
		if err != nil {
			return nil, err
		}
		m.record(done, "scheduled")

		loadTime = m.cfg.now()
		if records, err = m.readKeys(ctx); err != nil {
			return nil, err
		}
	}

	if err := m.load(records, loadTime); err != nil {
		return done, err
	}
	return done, nil
}

// record logs and counts the transitions this replica performed.
func (m *Manager) record(done []transition, reason string) {
	for _, t := range done {
		level := slog.LevelInfo
		if t.Kind == transitionDrop {
			level = slog.LevelWarn
		}
		m.logger.Log(context.Background(), level, "signing key transition", "transition", t.Kind, "kid", t.KeyID)

		switch {
		case t.Kind == transitionActivate:
			m.metrics.rotations.WithLabelValues(reason).Inc()
		case t.Kind == transitionCreateCurrent && reason == "drop_current":
			m.metrics.rotations.WithLabelValues(reason).Inc()
		}
	}
}

// SigningKey returns the key that signs new tokens. When the next key's
// activation time has passed it returns the next key even before the
// database records the change, so every replica switches at the same
// moment.
//
// The error wraps accesstoken.ErrKeysUnavailable before Start, and when
// the last load from the database is older than Config.PublishLead. Up to
// that age the loaded current key cannot have been retired and deleted
// elsewhere, because any next key created since then publishes for a whole
// lead before it replaces the current key.
func (m *Manager) SigningKey(ctx context.Context) (accesstoken.SigningKey, error) {
	s := m.loaded()
	if s == nil {
		return accesstoken.SigningKey{}, fmt.Errorf("signing keys not loaded: %w", accesstoken.ErrKeysUnavailable)
	}
	now := m.cfg.now()
	if age := now.Sub(s.loadTime); age > m.cfg.PublishLead {
		return accesstoken.SigningKey{}, fmt.Errorf("signing keys last loaded from the database %v ago, more than the publish lead %v: %w",
			age, m.cfg.PublishLead, accesstoken.ErrKeysUnavailable)
	}
	k := s.signingKey(now)
	return accesstoken.SigningKey{ID: k.info.ID, Key: k.private}, nil
}

// PublicKey returns the public key of a published key (next, current or
// retired), so the auth service verifies its own tokens as the todo
// service does. It implements accesstoken.KeyResolver. The error wraps
// accesstoken.ErrUnknownKey when no published key has that kid, and
// accesstoken.ErrKeysUnavailable before Start.
func (m *Manager) PublicKey(ctx context.Context, kid string) (*rsa.PublicKey, error) {
	s := m.loaded()
	if s == nil {
		return nil, fmt.Errorf("signing keys not loaded: %w", accesstoken.ErrKeysUnavailable)
	}
	k, ok := s.byID[kid]
	if !ok {
		return nil, accesstoken.ErrUnknownKey
	}
	return k.public, nil
}

// List returns every stored key, ordered by activation time, as the
// database has it now, with the KEK that opens each private key. It works
// without Start, and under KEKs that open none of the keys.
func (m *Manager) List(ctx context.Context) ([]KeyInfo, error) {
	records, err := selectKeys(ctx, m.db)
	if err != nil {
		return nil, err
	}
	infos := make([]KeyInfo, len(records))
	for i, r := range records {
		infos[i] = r.info()
		if r.PrivateKey == nil {
			continue
		}
		if _, index, err := openAny(m.keks, r.ID, r.PrivateKey); err == nil {
			infos[i].KEKID = KEKID(m.keks[index])
		}
	}
	return infos, nil
}

// previousKEKIDs returns the KEKID of each previous key-encryption key.
func (m *Manager) previousKEKIDs() []string {
	ids := make([]string, 0, len(m.keks)-1)
	for _, kek := range m.keks[1:] {
		ids = append(ids, KEKID(kek))
	}
	return ids
}

// Rotate starts a rotation now. It works without Start, so an operator
// command can call it while the service runs, and the replicas load the
// result on their next poll.
//
// Without dropCurrent the current key keeps signing until a next key has
// been published for Config.PublishLead. An existing next key that was
// published long enough ago signs at once. Otherwise a next key is created
// (when there is none) and signs one lead after its creation. Verifiers
// that refresh in time meet no unknown key.
//
// With dropCurrent (for a suspected leak) the current and next keys are
// deleted and a fresh key signs immediately on this replica. Retired keys
// stay. The dropped keys leave this replica's JWKS at once, and the other
// replicas' on their next poll, when they also switch to the fresh key.
// Remote verifiers reject the dropped keys' tokens from their next JWKS
// refresh on, and fetch the fresh key when they first meet its kid.
func (m *Manager) Rotate(ctx context.Context, dropCurrent bool) error {
	// Most rotations create a key, and generating it before the lock keeps
	// other replicas from waiting on it.
	if err := m.prepareSpareKey(); err != nil {
		return err
	}
	done, err := m.withTransitionLock(ctx, func(tx *sqlx.Tx, records []keyRecord, sealKEK []byte) ([]transition, error) {
		return m.applyRotate(ctx, tx, records, m.cfg.now(), dropCurrent, sealKEK)
	})
	if err != nil {
		return err
	}
	reason := "manual"
	if dropCurrent {
		reason = "drop_current"
	}
	m.record(done, reason)

	loadTime := m.cfg.now()
	records, err := selectKeys(ctx, m.db)
	if err != nil {
		return err
	}
	return m.load(records, loadTime)
}

func (r keyRecord) info() KeyInfo {
	return KeyInfo{
		ID:           r.ID,
		State:        r.State,
		Bits:         r.Bits,
		CreateTime:   fromMicros(r.CreateTime),
		ActivateTime: fromMicros(r.ActivateTime),
		RetireTime:   fromNullMicros(r.RetireTime),
		DeleteTime:   fromNullMicros(r.DeleteTime),
	}
}

func (m *Manager) loaded() *snapshot {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.snapshot
}

// signingKeyAge returns how long the key that SigningKey returns has
// signed, or zero before the first load.
func (m *Manager) signingKeyAge() time.Duration {
	s := m.loaded()
	if s == nil {
		return 0
	}
	now := m.cfg.now()
	return now.Sub(s.signingKey(now).info.ActivateTime)
}
