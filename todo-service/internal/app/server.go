package app

import (
	"context"
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

	"example.com/todoapp/todo-service/internal/config"
	"example.com/todoapp/todo-service/internal/grpcserver"
	"example.com/todoapp/todo-service/internal/jwks"
	"example.com/todoapp/todo-service/internal/store"
)

// ReadinessService is the health service name that is SERVING only while
// the database responds and the token check can work: in offline mode a
// usable key set is loaded, and in introspect mode the auth service
// reports itself ready. The overall service "" is SERVING from start
// until shutdown.
const ReadinessService = "readiness"

const (
	// readinessInterval is the period of the readiness check.
	readinessInterval = time.Second
	// pingTimeout bounds one database ping of the readiness check.
	pingTimeout = 2 * time.Second
)

// Server is the todo service with its listeners open. A test can create it
// with ports 0 and read the bound addresses before calling Run.
type Server struct {
	cfg      config.Config
	logger   *slog.Logger
	store    *store.Store
	keys     *jwks.Cache      // offline mode only, nil in introspect mode
	authConn *grpc.ClientConn // introspect mode only, nil in offline mode
	health   *health.Server
	grpc     *grpcserver.Server
	http     *http.Server
	grpcLis  net.Listener
	httpLis  net.Listener
	registry *prometheus.Registry
}

// New binds both listeners, then opens the store, applies the migrations,
// and creates the token verifier of the configured mode and the servers.
// Binding first makes a port clash fail before any database file is
// created or migrated. Nothing is served until Run. On error, everything
// opened so far is closed.
func New(ctx context.Context, cfg config.Config, logger *slog.Logger) (_ *Server, err error) {
	s := &Server{cfg: cfg, logger: logger, health: health.NewServer()}
	defer func() {
		if err != nil {
			s.closeAll()
		}
	}()
	logger.LogAttrs(ctx, slog.LevelInfo, "starting todo-service", cfg.LogAttrs()...)

	var lc net.ListenConfig
	s.grpcLis, err = lc.Listen(ctx, "tcp", cfg.GRPCAddr)
	if err != nil {
		return nil, fmt.Errorf("listen for gRPC on %s: %w", cfg.GRPCAddr, err)
	}
	s.httpLis, err = lc.Listen(ctx, "tcp", cfg.HTTPAddr)
	if err != nil {
		return nil, fmt.Errorf("listen for HTTP on %s: %w", cfg.HTTPAddr, err)
	}

	s.store, err = store.Open(ctx, store.Options{DatabaseURL: cfg.DatabaseURL, DataDir: cfg.DataDir})
	if err != nil {
		return nil, err
	}
	applied, err := s.store.Migrate(ctx)
	if err != nil {
		return nil, err
	}
	logger.Info("store opened", "store", s.store.Dialect(), "database", s.store.Target(), "migrations_applied", applied)

	s.registry = prometheus.NewRegistry()
	s.registry.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)

	verifier, err := s.newTokenVerifier(ctx)
	if err != nil {
		return nil, err
	}

	s.grpc, err = grpcserver.New(grpcserver.Options{
		Store:      s.store,
		Verifier:   verifier,
		Logger:     logger,
		Registerer: s.registry,
		Health:     s.health,
	})
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.registry, promhttp.HandlerOpts{Registry: s.registry}))
	s.http = &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}

	s.health.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	s.health.SetServingStatus(ReadinessService, healthpb.HealthCheckResponse_NOT_SERVING)
	return s, nil
}

// GRPCAddr returns the bound address of the gRPC listener.
func (s *Server) GRPCAddr() string {
	return s.grpcLis.Addr().String()
}

// HTTPAddr returns the bound address of the HTTP listener.
func (s *Server) HTTPAddr() string {
	return s.httpLis.Addr().String()
}

// Run serves until ctx is done or a listener fails, then shuts down: health
// turns NOT_SERVING, in-flight RPCs get the shutdown timeout to finish
// before they are cancelled, and the key cache or the auth-service
// connection and the store close. It returns nil after a shutdown caused
// by ctx.
func (s *Server) Run(ctx context.Context) error {
	// The cache outlives ctx so that RPCs still draining can verify
	// tokens. shutdown closes it.
	if s.keys != nil {
		s.keys.Start(context.WithoutCancel(ctx))
	}

	readinessCtx, stopReadiness := context.WithCancel(context.WithoutCancel(ctx))
	var readinessDone sync.WaitGroup
	readinessDone.Go(func() { s.watchReadiness(readinessCtx) })

	serveErr := make(chan error, 2)
	go func() {
		if err := s.grpc.Serve(s.grpcLis); err != nil {
			serveErr <- fmt.Errorf("serve gRPC: %w", err)
		}
	}()
	go func() {
		if err := s.http.Serve(s.httpLis); err != nil && !errors.Is(err, http.ErrServerClosed) {
			serveErr <- fmt.Errorf("serve HTTP: %w", err)
		}
	}()
	s.health.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	s.logger.Info("serving", "grpc_addr", s.GRPCAddr(), "http_addr", s.HTTPAddr())

	var err error
	select {
	case <-ctx.Done():
		s.logger.Info("shutdown requested", "cause", context.Cause(ctx))
	case err = <-serveErr:
		s.logger.Error("listener failed, shutting down", "err", err)
	}

	stopReadiness()
	readinessDone.Wait()
	s.shutdown()
	return err
}

// shutdown stops the servers within the shutdown timeout and closes the
// key cache or the auth-service connection, and the store.
func (s *Server) shutdown() {
	// Shutdown turns every health service NOT_SERVING and keeps it so,
	// so load balancers stop sending new calls.
	s.health.Shutdown()
	if s.cfg.ShutdownDelay > 0 {
		// Health checks that poll (Kubernetes readiness, load balancers)
		// only learn of the shutdown if the server still responds to them for
		// a while after NOT_SERVING.
		s.logger.Info("health is NOT_SERVING; still serving until the shutdown delay passes", "shutdown_delay", s.cfg.ShutdownDelay)
		time.Sleep(s.cfg.ShutdownDelay)
	}
	deadline := time.Now().Add(s.cfg.ShutdownTimeout)
	s.logger.Info("draining", "in_flight_rpcs", s.grpc.InFlight(), "timeout", s.cfg.ShutdownTimeout)

	drained := make(chan struct{})
	go func() {
		s.grpc.GracefulStop()
		close(drained)
	}()
	timer := time.NewTimer(time.Until(deadline))
	defer timer.Stop()
	select {
	case <-drained:
		s.logger.Info("gRPC server drained")
	case <-timer.C:
		s.logger.Warn("shutdown timeout passed, cancelling the remaining RPCs", "in_flight_rpcs", s.grpc.InFlight())
		s.grpc.Stop()
		<-drained
	}

	httpCtx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	if err := s.http.Shutdown(httpCtx); err != nil {
		s.logger.Warn("HTTP server did not drain in time, closing it", "err", err)
		s.http.Close()
	}

	s.closeAll()
	s.logger.Info("stopped")
}

// closeAll closes what New opened. It runs after the servers stopped, or
// when New fails.
func (s *Server) closeAll() {
	if s.keys != nil {
		s.keys.Close()
	}
	s.closeAuthConn()
	if s.store != nil {
		if err := s.store.Close(); err != nil {
			s.logger.Warn("closing the store failed", "err", err)
		}
	}
	for _, lis := range []net.Listener{s.grpcLis, s.httpLis} {
		if lis != nil {
			// Serve closes its listener, so a second close may fail.
			lis.Close()
		}
	}
}

// watchReadiness sets the readiness health status every readinessInterval
// until ctx is done, and logs each change.
func (s *Server) watchReadiness(ctx context.Context) {
	ticker := time.NewTicker(readinessInterval)
	defer ticker.Stop()

	// Right after start the first JWKS fetch or the first connection to
	// the auth service is usually still in progress, so the first "not
	// ready" is logged at info level, and later ones at warn level.
	ready, level := false, slog.LevelInfo
	for first := true; ; first = false {
		now, reason := s.checkReadiness(ctx)
		switch {
		case now && !ready:
			s.health.SetServingStatus(ReadinessService, healthpb.HealthCheckResponse_SERVING)
			s.logger.Info("ready")
		case !now && (ready || first):
			s.health.SetServingStatus(ReadinessService, healthpb.HealthCheckResponse_NOT_SERVING)
			s.logger.Log(ctx, level, "not ready", "reason", reason)
		}
		ready, level = now, slog.LevelWarn

		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
	}
}

// checkReadiness reports whether the database responds and the token
// check can work, and why not. In offline mode that needs a usable key
// set, and in introspect mode an auth service that reports itself ready.
func (s *Server) checkReadiness(ctx context.Context) (bool, string) {
	pingCtx, cancel := context.WithTimeout(ctx, pingTimeout)
	defer cancel()
	if err := s.store.Ping(pingCtx); err != nil {
		return false, "database ping failed: " + err.Error()
	}
	if s.keys != nil && !s.keys.Ready() {
		return false, "no usable JWKS key set loaded"
	}
	if s.authConn != nil {
		if reason := s.checkAuthService(ctx); reason != "" {
			return false, reason
		}
	}
	return true, ""
}
