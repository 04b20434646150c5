package grpcserver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/stats"
	"google.golang.org/grpc/status"
)

// requestIDHeader is the metadata key of the request id. A valid id sent
// by the client is kept, and the server sends the id back in the response
// header.
const requestIDHeader = "x-request-id"

const maxRequestIDBytes = 128

// callInfo gathers what the log line of one RPC reports beyond its status.
type callInfo struct {
	method    string
	requestID string
	mu        sync.Mutex
	userID    string // guarded by mu
	// cause is the detail of an error that the client sees only as a
	// generic message. It is guarded by mu.
	cause error
}

type callInfoKey struct{}

// recordCause keeps err for the RPC's log line. Handlers call it for
// errors whose detail the client does not see.
func recordCause(ctx context.Context, err error) {
	if ci, ok := ctx.Value(callInfoKey{}).(*callInfo); ok {
		ci.mu.Lock()
		ci.cause = err
		ci.mu.Unlock()
	}
}

func recordUserID(ctx context.Context, id string) {
	if ci, ok := ctx.Value(callInfoKey{}).(*callInfo); ok {
		ci.mu.Lock()
		ci.userID = id
		ci.mu.Unlock()
	}
}

// observer writes one log line and the metrics of every RPC. It is a
// grpc-go stats handler, so it also records calls that fail before any
// interceptor runs, such as requests too large or impossible to decode.
// Its interceptors send the request id back and turn a handler panic into
// INTERNAL.
type observer struct {
	logger   *slog.Logger
	handled  *prometheus.CounterVec
	duration *prometheus.HistogramVec
	inFlight prometheus.Gauge
	// active counts the RPCs in progress, for the shutdown log.
	active atomic.Int64
}

func newObserver(logger *slog.Logger, reg prometheus.Registerer) (*observer, error) {
	o := &observer{
		logger: logger,
		handled: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "grpc_server_handled_total",
			Help: "RPCs completed by the server, by full method name and status code.",
		}, []string{"grpc_method", "grpc_code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "grpc_server_handling_seconds",
			Help:    "Time from the start of an RPC to its status, in seconds, by full method name.",
			Buckets: []float64{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10},
		}, []string{"grpc_method"}),
		inFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "grpc_server_in_flight_rpcs",
			Help: "RPCs in progress, streams included.",
		}),
	}
	for _, c := range []prometheus.Collector{o.handled, o.duration, o.inFlight} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register gRPC metrics: %w", err)
		}
	}
	return o, nil
}

// TagRPC gives every call a callInfo, which the interceptors and handlers
// find in their context.
func (o *observer) TagRPC(ctx context.Context, info *stats.RPCTagInfo) context.Context {
	ci := &callInfo{method: info.FullMethodName, requestID: requestID(ctx)}
	return context.WithValue(ctx, callInfoKey{}, ci)
}

// HandleRPC counts and logs each call. grpc-go (v1.85.0) sends Begin and
// End only for registered methods, so the method label stays bounded.
func (o *observer) HandleRPC(ctx context.Context, s stats.RPCStats) {
	if s.IsClient() {
		return
	}
	switch s := s.(type) {
	case *stats.Begin:
		o.active.Add(1)
		o.inFlight.Inc()
	case *stats.End:
		o.active.Add(-1)
		o.inFlight.Dec()
		if ci, ok := ctx.Value(callInfoKey{}).(*callInfo); ok {
			o.end(ctx, ci, s.EndTime.Sub(s.BeginTime), s.Error)
		}
	}
}

func (o *observer) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context {
	return ctx
}

func (o *observer) HandleConn(context.Context, stats.ConnStats) {}

// end records the outcome of one RPC.
func (o *observer) end(ctx context.Context, ci *callInfo, elapsed time.Duration, err error) {
	code := status.Code(err)
	o.handled.WithLabelValues(ci.method, code.String()).Inc()
	o.duration.WithLabelValues(ci.method).Observe(elapsed.Seconds())

	ci.mu.Lock()
	userID, cause := ci.userID, ci.cause
	ci.mu.Unlock()
	// A call that failed before any interceptor ran has no recorded
	// cause. Its status message comes from grpc-go and names what failed,
	// such as a message over the size limit.
	if cause == nil && (code == codes.Internal || code == codes.ResourceExhausted) {
		cause = errors.New(status.Convert(err).Message())
	}

	attrs := []slog.Attr{
		slog.String("method", ci.method),
		slog.String("code", code.String()),
		slog.Float64("duration_ms", float64(elapsed.Microseconds())/1000),
		slog.String("request_id", ci.requestID),
	}
	if userID != "" {
		attrs = append(attrs, slog.String("user_id", userID))
	}
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		attrs = append(attrs, slog.String("peer", p.Addr.String()))
	}
	if cause != nil {
		attrs = append(attrs, slog.String("err", cause.Error()))
	}

	level := slog.LevelInfo
	switch {
	case recvFailed(err):
		level = slog.LevelWarn
	case code == codes.Internal, code == codes.Unknown, code == codes.DataLoss:
		level = slog.LevelError
	case code == codes.Unavailable:
		level = slog.LevelWarn
	}
	o.logger.LogAttrs(ctx, level, "rpc", attrs...)
}

// recvFailed reports whether grpc-go failed the call because it could not
// decompress or decode a request message. The client caused that, yet
// grpc-go returns INTERNAL. requestCodec turns decoding errors of todo.v1
// requests into INVALID_ARGUMENT, so this covers health and reflection.
//
// NOTE: grpc-go (v1.85.0, rpc_util.go) marks these errors only by their
// message, so a grpc-go upgrade that rewords it logs them at ERROR again.
func recvFailed(err error) bool {
	if status.Code(err) != codes.Internal {
		return false
	}
	msg := status.Convert(err).Message()
	return strings.HasPrefix(msg, "grpc: failed to unmarshal the received message") ||
		strings.HasPrefix(msg, "grpc: failed to decompress the received message")
}

// sendRequestID sends the call's request id in the response header.
func sendRequestID(ctx context.Context) {
	if ci, ok := ctx.Value(callInfoKey{}).(*callInfo); ok {
		// SetHeader fails only when headers were already sent, which
		// cannot happen before the handler runs.
		_ = grpc.SetHeader(ctx, metadata.Pairs(requestIDHeader, ci.requestID))
	}
}

func (o *observer) unary(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (resp any, err error) {
	sendRequestID(ctx)
	defer func() {
		if r := recover(); r != nil {
			recordCause(ctx, fmt.Errorf("panic: %v\n%s", r, debug.Stack()))
			resp, err = nil, status.Error(codes.Internal, msgInternal)
		}
	}()
	return handler(ctx, req)
}

func (o *observer) stream(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) (err error) {
	sendRequestID(ss.Context())
	defer func() {
		if r := recover(); r != nil {
			recordCause(ss.Context(), fmt.Errorf("panic: %v\n%s", r, debug.Stack()))
			err = status.Error(codes.Internal, msgInternal)
		}
	}()
	return handler(srv, ss)
}

// requestID returns the client's x-request-id when it is one value of
// 1 to 128 characters from [A-Za-z0-9._:-], and a new UUID otherwise, so
// that no client text of another shape reaches the logs.
func requestID(ctx context.Context) string {
	md, _ := metadata.FromIncomingContext(ctx)
	values := md.Get(requestIDHeader)
	if len(values) == 1 && isRequestID(values[0]) {
		return values[0]
	}
	return uuid.NewString()
}

func isRequestID(s string) bool {
	if s == "" || len(s) > maxRequestIDBytes {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
			c == '.' || c == '_' || c == ':' || c == '-'
		if !ok {
			return false
		}
	}
	return true
}
