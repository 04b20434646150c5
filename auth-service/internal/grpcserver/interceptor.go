package grpcserver

import (
	"context"
	"log/slog"
	"runtime/debug"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// maxRequestIDBytes bounds a client-supplied x-request-id; a longer or
// non-printable one is replaced by a generated ID.
const maxRequestIDBytes = 128

// callInfo is per-RPC data that handlers add to for the log line.
type callInfo struct {
	requestID string
	userID    atomic.Pointer[string]
}

type callInfoKey struct{}

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

// unaryInterceptor gives each RPC a request ID, turns panics and domain
// errors into gRPC statuses, and logs and counts one line per RPC.
func unaryInterceptor(logger *slog.Logger, m *metrics) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (resp any, err error) {
		start := time.Now()
		m.inFlight.Inc()
		m.running.Add(1)
		defer func() {
			m.inFlight.Dec()
			m.running.Add(-1)
		}()
		call := &callInfo{requestID: requestID(ctx)}
		ctx = context.WithValue(ctx, callInfoKey{}, call)
		grpc.SetHeader(ctx, metadata.Pairs("x-request-id", call.requestID))

		func() {
			defer func() {
				if r := recover(); r != nil {
					logger.ErrorContext(ctx, "panic in RPC handler", "method", info.FullMethod,
						"request_id", call.requestID, "panic", r, "stack", string(debug.Stack()))
					resp, err = nil, status.Error(codes.Internal, "internal error")
				}
			}()
			if err = takeFindings(req); err == nil {
				resp, err = handler(ctx, req)
			}
		}()

		cause := err
		var st *status.Status
		if err != nil {
			st = toStatus(err)
			err = st.Err()
		}
		finish(ctx, logger, m, info.FullMethod, call, start, st, cause)
		return resp, err
	}
}

// streamInterceptor logs and counts streaming RPCs (health Watch and
// reflection) the same way.
func streamInterceptor(logger *slog.Logger, m *metrics) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		start := time.Now()
		call := &callInfo{requestID: requestID(ss.Context())}
		err := handler(srv, ss)

		cause := err
		var st *status.Status
		if err != nil {
			st = toStatus(err)
			err = st.Err()
		}
		finish(ss.Context(), logger, m, info.FullMethod, call, start, st, cause)
		return err
	}
}

// finish writes the RPC's log line and metrics. st is nil on success. The
// handler's original error (cause) goes only to the log as "reason", never
// to the client. Errors built in this service never contain a password or
// a token, so the reason is safe to log.
func finish(ctx context.Context, logger *slog.Logger, m *metrics, method string, call *callInfo, start time.Time, st *status.Status, cause error) {
	elapsed := time.Since(start)
	code := codes.OK
	if st != nil {
		code = st.Code()
	}
	m.handled.WithLabelValues(method, code.String()).Inc()
	m.latency.WithLabelValues(method).Observe(elapsed.Seconds())

	attrs := []slog.Attr{
		slog.String("method", method),
		slog.String("code", code.String()),
		slog.Float64("duration_ms", float64(elapsed.Microseconds())/1000),
		slog.String("request_id", call.requestID),
	}
	if userID := call.userID.Load(); userID != nil {
		attrs = append(attrs, slog.String("user_id", *userID))
	}
	level := slog.LevelInfo
	if st != nil {
		attrs = append(attrs, slog.String("error", st.Message()))
		if cause != nil && cause.Error() != st.Err().Error() {
			attrs = append(attrs, slog.String("reason", cause.Error()))
		}
		if code == codes.Internal || code == codes.Unknown {
			level = slog.LevelError
		}
	}
	logger.LogAttrs(ctx, level, "rpc", attrs...)
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
