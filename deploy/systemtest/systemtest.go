// Package systemtest starts the real auth-service and todo-service binaries
// as child processes on loopback, so tests can drive the whole system over
// gRPC the way a client or an operator would.
package systemtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// startTimeout bounds how long a service may take to report "readiness" as
// SERVING: migrations and, for auth-service, generating the first RSA key.
const startTimeout = 60 * time.Second

// stopTimeout bounds how long a service may take to exit after SIGTERM.
const stopTimeout = 30 * time.Second

var (
	buildOnce sync.Once
	buildDir  string
	buildErr  error
)

// Main runs the tests of a package that uses this one and removes the
// binaries built for them afterwards. Call it from TestMain.
func Main(m *testing.M) {
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

// RepoRoot returns the repository root: the nearest parent directory of the
// working directory that contains go.work.
func RepoRoot(tb testing.TB) string {
	tb.Helper()

	dir, err := os.Getwd()
	if err != nil {
		tb.Fatalf("get working directory: %v", err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.work")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			tb.Fatal("go.work not found above the working directory; run the tests inside the repository")
		}
		dir = parent
	}
}

// Binaries builds both services once per test process and returns the paths
// of the two executables.
func Binaries(tb testing.TB) (authBin, todoBin string) {
	tb.Helper()

	buildOnce.Do(func() {
		buildDir, buildErr = os.MkdirTemp("", "todoapp-bin-")
		if buildErr != nil {
			return
		}
		root := RepoRoot(tb)
		for _, name := range []string{"auth-service", "todo-service"} {
			cmd := exec.Command("go", "build", "-o", filepath.Join(buildDir, name), "./"+name+"/cmd/"+name)
			cmd.Dir = root
			out, err := cmd.CombinedOutput()
			if err != nil {
				buildErr = fmt.Errorf("go build %s: %v\n%s", name, err, out)
				return
			}
		}
	})
	if buildErr != nil {
		tb.Fatal(buildErr)
	}
	return filepath.Join(buildDir, "auth-service"), filepath.Join(buildDir, "todo-service")
}

// Service is one running service process.
type Service struct {
	Name     string
	GRPCAddr string // 127.0.0.1:port
	HTTPAddr string // 127.0.0.1:port
	DataDir  string
	// Env is added to the environment the process inherits from the test.
	Env []string

	bin  string
	args []string
	logs *lockedBuffer

	mu   sync.Mutex // guards cmd and done
	cmd  *exec.Cmd
	done chan error
}

// StartAuth starts auth-service in local mode (-dev) on SQLite in a temporary
// data directory and free loopback ports, adds extraArgs, and waits until its
// "readiness" health service is SERVING.
func StartAuth(tb testing.TB, extraArgs ...string) *Service {
	tb.Helper()

	s := NewAuth(tb, extraArgs...)
	s.Start(tb)
	return s
}

// NewAuth prepares auth-service like StartAuth without starting it, so a test
// can set Env first. Flags in extraArgs override the defaults set here.
func NewAuth(tb testing.TB, extraArgs ...string) *Service {
	tb.Helper()

	authBin, _ := Binaries(tb)
	grpcAddr, httpAddr := FreeAddr(tb), FreeAddr(tb)
	dataDir := tb.TempDir()
	args := []string{
		"serve",
		"-dev",
		"-grpc-addr", grpcAddr,
		"-http-addr", httpAddr,
		"-data-dir", dataDir,
		"-issuer", "http://" + httpAddr,
		"-log-format", "json",
	}
	args = append(args, extraArgs...)

	return &Service{Name: "auth-service", GRPCAddr: grpcAddr, HTTPAddr: httpAddr, DataDir: dataDir, bin: authBin, args: args, logs: &lockedBuffer{}}
}

// StartTodo starts todo-service on SQLite in a temporary data directory and
// free loopback ports, trusting the issuer and JWKS of auth, adds extraArgs,
// and waits until its "readiness" health service is SERVING.
func StartTodo(tb testing.TB, auth *Service, extraArgs ...string) *Service {
	tb.Helper()

	s := NewTodo(tb, "http://"+auth.HTTPAddr, "http://"+auth.HTTPAddr+"/.well-known/jwks.json", extraArgs...)
	s.Start(tb)
	return s
}

// NewTodo prepares todo-service for the given issuer and JWKS URL on SQLite
// in a temporary data directory and free loopback ports, without starting it.
func NewTodo(tb testing.TB, issuer, jwksURL string, extraArgs ...string) *Service {
	tb.Helper()

	_, todoBin := Binaries(tb)
	grpcAddr, httpAddr := FreeAddr(tb), FreeAddr(tb)
	dataDir := tb.TempDir()
	args := []string{
		"serve",
		"-grpc-addr", grpcAddr,
		"-http-addr", httpAddr,
		"-data-dir", dataDir,
		"-issuer", issuer,
		"-jwks-url", jwksURL,
		"-log-format", "json",
	}
	args = append(args, extraArgs...)

	return &Service{Name: "todo-service", GRPCAddr: grpcAddr, HTTPAddr: httpAddr, DataDir: dataDir, bin: todoBin, args: args, logs: &lockedBuffer{}}
}

// Start starts the process with the arguments it was created with and waits
// until it is ready. It is also how a test restarts a stopped service on the
// same ports and data directory.
func (s *Service) Start(tb testing.TB) {
	tb.Helper()

	s.StartNoWait(tb)
	s.WaitReady(tb)
}

// StartNoWait starts the process and returns without waiting for readiness.
func (s *Service) StartNoWait(tb testing.TB) {
	tb.Helper()

	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil {
		tb.Fatalf("%s is already running", s.Name)
	}

	cmd := exec.Command(s.bin, s.args...)
	cmd.Env = append(os.Environ(), s.Env...)
	cmd.Stdout = s.logs
	cmd.Stderr = s.logs
	if err := cmd.Start(); err != nil {
		tb.Fatalf("start %s: %v", s.Name, err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	s.cmd, s.done = cmd, done

	tb.Cleanup(func() {
		s.mu.Lock()
		running := s.cmd != nil
		s.mu.Unlock()
		if running {
			s.Kill(tb)
		}
		if tb.Failed() {
			tb.Logf("%s output:\n%s", s.Name, s.Logs())
		}
	})
}

// WaitReady waits until the "readiness" health service reports SERVING, and
// fails the test if the process exits or the time runs out first.
func (s *Service) WaitReady(tb testing.TB) {
	tb.Helper()

	conn := Dial(tb, s.GRPCAddr)
	client := healthpb.NewHealthClient(conn)
	deadline := time.Now().Add(startTimeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		resp, err := client.Check(ctx, &healthpb.HealthCheckRequest{Service: "readiness"})
		cancel()
		if err == nil && resp.GetStatus() == healthpb.HealthCheckResponse_SERVING {
			return
		}

		s.mu.Lock()
		done := s.done
		s.mu.Unlock()
		select {
		case err := <-done:
			s.mu.Lock()
			s.cmd = nil
			s.mu.Unlock()
			tb.Fatalf("%s exited before it was ready: %v\n%s", s.Name, err, s.Logs())
		default:
		}
		if time.Now().After(deadline) {
			tb.Fatalf("%s not ready after %s (last health check: %v, %v)\n%s", s.Name, startTimeout, resp.GetStatus(), err, s.Logs())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Stop sends SIGTERM and waits for the process to exit. It fails the test if
// the process does not exit in time or exits with an error.
func (s *Service) Stop(tb testing.TB) {
	tb.Helper()

	if err := s.signal(syscall.SIGTERM); err != nil {
		tb.Fatalf("stop %s: %v", s.Name, err)
	}
	if err := s.wait(stopTimeout); err != nil {
		tb.Fatalf("%s after SIGTERM: %v\n%s", s.Name, err, s.Logs())
	}
}

// Kill sends SIGKILL and waits for the process to exit.
func (s *Service) Kill(tb testing.TB) {
	tb.Helper()

	if err := s.signal(syscall.SIGKILL); err != nil {
		tb.Fatalf("kill %s: %v", s.Name, err)
	}
	// A killed process always "fails"; only a hang matters here.
	_ = s.wait(stopTimeout)
}

func (s *Service) signal(sig os.Signal) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return errors.New("not running")
	}
	return s.cmd.Process.Signal(sig)
}

func (s *Service) wait(timeout time.Duration) error {
	s.mu.Lock()
	cmd, done := s.cmd, s.done
	s.mu.Unlock()
	if cmd == nil {
		return errors.New("not running")
	}

	select {
	case err := <-done:
		s.mu.Lock()
		s.cmd = nil
		s.mu.Unlock()
		return err
	case <-time.After(timeout):
		cmd.Process.Kill()
		<-done
		s.mu.Lock()
		s.cmd = nil
		s.mu.Unlock()
		return fmt.Errorf("did not exit within %s; killed", timeout)
	}
}

// Logs returns everything the process wrote to stdout and stderr so far,
// across restarts.
func (s *Service) Logs() string {
	return s.logs.String()
}

// Dial opens a plaintext gRPC client connection to addr, closed when the test
// ends.
func Dial(tb testing.TB, addr string) *grpc.ClientConn {
	tb.Helper()

	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		tb.Fatalf("grpc.NewClient(%q): %v", addr, err)
	}
	tb.Cleanup(func() { conn.Close() })
	return conn
}

// FreeAddr returns a loopback address with a port that was free a moment ago.
// Another process could take the port before the service binds it; on this
// test-only path that rare race is accepted.
func FreeAddr(tb testing.TB) string {
	tb.Helper()

	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("listen on a free loopback port: %v", err)
	}
	defer l.Close()
	return l.Addr().String()
}

// InCI reports whether the tests run under CI (CI=true), where a missing
// tool is a failure instead of a skip.
func InCI() bool {
	return strings.EqualFold(os.Getenv("CI"), "true")
}

type lockedBuffer struct {
	mu  sync.Mutex // guards buf
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
