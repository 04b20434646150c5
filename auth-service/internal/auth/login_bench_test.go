package auth_test

import (
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"testing"
	"time"

	"example.com/todoapp/auth-service/internal/auth"
	"example.com/todoapp/auth-service/internal/password"
	"example.com/todoapp/auth-service/internal/store/storetest"
)

// BenchmarkLoginFailure measures a failed Login for an account that exists
// (wrong password) and for an email that has no account, through the real
// service and SQLite store at the production argon2id parameters. It
// reports both mean times and their ratio, which should be close to 1
// because both paths run one full argon2id comparison. It asserts nothing
// about time.
//
//	go test -run '^$' -bench BenchmarkLoginFailure ./internal/auth
func BenchmarkLoginFailure(b *testing.B) {
	st := storetest.NewSQLite(b)
	hasher, err := password.NewHasher(password.DefaultParams, 4)
	if err != nil {
		b.Fatalf("NewHasher() = %v", err)
	}
	throttle := auth.DefaultThrottleConfig()
	// Never block, so every iteration does the same work.
	throttle.AccountFreeFailures = 1 << 40
	throttle.AddressFreeFailures = 1 << 40
	svc, err := auth.NewService(auth.Config{
		Issuer:            "https://auth.example.com",
		Audiences:         []string{"todo-service"},
		AccessTokenTTL:    15 * time.Minute,
		RefreshTokenTTL:   time.Hour,
		RefreshReuseGrace: time.Second,
		Throttle:          throttle,
	}, st, hasher, nil, nil, slog.New(slog.DiscardHandler))
	if err != nil {
		b.Fatalf("NewService() = %v", err)
	}

	ctx := context.Background()
	hash, err := hasher.Hash(ctx, []byte("the real password"))
	if err != nil {
		b.Fatalf("Hash() = %v", err)
	}
	if err := st.CreateUser(ctx, auth.User{ID: "00000000-0000-4000-8000-000000000001", Email: "ada@example.com", CreateTime: time.Now()}, hash); err != nil {
		b.Fatalf("CreateUser() = %v", err)
	}
	client := netip.MustParseAddr("192.0.2.1")

	// The two cases alternate within one loop, so that load changes on the
	// machine affect both alike, and each is timed separately.
	var unknown, wrong time.Duration
	login := func(email string) time.Duration {
		start := time.Now()
		_, _, err := svc.Login(ctx, email, "a wrong password", client)
		elapsed := time.Since(start)
		if !errors.Is(err, auth.ErrInvalidCredentials) {
			b.Fatalf("Login(%s) = %v, want ErrInvalidCredentials", email, err)
		}
		return elapsed
	}
	for b.Loop() {
		unknown += login("nobody@example.com")
		wrong += login("ada@example.com")
	}

	n := float64(b.N)
	b.ReportMetric(float64(unknown.Nanoseconds())/n, "unknown_email_ns/op")
	b.ReportMetric(float64(wrong.Nanoseconds())/n, "wrong_password_ns/op")
	b.ReportMetric(float64(unknown)/float64(wrong), "unknown/wrong")
}
