package bench

import (
	"bufio"
	"bytes"
	"context"
	"errors"
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

// clockTicksPerSecond is USER_HZ, the unit of the CPU times in
// /proc/<pid>/stat (sysconf(_SC_CLK_TCK), proc(5)). Linux fixes it at 100
// on x86 and arm64.
const clockTicksPerSecond = 100

// ReadCPUTime returns the user plus system CPU time that process pid has
// used in all its threads, from /proc/pid/stat. The resolution is 10 ms.
func ReadCPUTime(pid int) (time.Duration, error) {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("read CPU time of process %d: %w", pid, err)
	}
	t, err := parseStatCPU(raw)
	if err != nil {
		return 0, fmt.Errorf("read CPU time of process %d: %w", pid, err)
	}
	return t, nil
}

// parseStatCPU returns utime plus stime, fields 14 and 15 of a
// /proc/<pid>/stat line.
func parseStatCPU(raw []byte) (time.Duration, error) {
	// The command name in field 2 may contain spaces and parentheses, so
	// the fields are counted from the last ')'.
	end := bytes.LastIndexByte(raw, ')')
	if end < 0 {
		return 0, errors.New("no command name in the stat line")
	}
	fields := strings.Fields(string(raw[end+1:]))
	// fields[0] is field 3 (state), so utime (14) and stime (15) are
	// fields[11] and fields[12].
	if len(fields) < 13 {
		return 0, fmt.Errorf("stat line has %d fields after the command name, want at least 13", len(fields))
	}
	var ticks int64
	for _, field := range fields[11:13] {
		n, err := strconv.ParseInt(field, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("parse CPU time %q: %w", field, err)
		}
		ticks += n
	}
	return time.Duration(ticks) * time.Second / clockTicksPerSecond, nil
}
