package app

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"example.com/todoapp/auth-service/internal/auth"
	"example.com/todoapp/auth-service/internal/config"
	"example.com/todoapp/auth-service/internal/grpcserver"
	"example.com/todoapp/auth-service/internal/keys"
	"example.com/todoapp/auth-service/internal/password"
	"example.com/todoapp/auth-service/internal/store"
	"example.com/todoapp/proto/accesstoken"
)

// readinessInterval is how often the database is pinged for the
// "readiness" health status, and readinessTimeout bounds each ping.
const (
	readinessInterval = 5 * time.Second
	readinessTimeout  = 2 * time.Second
)

// cleanupInterval is how often stale sessions and login-failure counters
// are deleted, and sessionRetention how long a session is kept after it
// expired or was revoked (so IntrospectToken and the logs can still name
// it for a while).
const (
	cleanupInterval  = time.Hour
	sessionRetention = 24 * time.Hour
)

// Server is a running auth service. Start it with Start and stop it with
// Shutdown; a test can start it on port 0 and read the bound addresses.
type Server struct {
	cfg    config.Config
	logger *slog.Logger

	store          *store.Store
	keys           *keys.Manager
	transport      *grpcserver.Transport
	grpc           *grpc.Server
	health         *health.Server
	http           *http.Server
	grpcLn         net.Listener
	httpLn         net.Listener
	stopBackground context.CancelFunc
	background     sync.WaitGroup // readiness and cleanup loops
	failed         chan error
	serveGroup     sync.WaitGroup
	shutdown       sync.Once
}

// Start opens the store, applies migrations, loads the signing keys, binds
// both listeners and starts serving. It returns after the listeners are
// bound and the health status is SERVING. cfg must have passed Validate and
// ValidateKEKSource.
func Start(ctx context.Context, cfg config.Config, logger *slog.Logger) (_ *Server, err error) {
	// s is not the named result, because each `return nil, err` would set
	// that to nil before the deferred cleanup reads it.
	s := &Server{cfg: cfg, logger: logger, failed: make(chan error, 2)}
	defer func() {
		if err != nil {
			s.abortStart()
		}
	}()

	s.store, err = store.Open(ctx, store.Config{DatabaseURL: cfg.DatabaseURL, SQLitePath: cfg.SQLitePath()})
	if err != nil {
		return nil, err
	}
	applied, err := s.store.Migrate(ctx)
	if err != nil {
		return nil, err
	}
	logger.Info("database ready", "store", string(s.store.Dialect()), "migrations_applied", applied)

	// The KEK is loaded after the migrations, because -dev may generate
	// one only while the database holds no signing keys.
	kek, err := loadKEK(ctx, cfg, logger, s.store, true)
	if err != nil {
		return nil, err
	}
	previousKEK, err := cfg.LoadPreviousKEK()
	if err != nil {
		return nil, err
	}

	registry := prometheus.NewRegistry()
	registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	s.keys, err = newKeyManager(s.store, kek, previousKEK, cfg, logger, registry)
	if err != nil {
		return nil, err
	}
	if err := s.keys.Start(ctx); err != nil {
		return nil, fmt.Errorf("start signing-key manager: %w", explainDecrypt(err))
	}

	svc, err := newService(cfg, s.store, s.keys, logger)
	if err != nil {
		return nil, err
	}
	s.transport, err = grpcserver.New(grpcserver.Config{
		TrustedProxies: cfg.TrustedProxies,
		Logger:         logger,
		Registerer:     registry,
	}, svc)
	if err != nil {
		return nil, err
	}
	s.grpc, s.health = s.transport.Server, s.transport.Health

	s.grpcLn, err = net.Listen("tcp", cfg.GRPCAddr)
	if err != nil {
		return nil, fmt.Errorf("listen for gRPC on %s: %w", cfg.GRPCAddr, err)
	}
	s.httpLn, err = net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		return nil, fmt.Errorf("listen for HTTP on %s: %w", cfg.HTTPAddr, err)
	}
	s.http = &http.Server{
		Handler:           s.httpHandler(registry),
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      10 * time.Second,
		IdleTimeout:       60 * time.Second,
		MaxHeaderBytes:    16 << 10,
	}

	s.serveGroup.Add(2)
	go func() {
		defer s.serveGroup.Done()
		if err := s.grpc.Serve(s.grpcLn); err != nil {
			s.failed <- fmt.Errorf("serve gRPC: %w", err)
		}
	}()
	go func() {
		defer s.serveGroup.Done()
		if err := s.http.Serve(s.httpLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.failed <- fmt.Errorf("serve HTTP: %w", err)
		}
	}()

	s.health.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	s.checkReadiness(ctx)
	backgroundCtx, stop := context.WithCancel(context.WithoutCancel(ctx))
	s.stopBackground = stop
	s.background.Go(func() { s.every(backgroundCtx, readinessInterval, s.checkReadiness) })
	s.background.Go(func() { s.every(backgroundCtx, cleanupInterval, s.deleteStaleRecords) })

	logger.Info("auth-service started", "grpc_addr", s.GRPCAddr(), "http_addr", s.HTTPAddr(),
		"store", string(s.store.Dialect()), "issuer", cfg.Issuer)
	return s, nil
}

func newService(cfg config.Config, st *store.Store, km *keys.Manager, logger *slog.Logger) (*auth.Service, error) {
	verifier, err := accesstoken.NewVerifier(accesstoken.VerifierConfig{
		Issuer:    cfg.Issuer,
		Audiences: cfg.Audiences,
		ClockSkew: cfg.Keys.VerifierClockSkew,
		// The hard bound, not the configured TTL, so that tokens issued
		// before a lower TTL was configured stay valid until they expire.
		MaxLifetime: config.MaxAccessTokenTTL,
		Keys:        km,
	})
	if err != nil {
		return nil, fmt.Errorf("create access-token verifier: %w", err)
	}
	hasher, err := password.NewHasher(password.DefaultParams, cfg.MaxConcurrentHashes)
	if err != nil {
		return nil, err
	}
	return auth.NewService(auth.Config{
		Issuer:            cfg.Issuer,
		Audiences:         cfg.Audiences,
		AccessTokenTTL:    cfg.AccessTokenTTL,
		RefreshTokenTTL:   cfg.RefreshTokenTTL,
		RefreshReuseGrace: cfg.RefreshReuseGrace,
		Throttle:          cfg.Throttle,
	}, st, hasher, km, verifier, logger)
}

// GRPCAddr returns the bound gRPC address, with the real port when the
// configured one was 0.
func (s *Server) GRPCAddr() string { return s.grpcLn.Addr().String() }

// HTTPAddr returns the bound HTTP address.
func (s *Server) HTTPAddr() string { return s.httpLn.Addr().String() }

// Store returns the server's store, for tests that inspect or change rows.
func (s *Server) Store() *store.Store { return s.store }

// Failed returns a channel that receives an error when a listener stops
// serving on its own.
func (s *Server) Failed() <-chan error { return s.failed }

// Shutdown turns health NOT_SERVING, lets in-flight RPCs and HTTP requests
// finish for up to the configured shutdown timeout, then stops what is left
// and closes the key manager and the store. It is safe to call more than
// once.
func (s *Server) Shutdown() error {
	var err error
	s.shutdown.Do(func() { err = s.doShutdown() })
	return err
}

func (s *Server) doShutdown() error {
	start := time.Now()
	s.logger.Info("shutting down: health NOT_SERVING, draining in-flight RPCs",
		"in_flight_rpcs", s.transport.InFlight(), "timeout", s.cfg.ShutdownTimeout)
	s.health.Shutdown()
	s.stopBackground()
	s.background.Wait()

	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.ShutdownTimeout)
	defer cancel()

	graceful := make(chan struct{})
	go func() {
		s.grpc.GracefulStop()
		close(graceful)
	}()
	httpErr := s.http.Shutdown(ctx)

	grpcDrained := true
	select {
	case <-graceful:
	case <-ctx.Done():
		grpcDrained = false
		s.grpc.Stop()
		<-graceful
	}
	s.serveGroup.Wait()

	s.logger.Info("auth-service stopped",
		"grpc_drained", grpcDrained, "rpcs_cut_off", s.transport.InFlight(), "http_drained", httpErr == nil,
		"duration_ms", time.Since(start).Milliseconds())
	return s.closeResources()
}

// abortStart releases what a failed Start had opened. Serving starts last,
// so no listener is being served yet.
func (s *Server) abortStart() {
	for _, ln := range []net.Listener{s.grpcLn, s.httpLn} {
		if ln != nil {
			ln.Close()
		}
	}
	if err := s.closeResources(); err != nil {
		s.logger.Error("release resources after failed start", "err", err)
	}
}

func (s *Server) closeResources() error {
	if s.keys != nil {
		s.keys.Close()
	}
	if s.store != nil {
		if err := s.store.Close(); err != nil {
			return fmt.Errorf("close store: %w", err)
		}
	}
	return nil
}

// every runs fn each interval until ctx ends.
func (s *Server) every(ctx context.Context, interval time.Duration, fn func(context.Context)) {
	ticker := time.NewTicker(interval)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
			fn(ctx)
		}
	}
}

// deleteStaleRecords deletes sessions that ended more than sessionRetention
// ago and login-failure counters that have reset. Every replica runs it;
// the deletes are idempotent.
func (s *Server) deleteStaleRecords(ctx context.Context) {
	now := time.Now()
	sessions, failures, err := s.store.DeleteStaleRecords(ctx, now.Add(-sessionRetention), now.Add(-s.cfg.Throttle.ResetAfter), now)
	if err != nil {
		s.logger.Warn("delete stale sessions and login failures", "err", err)
		return
	}
	if sessions > 0 || failures > 0 {
		s.logger.Info("deleted stale records", "sessions", sessions, "login_failure_counters", failures)
	}
}

// checkReadiness sets "readiness" from a database ping and logs each change.
func (s *Server) checkReadiness(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, readinessTimeout)
	defer cancel()

	want := healthpb.HealthCheckResponse_SERVING
	err := s.store.Ping(ctx)
	if err != nil {
		want = healthpb.HealthCheckResponse_NOT_SERVING
	}

	resp, _ := s.health.Check(ctx, &healthpb.HealthCheckRequest{Service: grpcserver.ReadinessService})
	if resp != nil && resp.Status == want {
		return
	}
	if err != nil {
		s.logger.Warn("database ping failed, not ready", "err", err)
	} else {
		s.logger.Info("database ping succeeded, ready")
	}
	s.health.SetServingStatus(grpcserver.ReadinessService, want)
}

func (s *Server) httpHandler(registry *prometheus.Registry) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /.well-known/jwks.json", s.keys.JWKSHandler())
	mux.HandleFunc("GET /.well-known/openid-configuration", s.serveDiscovery)
	mux.Handle("GET /metrics", promhttp.HandlerFor(registry, promhttp.HandlerOpts{Registry: registry}))
	return mux
}

// serveDiscovery serves the issuer and JWKS location in the shape of OpenID
// Connect Discovery, which gateways such as Envoy's jwt_authn read.
func (s *Server) serveDiscovery(w http.ResponseWriter, _ *http.Request) {
	body, err := json.Marshal(map[string]any{
		"issuer":   s.cfg.Issuer,
		"jwks_uri": s.cfg.Issuer + "/.well-known/jwks.json",
	})
	if err != nil {
		s.logger.Error("encode discovery document", "err", err)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "public, max-age=3600")
	w.Write(body)
}
