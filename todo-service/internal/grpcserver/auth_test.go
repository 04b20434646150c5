package grpcserver_test

import (
	"bufio"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	reflectionv1 "google.golang.org/grpc/reflection/grpc_reflection_v1"
	reflectionv1alpha "google.golang.org/grpc/reflection/grpc_reflection_v1alpha"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	todov1 "example.com/todoapp/proto/gen/todo/v1"
	"example.com/todoapp/todo-service/internal/grpcserver"
)

// whoamiService is a server-streaming test service that sends back the
// user id its handler reads from its context, to test the stream
// interceptors.
var whoamiService = grpc.ServiceDesc{
	ServiceName: "grpcserver.test.Whoami",
	HandlerType: (*any)(nil),
	Streams: []grpc.StreamDesc{{
		StreamName:    "Watch",
		ServerStreams: true,
		Handler: func(_ any, stream grpc.ServerStream) error {
			var req emptypb.Empty
			if err := stream.RecvMsg(&req); err != nil {
				return err
			}
			return stream.SendMsg(wrapperspb.String(grpcserver.UserIDForTest(stream.Context())))
		},
	}},
}

func registerWhoami(s *grpc.Server) {
	s.RegisterService(&whoamiService, nil)
}

// callWhoami opens the test stream and returns the user id the handler saw.
func callWhoami(ctx context.Context, conn *grpc.ClientConn) (string, error) {
	stream, err := conn.NewStream(ctx, &whoamiService.Streams[0], "/grpcserver.test.Whoami/Watch")
	if err != nil {
		return "", err
	}
	if err := stream.SendMsg(&emptypb.Empty{}); err != nil {
		return "", err
	}
	if err := stream.CloseSend(); err != nil {
		return "", err
	}
	var resp wrapperspb.StringValue
	if err := stream.RecvMsg(&resp); err != nil {
		return "", err
	}
	return resp.GetValue(), nil
}

func TestTokenRejected(t *testing.T) {
	ts := startServer(t)
	valid := sign(t, ts.claims(alice))

	expired := ts.claims(alice)
	expired.IssuedAt = testStart.Add(-time.Hour)
	expired.NotBefore = expired.IssuedAt
	expired.Expiry = testStart.Add(-time.Minute)

	otherAudience := ts.claims(alice)
	otherAudience.Audience = []string{"auth-service"}

	otherIssuer := ts.claims(alice)
	otherIssuer.Issuer = testIssuer + "/"

	parts := strings.Split(valid, ".")
	tampered := parts[0] + "." + parts[1] + "." + strings.Repeat("A", len(parts[2]))

	tests := []struct {
		name       string
		md         metadata.MD
		wantReason string
	}{
		{"no authorization", metadata.MD{}, "no authorization value"},
		{"two authorization values", metadata.Pairs("authorization", "Bearer "+valid, "authorization", "Bearer "+valid), "more than one"},
		{"basic scheme", metadata.Pairs("authorization", "Basic YWxpY2U6c2VjcmV0"), "scheme is not Bearer"},
		{"token without scheme", metadata.Pairs("authorization", valid), "scheme is not Bearer"},
		{"two spaces", metadata.Pairs("authorization", "Bearer  "+valid), "white space"},
		{"separator not a space", metadata.Pairs("authorization", "Bearer:"+valid), "scheme is not Bearer"},
		{"trailing space inside", metadata.Pairs("authorization", "Bearer "+valid+" x"), "white space"},
		{"empty token", metadata.Pairs("authorization", "Bearer "), "token is empty"},
		{"expired", metadata.Pairs("authorization", "Bearer "+sign(t, expired)), "expired"},
		{"other audience", metadata.Pairs("authorization", "Bearer "+sign(t, otherAudience)), "aud"},
		{"issuer with trailing slash", metadata.Pairs("authorization", "Bearer "+sign(t, otherIssuer)), "iss"},
		{"bad signature", metadata.Pairs("authorization", "Bearer "+tampered), "signature"},
		{"not a JWT", metadata.Pairs("authorization", "Bearer abc.def"), "segments"},
		{"oversized token", metadata.Pairs("authorization", "Bearer "+strings.Repeat(".", 12<<10)), "too large"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := metadata.NewOutgoingContext(testContext(t), tt.md)
			_, err := ts.client.ListTodos(ctx, &todov1.ListTodosRequest{})
			wantCode(t, err, codes.Unauthenticated)
			// auth-service sends the same message, so clients see one text.
			if got, want := status.Convert(err).Message(), "invalid or missing access token"; got != want {
				t.Errorf("message = %q, want %q", got, want)
			}

			_, err = callWhoami(ctx, ts.conn)
			wantCode(t, err, codes.Unauthenticated)
		})
	}

	waitRPCLines(t, ts, 2*len(tests))
	logs := ts.logs.String()
	for _, tt := range tests {
		if !strings.Contains(logs, tt.wantReason) {
			t.Errorf("log has no line with reason %q for case %q", tt.wantReason, tt.name)
		}
	}
	if strings.Contains(logs, parts[2]) || strings.Contains(logs, parts[1]) {
		t.Error("log contains part of an access token")
	}
}

func TestBearerSchemeCaseInsensitive(t *testing.T) {
	ts := startServer(t)
	token := sign(t, ts.claims(alice))

	for _, scheme := range []string{"Bearer", "bearer", "BEARER"} {
		ctx := metadata.AppendToOutgoingContext(testContext(t), "authorization", scheme+" "+token)
		if _, err := ts.client.ListTodos(ctx, &todov1.ListTodosRequest{}); err != nil {
			t.Errorf("ListTodos with scheme %q: %v", scheme, err)
		}
	}
}

// TestStrayWhitespaceInMetadata sends authorization values with leading or
// trailing white space. HTTP/2 clients may strip or reject such values, so
// the call may fail on either side, but it must never be accepted.
func TestStrayWhitespaceInMetadata(t *testing.T) {
	ts := startServer(t)
	token := sign(t, ts.claims(alice))

	for _, value := range []string{" Bearer " + token, "Bearer " + token + " ", "Bearer " + token + "\t"} {
		ctx := metadata.AppendToOutgoingContext(testContext(t), "authorization", value)
		_, err := ts.client.ListTodos(ctx, &todov1.ListTodosRequest{})
		redacted := strings.ReplaceAll(value, token, "<token>")
		if err == nil {
			t.Errorf("ListTodos with authorization %q succeeded, want a failure", redacted)
			continue
		}
		t.Logf("authorization %q: %v", redacted, err)
	}
}

func TestKeysUnavailable(t *testing.T) {
	ts := startServer(t)
	ctx := ts.as(t, alice)
	ts.resolver.setUnavailable(true)

	_, err := ts.client.ListTodos(ctx, &todov1.ListTodosRequest{})
	wantCode(t, err, codes.Unavailable)
	_, err = callWhoami(ctx, ts.conn)
	wantCode(t, err, codes.Unavailable)

	ts.resolver.setUnavailable(false)
	if _, err := ts.client.ListTodos(ctx, &todov1.ListTodosRequest{}); err != nil {
		t.Errorf("ListTodos after keys returned: %v", err)
	}
}

func TestStreamSeesUserID(t *testing.T) {
	ts := startServer(t)

	got, err := callWhoami(ts.as(t, alice), ts.conn)
	if err != nil {
		t.Fatalf("Whoami: %v", err)
	}
	if got != alice {
		t.Errorf("Whoami user id = %q, want %q", got, alice)
	}
}

func TestPublicServicesNeedNoToken(t *testing.T) {
	ts := startServer(t)
	ctx := testContext(t)

	resp, err := healthpb.NewHealthClient(ts.conn).Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatalf("health Check: %v", err)
	}
	if resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("health status = %v, want SERVING", resp.GetStatus())
	}

	v1, err := reflectionv1.NewServerReflectionClient(ts.conn).ServerReflectionInfo(ctx)
	if err != nil {
		t.Fatalf("reflection v1: %v", err)
	}
	if err := v1.Send(&reflectionv1.ServerReflectionRequest{
		MessageRequest: &reflectionv1.ServerReflectionRequest_ListServices{},
	}); err != nil {
		t.Fatalf("reflection v1 Send: %v", err)
	}
	listed, err := v1.Recv()
	if err != nil {
		t.Fatalf("reflection v1 Recv: %v", err)
	}
	var services []string
	for _, s := range listed.GetListServicesResponse().GetService() {
		services = append(services, s.GetName())
	}
	if !contains(services, "todo.v1.TodoService") {
		t.Errorf("reflection v1 services = %v, want todo.v1.TodoService among them", services)
	}

	v1alpha, err := reflectionv1alpha.NewServerReflectionClient(ts.conn).ServerReflectionInfo(ctx)
	if err != nil {
		t.Fatalf("reflection v1alpha: %v", err)
	}
	if err := v1alpha.Send(&reflectionv1alpha.ServerReflectionRequest{
		MessageRequest: &reflectionv1alpha.ServerReflectionRequest_ListServices{},
	}); err != nil {
		t.Fatalf("reflection v1alpha Send: %v", err)
	}
	if _, err := v1alpha.Recv(); err != nil {
		t.Errorf("reflection v1alpha Recv: %v", err)
	}
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

func TestHeaderListTooLarge(t *testing.T) {
	ts := startServer(t)
	ctx := metadata.AppendToOutgoingContext(ts.as(t, alice), "x-padding", strings.Repeat("p", 32<<10))

	_, err := ts.client.ListTodos(ctx, &todov1.ListTodosRequest{})
	if err == nil {
		t.Fatal("ListTodos with 32 KiB of metadata succeeded, want a failure")
	}
	t.Logf("ListTodos with 32 KiB of metadata: %v", err)

	// The connection stays usable for well-formed calls.
	if _, err := ts.client.ListTodos(ts.as(t, alice), &todov1.ListTodosRequest{}); err != nil {
		t.Errorf("ListTodos after the oversized call: %v", err)
	}
}

// logLine is one JSON log record of an RPC.
type logLine struct {
	Msg        string  `json:"msg"`
	Method     string  `json:"method"`
	Code       string  `json:"code"`
	DurationMS float64 `json:"duration_ms"`
	RequestID  string  `json:"request_id"`
	UserID     string  `json:"user_id"`
	Err        string  `json:"err"`
}

// waitRPCLines waits until the server has logged at least n RPCs and
// returns their lines. The server logs a call after it sent the response,
// so a client can see the response first.
func waitRPCLines(t *testing.T, ts *testServer, n int) []logLine {
	t.Helper()
	ctx := testContext(t)
	for {
		lines := rpcLogLines(t, ts.logs.String())
		if len(lines) >= n {
			return lines
		}
		select {
		case <-ctx.Done():
			t.Fatalf("got %d rpc log lines, want at least %d:\n%s", len(lines), n, ts.logs.String())
		case <-time.After(5 * time.Millisecond):
		}
	}
}

func rpcLogLines(t *testing.T, logs string) []logLine {
	t.Helper()
	var lines []logLine
	scanner := bufio.NewScanner(strings.NewReader(logs))
	for scanner.Scan() {
		var line logLine
		if err := json.Unmarshal(scanner.Bytes(), &line); err != nil {
			t.Fatalf("log line is not JSON: %v: %s", err, scanner.Text())
		}
		if line.Msg == "rpc" {
			lines = append(lines, line)
		}
	}
	return lines
}

// levelLine is the method and level of one RPC log record.
type levelLine struct {
	method string
	level  string
}

// rpcLogLevels returns the method and level of every RPC log record in
// logs. It checks that there are as many as lines, which waitRPCLines
// returned.
func rpcLogLevels(t *testing.T, lines []logLine, logs string) []levelLine {
	t.Helper()
	var levels []levelLine
	scanner := bufio.NewScanner(strings.NewReader(logs))
	for scanner.Scan() {
		var record struct {
			Msg    string `json:"msg"`
			Method string `json:"method"`
			Level  string `json:"level"`
		}
		if err := json.Unmarshal(scanner.Bytes(), &record); err != nil {
			t.Fatalf("log line is not JSON: %v: %s", err, scanner.Text())
		}
		if record.Msg == "rpc" {
			levels = append(levels, levelLine{method: record.Method, level: record.Level})
		}
	}
	if len(levels) < len(lines) {
		t.Fatalf("got %d rpc log levels, want %d:\n%s", len(levels), len(lines), logs)
	}
	return levels
}

func TestOneLogLinePerRPC(t *testing.T) {
	ts := startServer(t)
	ctx := metadata.AppendToOutgoingContext(ts.as(t, alice), "x-request-id", "req-123")

	var header metadata.MD
	if _, err := ts.client.ListTodos(ctx, &todov1.ListTodosRequest{}, grpc.Header(&header)); err != nil {
		t.Fatalf("ListTodos: %v", err)
	}
	if got := header.Get("x-request-id"); len(got) != 1 || got[0] != "req-123" {
		t.Errorf("response x-request-id = %v, want [req-123]", got)
	}

	badID := metadata.AppendToOutgoingContext(testContext(t), "x-request-id", "evil id; user_id=admin", "authorization", "Bearer x.y.z")
	_, err := ts.client.GetTodo(badID, &todov1.GetTodoRequest{Id: alice})
	wantCode(t, err, codes.Unauthenticated)

	lines := waitRPCLines(t, ts, 2)
	if len(lines) != 2 {
		t.Fatalf("got %d rpc log lines, want 2:\n%s", len(lines), ts.logs.String())
	}
	want := logLine{
		Msg:       "rpc",
		Method:    "/todo.v1.TodoService/ListTodos",
		Code:      "OK",
		RequestID: "req-123",
		UserID:    alice,
	}
	if diff := cmp.Diff(want, lines[0], cmpIgnoreDuration); diff != "" {
		t.Errorf("ListTodos log line mismatch (-want +got):\n%s", diff)
	}

	second := lines[1]
	if second.Code != "Unauthenticated" || second.Method != "/todo.v1.TodoService/GetTodo" {
		t.Errorf("second log line = %+v, want GetTodo with code Unauthenticated", second)
	}
	if second.RequestID == "evil id; user_id=admin" || second.RequestID == "" {
		t.Errorf("second log line request_id = %q, want a generated id", second.RequestID)
	}
	if second.UserID != "" {
		t.Errorf("second log line user_id = %q, want none", second.UserID)
	}
	if !strings.Contains(second.Err, "invalid access token") {
		t.Errorf("second log line err = %q, want the precise reason", second.Err)
	}
}

var cmpIgnoreDuration = cmp.FilterPath(func(p cmp.Path) bool {
	return p.Last().String() == ".DurationMS"
}, cmp.Ignore())

func TestMetricsCountRPCs(t *testing.T) {
	ts := startServer(t)
	ctx := ts.as(t, alice)
	for range 3 {
		if _, err := ts.client.ListTodos(ctx, &todov1.ListTodosRequest{}); err != nil {
			t.Fatalf("ListTodos: %v", err)
		}
	}
	_, err := ts.client.ListTodos(testContext(t), &todov1.ListTodosRequest{})
	wantCode(t, err, codes.Unauthenticated)

	waitRPCLines(t, ts, 4)
	want := `
# HELP grpc_server_handled_total RPCs completed by the server, by full method name and status code.
# TYPE grpc_server_handled_total counter
grpc_server_handled_total{grpc_code="OK",grpc_method="/todo.v1.TodoService/ListTodos"} 3
grpc_server_handled_total{grpc_code="Unauthenticated",grpc_method="/todo.v1.TodoService/ListTodos"} 1
`
	if err := testutil.GatherAndCompare(ts.registry, strings.NewReader(want), "grpc_server_handled_total"); err != nil {
		t.Error(err)
	}
	if n := testutil.CollectAndCount(ts.registry, "grpc_server_handling_seconds"); n != 1 {
		t.Errorf("grpc_server_handling_seconds series = %d, want 1", n)
	}
}
