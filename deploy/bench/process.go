package bench

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// FindPID returns the id of the running process whose command line contains
// the flag pair "-grpc-addr addr". The harness starts every service on its
// own free port, so the pair names exactly one process.
func FindPID(grpcAddr string) (int, error) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return 0, fmt.Errorf("list /proc: %w", err)
	}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		raw, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue // the process exited while we looked
		}
		args := strings.Split(strings.TrimRight(string(raw), "\x00"), "\x00")
		for i := 0; i+1 < len(args); i++ {
			if args[i] == "-grpc-addr" && args[i+1] == grpcAddr {
				return pid, nil
			}
		}
	}
	return 0, fmt.Errorf("no process with -grpc-addr %s", grpcAddr)
}

// Memory is the resident set size of a process, in bytes.
type Memory struct {
	// RSS is the current resident set size (VmRSS).
	RSS int64
	// Peak is the largest resident set size since the process started
	// (VmHWM).
	Peak int64
}

// ReadMemory reads VmRSS and VmHWM of process pid from /proc/pid/status.
func ReadMemory(pid int) (Memory, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return Memory{}, fmt.Errorf("read memory of process %d: %w", pid, err)
	}
	defer f.Close()

	var m Memory
	scanner := bufio.NewScanner(f)
	for scanner.Scan() {
		name, value, ok := strings.Cut(scanner.Text(), ":")
		if !ok {
			continue
		}
		// The kernel prints these two as "<n> kB".
		kib, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(value), " kB"), 10, 64)
		switch name {
		case "VmRSS":
			if err == nil {
				m.RSS = kib * 1024
			}
		case "VmHWM":
			if err == nil {
				m.Peak = kib * 1024
			}
		}
	}
	if err := scanner.Err(); err != nil {
		return Memory{}, fmt.Errorf("read memory of process %d: %w", pid, err)
	}
	if m.RSS == 0 || m.Peak == 0 {
		return Memory{}, fmt.Errorf("read memory of process %d: VmRSS or VmHWM missing in /proc/%d/status", pid, pid)
	}
	return m, nil
}

// ReadMetric fetches the Prometheus text exposition at
// http://httpAddr/metrics and returns the value of the first sample of the
// metric name that has no labels, such as go_goroutines.
func ReadMetric(ctx context.Context, httpAddr, name string) (float64, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()

	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+httpAddr+"/metrics", nil)
	if err != nil {
		return 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, fmt.Errorf("fetch metrics from %s: %w", httpAddr, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	if err != nil {
		return 0, fmt.Errorf("read metrics from %s: %w", httpAddr, err)
	}
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("fetch metrics from %s: status %s", httpAddr, resp.Status)
	}

	for _, line := range bytes.Split(body, []byte("\n")) {
		fields := strings.Fields(string(line))
		if len(fields) == 2 && fields[0] == name {
			return strconv.ParseFloat(fields[1], 64)
		}
	}
	return 0, fmt.Errorf("metric %s not found at http://%s/metrics", name, httpAddr)
}
