package storetest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"

	"example.com/todoapp/auth-service/internal/auth"
	"example.com/todoapp/auth-service/internal/store"
)

// RunTests runs the store conformance suite, with a fresh store from
// newStore for each test.
func RunTests(t *testing.T, newStore func(testing.TB) *store.Store) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s *store.Store)
	}{
		{"CreateAndGetUser", testCreateAndGetUser},
		{"DuplicateEmail", testDuplicateEmail},
		{"UserTextRoundTrip", testUserTextRoundTrip},
		{"SessionLifecycle", testSessionLifecycle},
		{"RotateRefreshToken", testRotateRefreshToken},
		{"RotateReuseAfterGrace", testRotateReuseAfterGrace},
		{"RotateRejectsBadTokens", testRotateRejectsBadTokens},
		{"RotateRaceOneWinner", testRotateRaceOneWinner},
		{"RevokeByRefreshToken", testRevokeByRefreshToken},
		{"ChangePasswordRevokesOthers", testChangePasswordRevokesOthers},
		{"DeleteUserCascades", testDeleteUserCascades},
		{"LoginThrottle", testLoginThrottle},
		{"DeleteStaleRecords", testDeleteStaleRecords},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.fn(t, newStore(t))
		})
	}
}

// base is a fixed time with a whole number of microseconds, the resolution
// the store keeps.
var base = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func testContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func mustCreateUser(t *testing.T, s *store.Store, email string) auth.User {
	t.Helper()
	u := auth.User{ID: uuid.NewString(), Email: email, CreateTime: base}
	if err := s.CreateUser(testContext(t), u, "$argon2id$hash-of-"+email); err != nil {
		t.Fatalf("CreateUser(%s) = %v", email, err)
	}
	return u
}

func randomHash(t *testing.T) string {
	t.Helper()
	b := make([]byte, 32)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// mustCreateSession creates a session of user expiring 24h after now and
// returns it with the hash of its first refresh token.
func mustCreateSession(t *testing.T, s *store.Store, userID string, now time.Time) (auth.Session, string) {
	t.Helper()
	session := auth.Session{
		ID:              uuid.NewString(),
		UserID:          userID,
		CreateTime:      now,
		LastRefreshTime: now,
		ExpireTime:      now.Add(24 * time.Hour),
	}
	hash := randomHash(t)
	if err := s.CreateSession(testContext(t), session, hash); err != nil {
		t.Fatalf("CreateSession() = %v", err)
	}
	return session, hash
}

func testCreateAndGetUser(t *testing.T, s *store.Store) {
	ctx := testContext(t)
	want := mustCreateUser(t, s, "ada@example.com")

	got, hash, err := s.GetUserByEmail(ctx, "ada@example.com")
	if err != nil {
		t.Fatalf("GetUserByEmail() = %v", err)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("GetUserByEmail() mismatch (-want +got):\n%s", diff)
	}
	if hash != "$argon2id$hash-of-ada@example.com" {
		t.Errorf("GetUserByEmail() hash = %q, want the stored hash", hash)
	}

	got, _, err = s.GetUserByID(ctx, want.ID)
	if err != nil {
		t.Fatalf("GetUserByID() = %v", err)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("GetUserByID() mismatch (-want +got):\n%s", diff)
	}

	if _, _, err := s.GetUserByEmail(ctx, "nobody@example.com"); !errors.Is(err, auth.ErrNotFound) {
		t.Errorf("GetUserByEmail(unknown) = %v, want ErrNotFound", err)
	}
	if _, _, err := s.GetUserByID(ctx, uuid.NewString()); !errors.Is(err, auth.ErrNotFound) {
		t.Errorf("GetUserByID(unknown) = %v, want ErrNotFound", err)
	}
}

func testDuplicateEmail(t *testing.T, s *store.Store) {
	mustCreateUser(t, s, "ada@example.com")

	u := auth.User{ID: uuid.NewString(), Email: "ada@example.com", CreateTime: base}
	if err := s.CreateUser(testContext(t), u, "x"); !errors.Is(err, auth.ErrAlreadyExists) {
		t.Errorf("CreateUser(duplicate email) = %v, want ErrAlreadyExists", err)
	}
}

// testUserTextRoundTrip stores values full of quotes, SQL, emoji and
// control characters and reads them back unchanged, which holds only when
// every query binds its parameters.
func testUserTextRoundTrip(t *testing.T, s *store.Store) {
	ctx := testContext(t)
	values := []string{
		`o'brien"; DROP TABLE users; --@example.com`,
		`x' OR '1'='1@example.com`,
		"emoji-😀-\u202e@example.com",
		"tab\tnewline\nnul-free\x01@example.com",
		`back\slash$1?@example.com`,
	}
	for _, email := range values {
		want := mustCreateUser(t, s, email)
		got, hash, err := s.GetUserByEmail(ctx, email)
		if err != nil {
			t.Fatalf("GetUserByEmail(%q) = %v", email, err)
		}
		if got.ID != want.ID || got.Email != email || hash != "$argon2id$hash-of-"+email {
			t.Errorf("GetUserByEmail(%q) = %+v with hash %q, want %+v", email, got, hash, want)
		}
	}
}

func testSessionLifecycle(t *testing.T, s *store.Store) {
	ctx := testContext(t)
	ada := mustCreateUser(t, s, "ada@example.com")
	bob := mustCreateUser(t, s, "bob@example.com")

	older, _ := mustCreateSession(t, s, ada.ID, base)
	newer, _ := mustCreateSession(t, s, ada.ID, base.Add(time.Minute))
	revoked, _ := mustCreateSession(t, s, ada.ID, base.Add(2*time.Minute))
	expired := auth.Session{ID: uuid.NewString(), UserID: ada.ID, CreateTime: base, LastRefreshTime: base, ExpireTime: base.Add(time.Second)}
	if err := s.CreateSession(ctx, expired, randomHash(t)); err != nil {
		t.Fatalf("CreateSession(expired) = %v", err)
	}
	mustCreateSession(t, s, bob.ID, base)

	now := base.Add(time.Hour)
	if err := s.RevokeSession(ctx, ada.ID, revoked.ID, now, "test"); err != nil {
		t.Fatalf("RevokeSession() = %v", err)
	}
	if err := s.RevokeSession(ctx, ada.ID, revoked.ID, now, "test"); !errors.Is(err, auth.ErrNotFound) {
		t.Errorf("RevokeSession(already revoked) = %v, want ErrNotFound", err)
	}
	if err := s.RevokeSession(ctx, bob.ID, older.ID, now, "test"); !errors.Is(err, auth.ErrNotFound) {
		t.Errorf("RevokeSession(another user's session) = %v, want ErrNotFound", err)
	}

	got, err := s.ListActiveSessions(ctx, ada.ID, now)
	if err != nil {
		t.Fatalf("ListActiveSessions() = %v", err)
	}
	if diff := cmp.Diff([]auth.Session{newer, older}, got); diff != "" {
		t.Errorf("ListActiveSessions() mismatch (-want +got):\n%s", diff)
	}

	gotRevoked, err := s.GetSession(ctx, revoked.ID)
	if err != nil {
		t.Fatalf("GetSession() = %v", err)
	}
	if !gotRevoked.RevokeTime.Equal(now) || gotRevoked.RevokeReason != "test" {
		t.Errorf("GetSession(revoked) = revoke time %v reason %q, want %v and %q", gotRevoked.RevokeTime, gotRevoked.RevokeReason, now, "test")
	}
	if _, err := s.GetSession(ctx, uuid.NewString()); !errors.Is(err, auth.ErrNotFound) {
		t.Errorf("GetSession(unknown) = %v, want ErrNotFound", err)
	}
}

func testRotateRefreshToken(t *testing.T, s *store.Store) {
	ctx := testContext(t)
	ada := mustCreateUser(t, s, "ada@example.com")
	session, first := mustCreateSession(t, s, ada.ID, base)

	now := base.Add(time.Hour)
	second := randomHash(t)
	got, err := s.RotateRefreshToken(ctx, auth.RefreshRotation{
		OldHash: first, NewHash: second, Now: now, NewExpireTime: now.Add(48 * time.Hour), ReuseGrace: time.Minute,
	})
	if err != nil {
		t.Fatalf("RotateRefreshToken() = %v", err)
	}
	want := session
	want.LastRefreshTime = now
	want.ExpireTime = now.Add(48 * time.Hour)
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("RotateRefreshToken() mismatch (-want +got):\n%s", diff)
	}

	// A retry of the first token within the grace window is rejected
	// without ending the session.
	_, err = s.RotateRefreshToken(ctx, auth.RefreshRotation{
		OldHash: first, NewHash: randomHash(t), Now: now.Add(30 * time.Second), NewExpireTime: now.Add(48 * time.Hour), ReuseGrace: time.Minute,
	})
	if !errors.Is(err, auth.ErrRefreshTokenRetried) {
		t.Errorf("RotateRefreshToken(retry within grace) = %v, want ErrRefreshTokenRetried", err)
	}

	// The new token still works.
	if _, err := s.RotateRefreshToken(ctx, auth.RefreshRotation{
		OldHash: second, NewHash: randomHash(t), Now: now.Add(time.Minute), NewExpireTime: now.Add(48 * time.Hour), ReuseGrace: time.Minute,
	}); err != nil {
		t.Errorf("RotateRefreshToken(new token) = %v, want nil", err)
	}
}

func testRotateReuseAfterGrace(t *testing.T, s *store.Store) {
	ctx := testContext(t)
	ada := mustCreateUser(t, s, "ada@example.com")
	session, first := mustCreateSession(t, s, ada.ID, base)

	second := randomHash(t)
	if _, err := s.RotateRefreshToken(ctx, auth.RefreshRotation{
		OldHash: first, NewHash: second, Now: base, NewExpireTime: base.Add(time.Hour), ReuseGrace: time.Minute,
	}); err != nil {
		t.Fatalf("RotateRefreshToken() = %v", err)
	}

	reuseTime := base.Add(2 * time.Minute)
	got, err := s.RotateRefreshToken(ctx, auth.RefreshRotation{
		OldHash: first, NewHash: randomHash(t), Now: reuseTime, NewExpireTime: base.Add(time.Hour), ReuseGrace: time.Minute,
	})
	if !errors.Is(err, auth.ErrRefreshTokenReused) {
		t.Fatalf("RotateRefreshToken(reuse after grace) = %v, want ErrRefreshTokenReused", err)
	}
	if got.ID != session.ID {
		t.Errorf("RotateRefreshToken(reuse) session = %q, want %q", got.ID, session.ID)
	}

	stored, err := s.GetSession(ctx, session.ID)
	if err != nil {
		t.Fatalf("GetSession() = %v", err)
	}
	if !stored.RevokeTime.Equal(reuseTime) {
		t.Errorf("session revoke time after reuse = %v, want %v", stored.RevokeTime, reuseTime)
	}

	// Every token of the family is dead now, including the newest one.
	_, err = s.RotateRefreshToken(ctx, auth.RefreshRotation{
		OldHash: second, NewHash: randomHash(t), Now: reuseTime, NewExpireTime: base.Add(time.Hour), ReuseGrace: time.Minute,
	})
	if !errors.Is(err, auth.ErrInvalidRefreshToken) {
		t.Errorf("RotateRefreshToken(newest token after reuse) = %v, want ErrInvalidRefreshToken", err)
	}
}

func testRotateRejectsBadTokens(t *testing.T, s *store.Store) {
	ctx := testContext(t)
	ada := mustCreateUser(t, s, "ada@example.com")
	_, expiring := mustCreateSession(t, s, ada.ID, base)
	revoked, revokedHash := mustCreateSession(t, s, ada.ID, base)
	if err := s.RevokeSession(ctx, ada.ID, revoked.ID, base, "test"); err != nil {
		t.Fatalf("RevokeSession() = %v", err)
	}

	tests := []struct {
		name string
		hash string
		now  time.Time
	}{
		{"unknown", randomHash(t), base},
		{"expired", expiring, base.Add(24 * time.Hour)},
		{"session revoked", revokedHash, base},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := s.RotateRefreshToken(ctx, auth.RefreshRotation{
				OldHash: tt.hash, NewHash: randomHash(t), Now: tt.now, NewExpireTime: tt.now.Add(time.Hour), ReuseGrace: time.Minute,
			})
			if !errors.Is(err, auth.ErrInvalidRefreshToken) {
				t.Errorf("RotateRefreshToken() = %v, want ErrInvalidRefreshToken", err)
			}
		})
	}
}

// testRotateRaceOneWinner exchanges one refresh token from two goroutines
// at once, many times, and checks that exactly one exchange wins each time.
func testRotateRaceOneWinner(t *testing.T, s *store.Store) {
	ctx := testContext(t)
	ada := mustCreateUser(t, s, "ada@example.com")

	const rounds = 50
	for round := range rounds {
		_, hash := mustCreateSession(t, s, ada.ID, base)

		var wg sync.WaitGroup
		errs := make([]error, 2)
		start := make(chan struct{})
		for i := range errs {
			wg.Go(func() {
				<-start
				_, errs[i] = s.RotateRefreshToken(ctx, auth.RefreshRotation{
					OldHash: hash, NewHash: randomHash(t), Now: base.Add(time.Second), NewExpireTime: base.Add(time.Hour), ReuseGrace: time.Minute,
				})
			})
		}
		close(start)
		wg.Wait()

		wins := 0
		for _, err := range errs {
			switch {
			case err == nil:
				wins++
			case !errors.Is(err, auth.ErrRefreshTokenRetried):
				t.Errorf("round %d: RotateRefreshToken() = %v, want nil or ErrRefreshTokenRetried", round, err)
			}
		}
		if wins != 1 {
			t.Fatalf("round %d: %d concurrent exchanges of one token succeeded, want exactly 1 (errors %v)", round, wins, errs)
		}
	}
}

func testRevokeByRefreshToken(t *testing.T, s *store.Store) {
	ctx := testContext(t)
	ada := mustCreateUser(t, s, "ada@example.com")
	session, hash := mustCreateSession(t, s, ada.ID, base)

	now := base.Add(time.Minute)
	got, err := s.RevokeSessionByRefreshToken(ctx, hash, now, "logout")
	if err != nil {
		t.Fatalf("RevokeSessionByRefreshToken() = %v", err)
	}
	if got.ID != session.ID || !got.RevokeTime.Equal(now) {
		t.Errorf("RevokeSessionByRefreshToken() = session %q revoked at %v, want %q at %v", got.ID, got.RevokeTime, session.ID, now)
	}

	// A second logout succeeds and keeps the first revocation time.
	got, err = s.RevokeSessionByRefreshToken(ctx, hash, now.Add(time.Hour), "logout")
	if err != nil {
		t.Fatalf("second RevokeSessionByRefreshToken() = %v", err)
	}
	if !got.RevokeTime.Equal(now) {
		t.Errorf("second RevokeSessionByRefreshToken() revoke time = %v, want %v", got.RevokeTime, now)
	}

	if _, err := s.RevokeSessionByRefreshToken(ctx, randomHash(t), now, "logout"); !errors.Is(err, auth.ErrNotFound) {
		t.Errorf("RevokeSessionByRefreshToken(unknown) = %v, want ErrNotFound", err)
	}
}

func testChangePasswordRevokesOthers(t *testing.T, s *store.Store) {
	ctx := testContext(t)
	ada := mustCreateUser(t, s, "ada@example.com")
	bob := mustCreateUser(t, s, "bob@example.com")
	keep, _ := mustCreateSession(t, s, ada.ID, base)
	mustCreateSession(t, s, ada.ID, base)
	mustCreateSession(t, s, ada.ID, base)
	bobSession, _ := mustCreateSession(t, s, bob.ID, base)

	revoked, err := s.ChangePassword(ctx, ada.ID, "new-hash", keep.ID, base.Add(time.Minute))
	if err != nil {
		t.Fatalf("ChangePassword() = %v", err)
	}
	if revoked != 2 {
		t.Errorf("ChangePassword() revoked %d sessions, want 2", revoked)
	}

	_, hash, err := s.GetUserByID(ctx, ada.ID)
	if err != nil {
		t.Fatalf("GetUserByID() = %v", err)
	}
	if hash != "new-hash" {
		t.Errorf("password hash after ChangePassword = %q, want %q", hash, "new-hash")
	}

	active, err := s.ListActiveSessions(ctx, ada.ID, base.Add(time.Hour))
	if err != nil {
		t.Fatalf("ListActiveSessions() = %v", err)
	}
	if len(active) != 1 || active[0].ID != keep.ID {
		t.Errorf("active sessions after ChangePassword = %v, want only %s", active, keep.ID)
	}
	if got, err := s.GetSession(ctx, bobSession.ID); err != nil || !got.RevokeTime.IsZero() {
		t.Errorf("another user's session after ChangePassword = %+v, %v, want it active", got, err)
	}

	if _, err := s.ChangePassword(ctx, uuid.NewString(), "x", keep.ID, base); !errors.Is(err, auth.ErrNotFound) {
		t.Errorf("ChangePassword(unknown user) = %v, want ErrNotFound", err)
	}
}

func testDeleteUserCascades(t *testing.T, s *store.Store) {
	ctx := testContext(t)
	ada := mustCreateUser(t, s, "ada@example.com")
	session, hash := mustCreateSession(t, s, ada.ID, base)

	if err := s.DeleteUser(ctx, ada.ID); err != nil {
		t.Fatalf("DeleteUser() = %v", err)
	}
	if _, err := s.GetSession(ctx, session.ID); !errors.Is(err, auth.ErrNotFound) {
		t.Errorf("GetSession() after DeleteUser = %v, want ErrNotFound", err)
	}
	_, err := s.RotateRefreshToken(ctx, auth.RefreshRotation{OldHash: hash, NewHash: randomHash(t), Now: base, NewExpireTime: base.Add(time.Hour)})
	if !errors.Is(err, auth.ErrInvalidRefreshToken) {
		t.Errorf("RotateRefreshToken() after DeleteUser = %v, want ErrInvalidRefreshToken", err)
	}
	if err := s.DeleteUser(ctx, ada.ID); !errors.Is(err, auth.ErrNotFound) {
		t.Errorf("second DeleteUser() = %v, want ErrNotFound", err)
	}
}

func testLoginThrottle(t *testing.T, s *store.Store) {
	ctx := testContext(t)
	policy := auth.FailurePolicy{
		ResetAfter: time.Hour,
		// Block for failures-2 seconds after the second failure.
		Delay: func(failures int64) time.Duration {
			return time.Duration(max(failures-2, 0)) * time.Second
		},
	}
	key := "account:ada@example.com"
	other := "address:192.0.2.1"

	wantUntil := []time.Time{{}, {}, base.Add(time.Second), base.Add(2 * time.Second)}
	for i, want := range wantUntil {
		got, err := s.RecordLoginFailure(ctx, key, base, policy)
		if err != nil {
			t.Fatalf("RecordLoginFailure() #%d = %v", i+1, err)
		}
		if !got.Equal(want) {
			t.Errorf("RecordLoginFailure() #%d = %v, want %v", i+1, got, want)
		}
	}

	until, err := s.LoginBlockedUntil(ctx, []string{key, other})
	if err != nil {
		t.Fatalf("LoginBlockedUntil() = %v", err)
	}
	if want := base.Add(2 * time.Second); !until.Equal(want) {
		t.Errorf("LoginBlockedUntil() = %v, want %v", until, want)
	}

	// After ResetAfter without failures the count starts again at one.
	got, err := s.RecordLoginFailure(ctx, key, base.Add(2*time.Hour), policy)
	if err != nil {
		t.Fatalf("RecordLoginFailure() after quiet period = %v", err)
	}
	if !got.IsZero() {
		t.Errorf("RecordLoginFailure() after quiet period = %v, want no block", got)
	}

	if err := s.ResetLoginFailures(ctx, key); err != nil {
		t.Fatalf("ResetLoginFailures() = %v", err)
	}
	until, err = s.LoginBlockedUntil(ctx, []string{key})
	if err != nil {
		t.Fatalf("LoginBlockedUntil() after reset = %v", err)
	}
	if !until.IsZero() {
		t.Errorf("LoginBlockedUntil() after reset = %v, want zero", until)
	}
}

func testDeleteStaleRecords(t *testing.T, s *store.Store) {
	ctx := testContext(t)
	ada := mustCreateUser(t, s, "ada@example.com")

	live, _ := mustCreateSession(t, s, ada.ID, base)
	revokedOld, _ := mustCreateSession(t, s, ada.ID, base)
	revokedRecent, _ := mustCreateSession(t, s, ada.ID, base)
	expiredOld := auth.Session{ID: uuid.NewString(), UserID: ada.ID, CreateTime: base, LastRefreshTime: base, ExpireTime: base.Add(time.Minute)}
	if err := s.CreateSession(ctx, expiredOld, randomHash(t)); err != nil {
		t.Fatalf("CreateSession() = %v", err)
	}
	if err := s.RevokeSession(ctx, ada.ID, revokedOld.ID, base.Add(time.Hour), "test"); err != nil {
		t.Fatalf("RevokeSession() = %v", err)
	}
	if err := s.RevokeSession(ctx, ada.ID, revokedRecent.ID, base.Add(5*time.Hour), "test"); err != nil {
		t.Fatalf("RevokeSession() = %v", err)
	}

	policy := auth.FailurePolicy{ResetAfter: time.Hour, Delay: func(int64) time.Duration { return 0 }}
	blocking := auth.FailurePolicy{ResetAfter: time.Hour, Delay: func(int64) time.Duration { return 24 * time.Hour }}
	for key, at := range map[string]time.Time{"account:old": base, "account:recent": base.Add(5 * time.Hour)} {
		if _, err := s.RecordLoginFailure(ctx, key, at, policy); err != nil {
			t.Fatalf("RecordLoginFailure(%s) = %v", key, err)
		}
	}
	if _, err := s.RecordLoginFailure(ctx, "account:blocked", base, blocking); err != nil {
		t.Fatalf("RecordLoginFailure(blocked) = %v", err)
	}

	now := base.Add(6 * time.Hour)
	cutoff := base.Add(2 * time.Hour)
	sessions, failures, err := s.DeleteStaleRecords(ctx, cutoff, cutoff, now)
	if err != nil {
		t.Fatalf("DeleteStaleRecords() = %v", err)
	}
	if sessions != 2 || failures != 1 {
		t.Errorf("DeleteStaleRecords() deleted %d sessions and %d counters, want 2 and 1", sessions, failures)
	}

	for _, id := range []string{live.ID, revokedRecent.ID} {
		if _, err := s.GetSession(ctx, id); err != nil {
			t.Errorf("GetSession(%s) after cleanup = %v, want it kept", id, err)
		}
	}
	for _, id := range []string{revokedOld.ID, expiredOld.ID} {
		if _, err := s.GetSession(ctx, id); !errors.Is(err, auth.ErrNotFound) {
			t.Errorf("GetSession(%s) after cleanup = %v, want ErrNotFound", id, err)
		}
	}
	until, err := s.LoginBlockedUntil(ctx, []string{"account:blocked"})
	if err != nil {
		t.Fatalf("LoginBlockedUntil() = %v", err)
	}
	if !until.Equal(base.Add(24 * time.Hour)) {
		t.Errorf("blocked counter after cleanup blocks until %v, want it kept until %v", until, base.Add(24*time.Hour))
	}
}
