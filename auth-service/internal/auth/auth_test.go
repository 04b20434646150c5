package auth

import (
	"strings"
	"testing"
	"time"
)

func TestNormaliseEmail(t *testing.T) {
	tests := []struct {
		in        string
		want      string
		wantValid bool
	}{
		{"Ada@Example.com", "ada@example.com", true},
		{"  ada@example.com\t", "ada@example.com", true},
		{"ada+tag@sub.example.org", "ada+tag@sub.example.org", true},
		// The same address in NFC (precomposed ä) and NFD (a with a
		// combining diaeresis) maps to the NFC form.
		{"\u00e4d\u00e4@ex\u00e4mple.com", "\u00e4d\u00e4@ex\u00e4mple.com", true},
		{"a\u0308da\u0308@exa\u0308mple.com", "\u00e4d\u00e4@ex\u00e4mple.com", true},
		{"A\u0308DA\u0308@EXA\u0308MPLE.COM", "\u00e4d\u00e4@ex\u00e4mple.com", true},
		{"", "", false},
		{"ada", "", false},
		{"ada@localhost", "", false},
		{"@example.com", "", false},
		{"Ada <ada@example.com>", "", false},
		{"a da@example.com", "", false},
		{"ada@exa\x00mple.com", "", false},
		{"ada\xff@example.com", "", false},
		{strings.Repeat("a", 243) + "@example.com", "", false},
	}
	for _, tt := range tests {
		got, violations := normaliseEmail(tt.in)
		if valid := len(violations) == 0; valid != tt.wantValid || got != tt.want {
			t.Errorf("normaliseEmail(%q) = %q, %v, want %q, valid %v", tt.in, got, violations, tt.want, tt.wantValid)
		}
	}
}

func TestCheckPasswordBytes(t *testing.T) {
	tests := []struct {
		name      string
		password  string
		wantValid bool
	}{
		{"min", strings.Repeat("x", MinPasswordBytes), true},
		{"below min", strings.Repeat("x", MinPasswordBytes-1), false},
		{"max", strings.Repeat("x", MaxPasswordBytes), true},
		{"max plus one", strings.Repeat("x", MaxPasswordBytes+1), false},
		// 43 three-byte runes are 129 bytes but only 43 characters.
		{"multibyte over max", strings.Repeat("€", 43), false},
		{"invalid UTF-8", "password\xff", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if valid := checkPassword("password", tt.password) == nil; valid != tt.wantValid {
				t.Errorf("checkPassword(%d bytes) valid = %v, want %v", len(tt.password), valid, tt.wantValid)
			}
		})
	}
}

func TestThrottleBackoff(t *testing.T) {
	c := ThrottleConfig{BaseDelay: time.Second, MaxDelay: 10 * time.Second}
	tests := []struct {
		failures int64
		want     time.Duration
	}{
		{0, 0}, {5, 0}, {6, time.Second}, {7, 2 * time.Second}, {8, 4 * time.Second},
		{9, 8 * time.Second}, {10, 10 * time.Second}, {1000, 10 * time.Second},
	}
	for _, tt := range tests {
		if got := c.backoff(tt.failures, 5); got != tt.want {
			t.Errorf("backoff(%d failures, 5 free) = %v, want %v", tt.failures, got, tt.want)
		}
	}
}
