package tokencache

import (
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// threadCPUTime returns the CPU time consumed by the calling OS thread.
// Unlike wall-clock time it does not grow while the thread waits for a
// CPU, so measurements stay comparable on a loaded machine. The caller
// must hold runtime.LockOSThread.
func threadCPUTime(b *testing.B) time.Duration {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &ts); err != nil {
		b.Fatalf("clock_gettime(CLOCK_THREAD_CPUTIME_ID): %v", err)
	}
	return time.Duration(ts.Nano())
}

const clockName = "thread CPU time"
