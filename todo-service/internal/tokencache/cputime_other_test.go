//go:build !linux

package tokencache

import (
	"testing"
	"time"
)

var clockStart = time.Now()

// threadCPUTime falls back to monotonic wall-clock time where
// CLOCK_THREAD_CPUTIME_ID is not available, so measurements include the
// time the thread waits for a CPU.
func threadCPUTime(*testing.B) time.Duration {
	return time.Since(clockStart)
}

const clockName = "wall-clock time"
