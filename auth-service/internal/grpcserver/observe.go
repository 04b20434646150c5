package grpcserver

import (
	"context"
	"log/slog"
	"net/netip"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/stats"
	"google.golang.org/grpc/status"
)

// observer is a grpc-go stats handler that writes the one log line and the
// metrics of every RPC. Unlike an interceptor, it also receives calls that
// grpc-go rejects before any interceptor runs, such as a request over the
// transport cap MaxRecvMsgBytes.
type observer struct {
	logger *slog.Logger
	m      *metrics
	// trustedProxies are the peers whose x-forwarded-for header names the
	// client address in the log line, as for the login throttle.
	trustedProxies []netip.Prefix
}

// TagRPC gives each call the callInfo that the interceptors and handlers
// find in their context.
func (o *observer) TagRPC(ctx context.Context, info *stats.RPCTagInfo) context.Context {
	call := &callInfo{method: info.FullMethodName, requestID: requestID(ctx), peer: clientAddr(ctx, o.trustedProxies)}
	return context.WithValue(ctx, callInfoKey{}, call)
}

// HandleRPC logs and counts each call when it ends. grpc-go (v1.85.0)
// reports End only for registered methods, so the method label of the
// metrics has a bounded set of values.
func (o *observer) HandleRPC(ctx context.Context, s stats.RPCStats) {
	end, ok := s.(*stats.End)
	if !ok || s.IsClient() {
		return
	}
	call, ok := ctx.Value(callInfoKey{}).(*callInfo)
	if !ok {
		return
	}
	o.finish(ctx, call, end.EndTime.Sub(end.BeginTime), end.Error)
}

func (o *observer) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context { return ctx }

func (o *observer) HandleConn(context.Context, stats.ConnStats) {}

// finish writes the RPC's log line and metrics. err is the status error
// sent to the client, nil on success. The error that caused it, recorded
// by an interceptor, goes only to the log as "reason". Errors built in this
// service never contain a password or a token, so the reason is safe to
// log.
func (o *observer) finish(ctx context.Context, call *callInfo, elapsed time.Duration, err error) {
	st := status.Convert(err)
	code := st.Code()
	o.m.handled.WithLabelValues(call.method, code.String()).Inc()
	o.m.latency.WithLabelValues(call.method).Observe(elapsed.Seconds())

	attrs := []slog.Attr{
		slog.String("method", call.method),
		slog.String("code", code.String()),
		slog.Float64("duration_ms", float64(elapsed.Microseconds())/1000),
		slog.String("request_id", call.requestID),
	}
	if call.peer.IsValid() {
		attrs = append(attrs, slog.String("peer", call.peer.String()))
	}
	if userID := call.userID.Load(); userID != nil {
		attrs = append(attrs, slog.String("user_id", *userID))
	}
	if err == nil {
		o.logger.LogAttrs(ctx, slog.LevelInfo, "rpc", attrs...)
		return
	}

	attrs = append(attrs, slog.String("error", st.Message()))
	if cause := call.loadCause(); cause != nil && cause.Error() != st.Err().Error() {
		attrs = append(attrs, slog.String("reason", cause.Error()))
	}
	o.logger.LogAttrs(ctx, levelFor(code, call.intercepted.Load()), "rpc", attrs...)
}

// levelFor returns the log level of a failed RPC. Only server faults log
// at ERROR. A call that grpc-go failed before any interceptor ran failed on
// what the client sent (its size or its encoding), so it logs at WARN even
// with INTERNAL.
func levelFor(code codes.Code, intercepted bool) slog.Level {
	switch {
	case !intercepted:
		return slog.LevelWarn
	case code == codes.Internal || code == codes.Unknown || code == codes.DataLoss:
		return slog.LevelError
	}
	return slog.LevelInfo
}
