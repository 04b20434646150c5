package bench

import (
	"crypto/sha256"
	"os"
	"strings"
	"testing"
	"time"
)

func TestParseStatCPU(t *testing.T) {
	// Fields 3 to 15 of a stat line: state, ppid, pgrp, session, tty_nr,
	// tpgid, flags, minflt, cminflt, majflt, cmajflt, utime, stime.
	const tail = " S 1 2 3 0 -1 4194560 100 0 0 0 250 30 0 0 20 0 9 0"
	for _, tc := range []struct {
		name string
		line string
		want time.Duration
	}{
		{name: "plain name", line: "1234 (todo-service)" + tail, want: 2800 * time.Millisecond},
		{name: "name with spaces and parentheses", line: "1234 (a) b (c)" + tail, want: 2800 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseStatCPU([]byte(tc.line))
			if err != nil {
				t.Fatalf("parseStatCPU(%q) error: %v", tc.line, err)
			}
			if got != tc.want {
				t.Errorf("parseStatCPU(%q) = %v, want %v", tc.line, got, tc.want)
			}
		})
	}

	for _, bad := range []string{"", "1234 todo-service S 1", "1234 (x) S 1 2 3", "1234 (x)" + strings.Replace(tail, " 250 ", " many ", 1)} {
		if got, err := parseStatCPU([]byte(bad)); err == nil {
			t.Errorf("parseStatCPU(%q) = %v, want an error", bad, got)
		}
	}
}

// TestReadCPUTimeGrows hashes in a loop until this process's CPU time, as
// ReadCPUTime reports it, has grown by 50 ms, and fails when it does not
// within 20 s of wall time.
func TestReadCPUTimeGrows(t *testing.T) {
	start, err := ReadCPUTime(os.Getpid())
	if err != nil {
		t.Fatalf("ReadCPUTime(self): %v", err)
	}

	deadline := time.Now().Add(20 * time.Second)
	sum := sha256.Sum256([]byte("burn"))
	for time.Now().Before(deadline) {
		for range 10000 {
			sum = sha256.Sum256(sum[:])
		}
		now, err := ReadCPUTime(os.Getpid())
		if err != nil {
			t.Fatalf("ReadCPUTime(self): %v", err)
		}
		if now-start >= 50*time.Millisecond {
			return
		}
	}
	t.Errorf("CPU time grew by less than 50 ms in 20 s of hashing (last digest %x)", sum[:4])
}

func TestIsLocalPostgres(t *testing.T) {
	for _, tc := range []struct {
		url  string
		want bool
	}{
		{"postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable", true},
		{"postgres://postgres@localhost/postgres", true},
		{"postgres://postgres@[::1]:5432/postgres", true},
		{"postgres:///postgres?host=/var/run/postgresql", true},
		{"postgres:///postgres", true},
		{"postgres://postgres@db.example.com:5432/postgres", false},
		{"postgres://postgres@10.0.0.7/postgres", false},
		{"postgres://postgres@[::1/postgres", false},
	} {
		if got := isLocalPostgres(tc.url); got != tc.want {
			t.Errorf("isLocalPostgres(%q) = %v, want %v", tc.url, got, tc.want)
		}
	}
}
