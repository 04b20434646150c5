package app_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"

	"example.com/todoapp/auth-service/internal/app"
	"example.com/todoapp/auth-service/internal/config"
	"example.com/todoapp/auth-service/internal/grpcserver"
	authv1 "example.com/todoapp/proto/gen/auth/v1"
)

// waitForRPCLogLines returns the rpc log lines of the request ID once at
// least one is written. The server writes the line when the RPC ends, which
// may be after the client has read the status.
func waitForRPCLogLines(t *testing.T, s *testServer, requestID string) []map[string]any {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		var lines []map[string]any
		for _, line := range strings.Split(s.logs.String(), "\n") {
			var entry map[string]any
			if json.Unmarshal([]byte(line), &entry) == nil && entry["msg"] == "rpc" && entry["request_id"] == requestID {
				lines = append(lines, entry)
			}
		}
		if len(lines) > 0 {
			return lines
		}
		if time.Now().After(deadline) {
			t.Fatalf("no rpc log line with request_id %s in:\n%s", requestID, s.logs.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// wantOneRPCLogLine checks that the request ID has exactly one rpc log line
// with the method, code and level.
func wantOneRPCLogLine(t *testing.T, s *testServer, requestID, method string, code codes.Code, level string) map[string]any {
	t.Helper()
	lines := waitForRPCLogLines(t, s, requestID)
	if len(lines) != 1 {
		t.Errorf("%d rpc log lines for request_id %s, want 1: %v", len(lines), requestID, lines)
	}
	entry := lines[0]
	if entry["method"] != method {
		t.Errorf("rpc log line method = %v, want %s", entry["method"], method)
	}
	if entry["code"] != code.String() {
		t.Errorf("rpc log line code = %v, want %s", entry["code"], code)
	}
	if entry["level"] != level {
		t.Errorf("rpc log line level = %v, want %s", entry["level"], level)
	}
	return entry
}

// handledCount returns the grpc_server_handled_total sample of the method
// and code from the /metrics page, or "" when there is none.
func handledCount(t *testing.T, s *testServer, method string, code codes.Code) string {
	t.Helper()
	prefix := `grpc_server_handled_total{grpc_code="` + code.String() + `",grpc_method="` + method + `"} `
	for _, line := range strings.Split(get(t, "http://"+s.HTTPAddr()+"/metrics"), "\n") {
		if value, ok := strings.CutPrefix(line, prefix); ok {
			return value
		}
	}
	return ""
}

func TestMalformedRequestInvalidArgument(t *testing.T) {
	s := startServer(t)
	ctx := metadata.AppendToOutgoingContext(testContext(t), "x-request-id", "req-malformed")

	req := []byte{0xff, 0xff, 0xff, 0xff}
	var resp []byte
	err := s.conn.Invoke(ctx, "/auth.v1.AuthService/SignUp", &req, &resp, grpc.ForceCodecV2(rawCodec{}))
	st := wantCode(t, "SignUp(ffffffff)", err, codes.InvalidArgument)
	if strings.Contains(st.Message(), "grpc:") || strings.Contains(st.Message(), "\xff") {
		t.Errorf("SignUp(ffffffff) message = %q, want a plain message without grpc-go detail or payload", st.Message())
	}

	const method = "/auth.v1.AuthService/SignUp"
	entry := wantOneRPCLogLine(t, s, "req-malformed", method, codes.InvalidArgument, "INFO")
	if reason, _ := entry["reason"].(string); !strings.Contains(reason, "malformed request") {
		t.Errorf("rpc log line reason = %q, want the malformed request finding", reason)
	}
	if got := handledCount(t, s, method, codes.InvalidArgument); got != "1" {
		t.Errorf("grpc_server_handled_total for SignUp InvalidArgument = %q, want 1", got)
	}

	// The server still decodes the next request on the same connection.
	signUp(t, s, "ada@example.com", "correct horse battery")
}

func TestOversizedRequestLogged(t *testing.T) {
	s := startServer(t)
	ctx := metadata.AppendToOutgoingContext(testContext(t), "x-request-id", "req-oversized")

	const method = "/auth.v1.AuthService/IntrospectToken"
	_, err := s.client.IntrospectToken(ctx, &authv1.IntrospectTokenRequest{Token: strings.Repeat("a", grpcserver.MaxRecvMsgBytes)})
	wantCode(t, "IntrospectToken(message over the transport cap)", err, codes.ResourceExhausted)

	entry := wantOneRPCLogLine(t, s, "req-oversized", method, codes.ResourceExhausted, "WARN")
	if msg, _ := entry["error"].(string); msg == "" {
		t.Errorf("rpc log line error = %v, want the grpc-go message", entry["error"])
	}
	if got := handledCount(t, s, method, codes.ResourceExhausted); got != "1" {
		t.Errorf("grpc_server_handled_total for IntrospectToken ResourceExhausted = %q, want 1", got)
	}
}

func TestRPCLogLinePeer(t *testing.T) {
	tests := []struct {
		name     string
		trusted  string
		wantPeer string
	}{
		{"trusted proxy", "127.0.0.1/32", "198.51.100.1"},
		{"untrusted peer", "10.0.0.0/8", "127.0.0.1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := startServer(t, "-trusted-proxies", tt.trusted)
			ctx := metadata.AppendToOutgoingContext(testContext(t), "x-forwarded-for", "198.51.100.1", "x-request-id", "req-peer")

			_, err := s.client.Login(ctx, &authv1.LoginRequest{Email: "nobody@example.com", Password: "wrong password"})
			wantCode(t, "Login(unknown email)", err, codes.Unauthenticated)

			entry := wantOneRPCLogLine(t, s, "req-peer", "/auth.v1.AuthService/Login", codes.Unauthenticated, "INFO")
			if entry["peer"] != tt.wantPeer {
				t.Errorf("rpc log line peer = %v, want %s", entry["peer"], tt.wantPeer)
			}
		})
	}
}

func TestShutdownLogsCause(t *testing.T) {
	ctx, cancel := context.WithCancelCause(testContext(t))
	defer cancel(nil)
	env := map[string]string{config.KEKEnv: testKEK}
	args := []string{"-grpc-addr", "127.0.0.1:0", "-http-addr", "127.0.0.1:0", "-data-dir", t.TempDir()}
	stderr := &syncBuffer{}

	done := make(chan error, 1)
	go func() {
		done <- app.RunWithOutput(ctx, args, func(k string) string { return env[k] }, io.Discard, stderr)
	}()
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(stderr.String(), "auth-service started") {
		if time.Now().After(deadline) {
			t.Fatalf("serve did not start; stderr:\n%s", stderr.String())
		}
		time.Sleep(10 * time.Millisecond)
	}

	cancel(errors.New("terminated signal received"))
	if err := <-done; err != nil {
		t.Fatalf("Run(serve) = %v", err)
	}
	var found bool
	for _, line := range strings.Split(stderr.String(), "\n") {
		var entry map[string]any
		if json.Unmarshal([]byte(line), &entry) != nil || entry["msg"] != "shutdown requested" {
			continue
		}
		found = true
		if entry["cause"] != "terminated signal received" {
			t.Errorf("shutdown requested cause = %v, want terminated signal received", entry["cause"])
		}
	}
	if !found {
		t.Errorf("no shutdown requested log line in:\n%s", stderr.String())
	}
}
