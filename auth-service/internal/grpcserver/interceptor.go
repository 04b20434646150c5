package grpcserver

import (
	"context"
	"fmt"
	"net/netip"
	"runtime/debug"
	"sync"
	"sync/atomic"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
)

// maxRequestIDBytes bounds a client-supplied x-request-id; a longer or
// non-printable one is replaced by a generated ID.
const maxRequestIDBytes = 128

// callInfo is per-RPC data for the log line. The observer creates it in
// TagRPC, and the interceptors and handlers add to it.
type callInfo struct {
	method    string
	requestID string
	// peer is the client address that the login throttle uses (see
	// clientAddr), or the zero Addr when unknown.
	peer   netip.Addr
	userID atomic.Pointer[string]
	// intercepted is set when an interceptor ran, so the observer can tell
	// a call that grpc-go rejected before any interceptor.
	intercepted atomic.Bool

	mu sync.Mutex
	// cause is the error that a handler or the request codec returned,
	// before toStatus turned it into the status sent to the client. It is
	// guarded by mu.
	cause error
}

type callInfoKey struct{}

// callFromContext returns the callInfo of the RPC, or a new one when ctx
// has none (a server without the observer).
func callFromContext(ctx context.Context, method string) *callInfo {
	if call, ok := ctx.Value(callInfoKey{}).(*callInfo); ok {
		return call
	}
	return &callInfo{method: method, requestID: requestID(ctx)}
}

func (c *callInfo) setCause(err error) {
	c.mu.Lock()
	c.cause = err
	c.mu.Unlock()
}

func (c *callInfo) loadCause() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cause
}

// setUserID records the user an RPC acts for, for its log line.
func setUserID(ctx context.Context, userID string) {
	if info, ok := ctx.Value(callInfoKey{}).(*callInfo); ok {
		info.userID.Store(&userID)
	}
}

// metrics are the RPC counters and latency histogram on /metrics.
type metrics struct {
	handled  *prometheus.CounterVec
	latency  *prometheus.HistogramVec
	inFlight prometheus.Gauge
	// running counts the same RPCs as inFlight, for the shutdown log.
	running atomic.Int64
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		handled: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "grpc_server_handled_total",
			Help: "RPCs completed on the server, by method and status code.",
		}, []string{"grpc_method", "grpc_code"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "grpc_server_handling_seconds",
			Help:    "Time from the start of an RPC to its response, in seconds.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"grpc_method"}),
		inFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "grpc_server_in_flight_requests",
			Help: "Unary RPCs that have started and not yet returned.",
		}),
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.handled, m.latency, m.inFlight} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// unaryInterceptor sends the request ID back, rejects requests that the
// request codec found invalid, and turns panics and domain errors into gRPC
// statuses. The observer writes the log line and the metrics.
func unaryInterceptor(m *metrics) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (resp any, err error) {
		m.inFlight.Inc()
		m.running.Add(1)
		defer func() {
			m.inFlight.Dec()
			m.running.Add(-1)
		}()
		call := callFromContext(ctx, info.FullMethod)
		call.intercepted.Store(true)
		grpc.SetHeader(ctx, metadata.Pairs("x-request-id", call.requestID))

		func() {
			defer func() {
				if r := recover(); r != nil {
					resp, err = nil, fmt.Errorf("panic in RPC handler: %v\n%s", r, debug.Stack())
				}
			}()
			if err = takeFindings(req); err == nil {
				resp, err = handler(ctx, req)
			}
		}()

		if err != nil {
			call.setCause(err)
			err = toStatus(err).Err()
		}
		return resp, err
	}
}

// streamInterceptor turns the errors of streaming RPCs (health Watch and
// reflection) into gRPC statuses the same way.
func streamInterceptor() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		call := callFromContext(ss.Context(), info.FullMethod)
		call.intercepted.Store(true)

		err := handler(srv, ss)
		if err != nil {
			call.setCause(err)
			err = toStatus(err).Err()
		}
		return err
	}
}

func requestID(ctx context.Context) string {
	md, _ := metadata.FromIncomingContext(ctx)
	if values := md.Get("x-request-id"); len(values) == 1 && validRequestID(values[0]) {
		return values[0]
	}
	return uuid.NewString()
}

func validRequestID(id string) bool {
	if id == "" || len(id) > maxRequestIDBytes {
		return false
	}
	for i := 0; i < len(id); i++ {
		if id[i] < 0x21 || id[i] > 0x7e {
			return false
		}
	}
	return true
}
