package grpcserver

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"

	"example.com/todoapp/auth-service/internal/auth"
	"example.com/todoapp/proto/accesstoken"
)

func TestClientAddr(t *testing.T) {
	trusted := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("fd00::/8")}
	tests := []struct {
		name string
		peer string
		xff  []string
		want string
	}{
		{"untrusted peer ignores header", "203.0.113.9:5000", []string{"198.51.100.1"}, "203.0.113.9"},
		{"trusted peer without header", "10.1.2.3:5000", nil, "10.1.2.3"},
		{"trusted peer with client", "10.1.2.3:5000", []string{"198.51.100.1"}, "198.51.100.1"},
		{"spoofed left entry skipped", "10.1.2.3:5000", []string{"1.2.3.4, 198.51.100.1"}, "198.51.100.1"},
		{"chain of trusted proxies", "10.1.2.3:5000", []string{"198.51.100.1, 10.9.9.9", "10.8.8.8"}, "198.51.100.1"},
		{"garbage entry stops the walk", "10.1.2.3:5000", []string{"198.51.100.1, not-an-ip"}, "10.1.2.3"},
		{"IPv6 trusted peer", "[fd00::1]:5000", []string{"2001:db8::7"}, "2001:db8::7"},
		{"IPv4-mapped peer", "[::ffff:203.0.113.9]:5000", nil, "203.0.113.9"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			addrPort := netip.MustParseAddrPort(tt.peer)
			ctx := peer.NewContext(context.Background(), &peer.Peer{Addr: net.TCPAddrFromAddrPort(addrPort)})
			if tt.xff != nil {
				md := metadata.MD{}
				for _, value := range tt.xff {
					md.Append("x-forwarded-for", value)
				}
				ctx = metadata.NewIncomingContext(ctx, md)
			}
			if got := clientAddr(ctx, trusted); got.String() != tt.want {
				t.Errorf("clientAddr(peer %s, x-forwarded-for %q) = %s, want %s", tt.peer, tt.xff, got, tt.want)
			}
		})
	}
}

func TestToStatus(t *testing.T) {
	tests := []struct {
		name        string
		err         error
		wantCode    codes.Code
		wantMessage string
	}{
		{"not found", fmt.Errorf("wrap: %w", auth.ErrNotFound), codes.NotFound, "not found"},
		{"already exists", auth.ErrAlreadyExists, codes.AlreadyExists, "email is already registered"},
		{"credentials", auth.ErrInvalidCredentials, codes.Unauthenticated, "invalid email or password"},
		{"old password", auth.ErrInvalidPassword, codes.Unauthenticated, "invalid password"},
		{"refresh reused", auth.ErrRefreshTokenReused, codes.Unauthenticated, "invalid refresh token"},
		{"access token", fmt.Errorf("%w: expired", accesstoken.ErrInvalidToken), codes.Unauthenticated, "invalid or missing access token"},
		{"keys unavailable", accesstoken.ErrKeysUnavailable, codes.Unavailable, "signing keys unavailable, retry later"},
		{"deadline", context.DeadlineExceeded, codes.DeadlineExceeded, "deadline exceeded"},
		{"unexpected", errors.New("pq: connection refused to 10.0.0.5"), codes.Internal, "internal error"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := toStatus(tt.err)
			if st.Code() != tt.wantCode || st.Message() != tt.wantMessage {
				t.Errorf("toStatus(%v) = %s %q, want %s %q", tt.err, st.Code(), st.Message(), tt.wantCode, tt.wantMessage)
			}
		})
	}
}

func TestToStatusDetails(t *testing.T) {
	st := toStatus(&auth.InvalidArgumentError{Violations: []auth.FieldViolation{{Field: "email", Description: "is required"}}})
	if st.Code() != codes.InvalidArgument {
		t.Fatalf("toStatus(InvalidArgumentError) code = %s, want InvalidArgument", st.Code())
	}
	var fields []string
	for _, d := range st.Details() {
		if br, ok := d.(*errdetails.BadRequest); ok {
			for _, v := range br.GetFieldViolations() {
				fields = append(fields, v.GetField()+": "+v.GetDescription())
			}
		}
	}
	if len(fields) != 1 || fields[0] != "email: is required" {
		t.Errorf("toStatus(InvalidArgumentError) violations = %q, want [email: is required]", fields)
	}

	st = toStatus(&auth.TooManyAttemptsError{RetryAfter: 90 * time.Second})
	var delay time.Duration
	for _, d := range st.Details() {
		if ri, ok := d.(*errdetails.RetryInfo); ok {
			delay = ri.GetRetryDelay().AsDuration()
		}
	}
	if st.Code() != codes.ResourceExhausted || delay != 90*time.Second {
		t.Errorf("toStatus(TooManyAttemptsError) = %s with retry delay %v, want ResourceExhausted with 90s", st.Code(), delay)
	}
}
