package bench

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"
)

// Account is a user signed up through the real auth-service.
type Account struct {
	ID           string
	Email        string
	Password     string
	AccessToken  string
	RefreshToken string
}

// Row is one line of the results table.
type Row struct {
	Scenario    string
	Mode        string // "offline", "introspect" or "" where the mode does not apply
	Concurrency int
	Result
	// CPU is the server-side CPU time of the run, or nil when the run was
	// not measured.
	CPU *CPUUsage
}

// CPUPerCall returns the row's CPU time divided by its request count, and
// false when the row has no CPU measurement.
func (r Row) CPUPerCall() (CPUUsage, bool) {
	if r.CPU == nil || r.Requests == 0 {
		return CPUUsage{}, false
	}
	n := time.Duration(r.Requests)
	return CPUUsage{
		Services:         r.CPU.Services / n,
		Postgres:         r.CPU.Postgres / n,
		PostgresMeasured: r.CPU.PostgresMeasured,
	}, true
}

// WriteTable writes rows as a Markdown table: requests per second, the
// latency percentiles in milliseconds, the count of failed calls, and the
// CPU time per call in microseconds of ghz, of the services and of
// PostgreSQL.
func WriteTable(w io.Writer, rows []Row) {
	fmt.Fprintln(w, "| scenario | mode | requests | concurrency | req/s | p50 ms | p95 ms | p99 ms | errors | ghz CPU µs/call | services CPU µs/call | PostgreSQL CPU µs/call |")
	fmt.Fprintln(w, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
	for _, r := range rows {
		mode := r.Mode
		if mode == "" {
			mode = "-"
		}
		clientCPU, servicesCPU, postgresCPU := "-", "-", "-"
		if r.Requests > 0 {
			clientCPU = micros(r.ClientCPU / time.Duration(r.Requests))
		}
		if perCall, ok := r.CPUPerCall(); ok {
			servicesCPU = micros(perCall.Services)
			if perCall.PostgresMeasured {
				postgresCPU = micros(perCall.Postgres)
			}
		}
		fmt.Fprintf(w, "| %s | %s | %d | %d | %.0f | %s | %s | %s | %d | %s | %s | %s |\n",
			r.Scenario, mode, r.Requests, r.Concurrency, r.RPS, millis(r.P50), millis(r.P95), millis(r.P99), r.Errors,
			clientCPU, servicesCPU, postgresCPU)
	}
}

func micros(d time.Duration) string {
	return fmt.Sprintf("%.0f", float64(d)/float64(time.Microsecond))
}

func millis(d time.Duration) string {
	return fmt.Sprintf("%.2f", float64(d)/float64(time.Millisecond))
}

// SigningRate measures how many RSA-2048 PKCS#1 v1.5 SHA-256 signatures per
// second this process makes: serial on one goroutine, and parallel on
// GOMAXPROCS goroutines. It is the bare cost inside every token that
// auth-service issues.
func SigningRate() (serial, parallel float64, err error) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return 0, 0, fmt.Errorf("generate RSA key: %w", err)
	}
	digest := sha256.Sum256([]byte("a token header and claims of typical size for the signing benchmark"))

	var signErr error
	one := testing.Benchmark(func(b *testing.B) {
		for b.Loop() {
			if _, err := rsa.SignPKCS1v15(rand.Reader, key, crypto.SHA256, digest[:]); err != nil {
				signErr = err
				b.FailNow()
			}
		}
	})
	all := testing.Benchmark(func(b *testing.B) {
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				rsa.SignPKCS1v15(rand.Reader, key, crypto.SHA256, digest[:])
			}
		})
	})
	if signErr != nil {
		return 0, 0, fmt.Errorf("sign: %w", signErr)
	}
	return opsPerSecond(one), opsPerSecond(all), nil
}

func opsPerSecond(r testing.BenchmarkResult) float64 {
	if r.NsPerOp() == 0 {
		return 0
	}
	return float64(time.Second) / float64(r.NsPerOp())
}

// HelpFlags runs bin -h and returns the names of the flags it lists,
// without the leading dash.
func HelpFlags(bin string) (map[string]bool, error) {
	out, err := exec.Command(bin, "-h").CombinedOutput()
	// The flag package exits with status 0 or 2 after -h, depending on
	// how the program handles flag.ErrHelp; only the text matters here.
	if len(out) == 0 {
		return nil, fmt.Errorf("%s -h printed nothing: %v", bin, err)
	}

	flags := map[string]bool{}
	for _, line := range strings.Split(string(out), "\n") {
		fields := strings.Fields(line)
		if len(fields) > 0 && strings.HasPrefix(fields[0], "-") && len(fields[0]) > 1 {
			flags[strings.TrimPrefix(fields[0], "-")] = true
		}
	}
	return flags, nil
}

// DescribeMachine returns the CPU count, CPU model, memory size and load
// average of this machine, read from /proc, for the header of a report.
// Other processes on the machine share the CPUs with the services and ghz,
// so the load average shows how far a run's numbers can be trusted.
func DescribeMachine() string {
	model := "unknown"
	if cpuinfo, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(cpuinfo), "\n") {
			if name, value, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(name) == "model name" {
				model = strings.TrimSpace(value)
				break
			}
		}
	}
	memory := "unknown"
	if meminfo, err := os.ReadFile("/proc/meminfo"); err == nil {
		for _, line := range strings.Split(string(meminfo), "\n") {
			if value, ok := strings.CutPrefix(line, "MemTotal:"); ok {
				memory = strings.TrimSpace(value)
				break
			}
		}
	}
	return fmt.Sprintf("%d CPUs (%s), memory %s, load average %s", runtime.NumCPU(), model, memory, LoadAverage())
}

// LoadAverage returns the 1, 5 and 15 minute load averages from
// /proc/loadavg.
func LoadAverage() string {
	raw, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	fields := strings.Fields(string(raw))
	if len(fields) < 3 {
		return "unknown"
	}
	return strings.Join(fields[:3], " ")
}
