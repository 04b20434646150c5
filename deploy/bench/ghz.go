// Package bench drives the real auth-service and todo-service binaries with
// ghz, a gRPC load generator, and reports throughput and latency per RPC.
// The load scenarios live in bench_test.go behind the "bench" build tag, so
// `go test ./...` does not run them; `make bench` does.
package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"time"
)

// Load is one fixed ghz run: Requests calls of one gRPC method from
// Concurrency workers over one connection.
type Load struct {
	Name string
	// Call is the full method name, for example "todo.v1.TodoService/GetTodo".
	Call string
	// Addr is the server address, always a loopback address of a service the
	// harness started itself.
	Addr string
	// Data is the request message as a value that encodes to protobuf JSON.
	// A slice sends one element per request, in turn.
	Data any
	// Token, when not empty, is sent as "authorization: Bearer <Token>".
	Token       string
	Requests    int
	Concurrency int
	// RPS, when above zero, limits the request rate, which turns a run of
	// Requests calls into a run of Requests/RPS seconds.
	RPS int
	// Timeout bounds each call; zero means defaultRequestTimeout.
	Timeout time.Duration
	// Protoset is the file descriptor set that describes Call. When empty,
	// ghz reads the descriptors through server reflection.
	Protoset string
}

// Result is the summary of one ghz run. Latencies are those of the calls
// that returned OK, because ghz leaves failed calls out of its distribution.
type Result struct {
	Name     string
	Requests uint64
	Duration time.Duration
	RPS      float64
	P50      time.Duration
	P95      time.Duration
	P99      time.Duration
	Errors   uint64
	// Codes counts the calls by gRPC status code name ("OK", "Unavailable").
	Codes map[string]int
	// ClientCPU is the user plus system CPU time of the ghz process, which
	// shares the machine's CPUs with the servers it drives.
	ClientCPU time.Duration
}

// ghzReport is the part of ghz's JSON report (version 0.93) that Result
// needs. Durations are nanoseconds.
type ghzReport struct {
	Count                  uint64         `json:"count"`
	Total                  time.Duration  `json:"total"`
	Rps                    float64        `json:"rps"`
	StatusCodeDistribution map[string]int `json:"statusCodeDistribution"`
	ErrorDistribution      map[string]int `json:"errorDistribution"`
	LatencyDistribution    []struct {
		Percentage int           `json:"percentage"`
		Latency    time.Duration `json:"latency"`
	} `json:"latencyDistribution"`
}

// defaultRequestTimeout bounds each call, so a stuck server shows up as
// DeadlineExceeded errors instead of a hung run.
const defaultRequestTimeout = 20 * time.Second

// RunGhz runs the ghz binary at ghzPath with load l and parses its JSON
// report. The request data and the token go to files in a temporary
// directory, so neither appears on a command line. The run ends when all
// requests are done or ctx ends, whichever comes first.
func RunGhz(ctx context.Context, ghzPath string, l Load) (Result, error) {
	dir, err := os.MkdirTemp("", "ghz-")
	if err != nil {
		return Result{}, fmt.Errorf("create ghz work directory: %w", err)
	}
	defer os.RemoveAll(dir)

	timeout := l.Timeout
	if timeout == 0 {
		timeout = defaultRequestTimeout
	}
	args := []string{
		"--insecure",
		"--call", l.Call,
		"--total", fmt.Sprint(l.Requests),
		"--concurrency", fmt.Sprint(l.Concurrency),
		"--timeout", timeout.String(),
		"--format", "json",
	}
	if l.Protoset != "" {
		args = append(args, "--protoset", l.Protoset)
	}
	if l.RPS > 0 {
		args = append(args, "--rps", fmt.Sprint(l.RPS))
	}

	dataFile := filepath.Join(dir, "data.json")
	if err := writeJSON(dataFile, l.Data); err != nil {
		return Result{}, err
	}
	args = append(args, "--data-file", dataFile)

	if l.Token != "" {
		metadataFile := filepath.Join(dir, "metadata.json")
		if err := writeJSON(metadataFile, map[string]string{"authorization": "Bearer " + l.Token}); err != nil {
			return Result{}, err
		}
		args = append(args, "--metadata-file", metadataFile)
	}
	args = append(args, l.Addr)

	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, ghzPath, args...)
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		if ctxErr := ctx.Err(); ctxErr != nil {
			return Result{}, fmt.Errorf("ghz %s: stopped before all %d requests: %w", l.Name, l.Requests, ctxErr)
		}
		return Result{}, fmt.Errorf("ghz %s: %v\n%s", l.Name, err, stderr.String())
	}

	var report ghzReport
	if err := json.Unmarshal(stdout.Bytes(), &report); err != nil {
		return Result{}, fmt.Errorf("ghz %s: parse JSON report: %w\n%s", l.Name, err, stderr.String())
	}
	res := summarize(l.Name, report)
	res.ClientCPU = cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
	return res, nil
}

func summarize(name string, report ghzReport) Result {
	r := Result{
		Name:     name,
		Requests: report.Count,
		Duration: report.Total,
		RPS:      report.Rps,
		Codes:    report.StatusCodeDistribution,
	}
	ok := uint64(report.StatusCodeDistribution["OK"])
	if report.Count > ok {
		r.Errors = report.Count - ok
	}
	for _, d := range report.LatencyDistribution {
		switch d.Percentage {
		case 50:
			r.P50 = d.Latency
		case 95:
			r.P95 = d.Latency
		case 99:
			r.P99 = d.Latency
		}
	}
	return r
}

func writeJSON(path string, v any) error {
	if v == nil {
		v = map[string]any{}
	}
	body, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode %s: %w", filepath.Base(path), err)
	}
	if err := os.WriteFile(path, body, 0o600); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// FindGhz returns the path of the ghz binary: $GHZ when set, else .bin/ghz
// under root (where `make` installs it), else ghz on $PATH.
func FindGhz(root string) (string, error) {
	if p := os.Getenv("GHZ"); p != "" {
		return p, nil
	}
	local := filepath.Join(root, ".bin", "ghz")
	if _, err := os.Stat(local); err == nil {
		return local, nil
	}
	p, err := exec.LookPath("ghz")
	if err != nil {
		return "", errors.New("ghz not found in $GHZ, .bin/ghz or $PATH; install it with `GOBIN=$PWD/.bin go install github.com/bojand/ghz/cmd/ghz@v0.93.0`")
	}
	return p, nil
}
