// Package grpcserver serves todo.v1.TodoService over gRPC: request
// validation, the mapping of store errors to status codes, bearer-token
// authentication, one log line and metrics per RPC, health and server
// reflection.
package grpcserver

import (
	"errors"
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"

	todov1 "example.com/todoapp/proto/gen/todo/v1"
)

// Options configures New. Every field is required.
type Options struct {
	Store    Store
	Verifier TokenVerifier
	Logger   *slog.Logger
	// Registerer receives the RPC counters and latency histogram.
	Registerer prometheus.Registerer
	// Health is served as grpc.health.v1.Health. Its statuses are set by
	// the caller.
	Health *health.Server
}

// Server is a gRPC server with the todo service registered.
type Server struct {
	*grpc.Server
	observer *observer
}

// InFlight returns the number of RPCs in progress.
func (s *Server) InFlight() int64 {
	return s.observer.active.Load()
}

// New returns a gRPC server with TodoService, health and server reflection
// (v1 and v1alpha) registered. Every call is logged and counted. Calls to
// TodoService need a valid bearer token, while health and reflection do
// not. Messages larger than MaxRecvMsgBytes and metadata larger than
// MaxHeaderListBytes are rejected with RESOURCE_EXHAUSTED before any
// handler runs. TodoService requests larger than MaxRequestBytes, or with
// invalid UTF-8 in a string field, are rejected with INVALID_ARGUMENT before
// the handler runs.
func New(opts Options) (*Server, error) {
	if opts.Store == nil || opts.Verifier == nil || opts.Logger == nil || opts.Registerer == nil || opts.Health == nil {
		return nil, errors.New("grpcserver: Store, Verifier, Logger, Registerer and Health are all required")
	}

	obs, err := newObserver(opts.Logger, opts.Registerer)
	if err != nil {
		return nil, err
	}
	auth := &authenticator{verifier: opts.Verifier}

	server := grpc.NewServer(
		grpc.MaxRecvMsgSize(MaxRecvMsgBytes),
		grpc.MaxHeaderListSize(MaxHeaderListBytes),
		grpc.ForceServerCodecV2(newRequestCodec()),
		grpc.StatsHandler(obs),
		grpc.ChainUnaryInterceptor(obs.unary, auth.unary, rejectMarkedRequests),
		grpc.ChainStreamInterceptor(obs.stream, auth.stream),
	)
	todov1.RegisterTodoServiceServer(server, &todoService{store: opts.Store})
	healthpb.RegisterHealthServer(server, opts.Health)
	reflection.Register(server)
	return &Server{Server: server, observer: obs}, nil
}
