// Package faults runs the real services through faults: a PostgreSQL
// restart during writes, a killed auth-service during reads and writes, and
// SIGTERM under load. The tests sit behind the "faults" build tag, so
// `go test ./...` does not run them; `make faults` does.
package faults

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"example.com/todoapp/deploy/systemtest"
)

// defaultPostgresBin is the directory where Debian's postgresql-15 package
// installs initdb, pg_ctl and postgres. PG_BIN overrides it.
const defaultPostgresBin = "/usr/lib/postgresql/15/bin"

// toolTimeout bounds each run of initdb and pg_ctl.
const toolTimeout = 2 * time.Minute

// Postgres is a private PostgreSQL instance in a temporary directory,
// listening on a free port of 127.0.0.1 only. The faults tests stop and
// start it; they never touch a shared server.
type Postgres struct {
	bin     string
	dir     string // parent of the data directory and the socket
	dataDir string
	port    int
	// runAs prefixes every command: runuser as the postgres user when the
	// tests run as root, because initdb and postgres refuse to run as root.
	runAs []string
}

// StartPostgres creates and starts a private PostgreSQL instance and stops
// it when the test ends. It skips the test when the binaries are missing,
// unless CI=true, where that is a failure.
func StartPostgres(tb testing.TB) *Postgres {
	tb.Helper()

	bin := os.Getenv("PG_BIN")
	if bin == "" {
		bin = defaultPostgresBin
	}
	if _, err := os.Stat(filepath.Join(bin, "initdb")); err != nil {
		missing(tb, fmt.Sprintf("PostgreSQL server binaries not found in %s (set PG_BIN to the directory with initdb and pg_ctl): %v", bin, err))
	}

	dir, err := os.MkdirTemp("", "faults-pg-")
	if err != nil {
		tb.Fatalf("create PostgreSQL directory: %v", err)
	}
	tb.Cleanup(func() { os.RemoveAll(dir) })

	p := &Postgres{bin: bin, dir: dir, dataDir: filepath.Join(dir, "data")}
	if os.Geteuid() == 0 {
		p.runAs = asPostgresUser(tb, dir)
	}

	_, portText, _ := net.SplitHostPort(systemtest.FreeAddr(tb))
	p.port, _ = strconv.Atoi(portText)

	ctx, cancel := context.WithTimeout(context.Background(), toolTimeout)
	defer cancel()
	if out, err := p.command(ctx, "initdb", "-D", p.dataDir, "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-instructions").CombinedOutput(); err != nil {
		tb.Fatalf("initdb: %v\n%s", err, out)
	}
	p.Start(tb)
	tb.Cleanup(func() {
		// Immediate: the data directory is deleted next anyway.
		ctx, cancel := context.WithTimeout(context.Background(), toolTimeout)
		defer cancel()
		p.command(ctx, "pg_ctl", "-D", p.dataDir, "-m", "immediate", "-w", "stop").Run()
	})
	return p
}

// asPostgresUser hands dir to the postgres OS user and returns the runuser
// prefix that runs a command as that user.
func asPostgresUser(tb testing.TB, dir string) []string {
	tb.Helper()

	runuser, err := exec.LookPath("runuser")
	if err != nil {
		missing(tb, "running as root needs runuser to start PostgreSQL as the postgres user: "+err.Error())
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		missing(tb, "running as root needs a postgres OS user: "+err.Error())
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	if err := os.Chown(dir, uid, gid); err != nil {
		tb.Fatalf("chown %s to postgres: %v", dir, err)
	}
	return []string{runuser, "-u", "postgres", "--"}
}

func missing(tb testing.TB, reason string) {
	tb.Helper()
	if systemtest.InCI() {
		tb.Fatal(reason)
	}
	tb.Skip(reason)
}

// command prepares a PostgreSQL tool run as the right user and killed when
// ctx ends.
func (p *Postgres) command(ctx context.Context, tool string, args ...string) *exec.Cmd {
	argv := append(append([]string{}, p.runAs...), filepath.Join(p.bin, tool))
	argv = append(argv, args...)
	return exec.CommandContext(ctx, argv[0], argv[1:]...)
}

// URL returns the URL of the instance's "postgres" database.
func (p *Postgres) URL() string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", p.port)
}

// Start starts the server and waits until it accepts connections.
func (p *Postgres) Start(tb testing.TB) {
	tb.Helper()

	ctx, cancel := context.WithTimeout(context.Background(), toolTimeout)
	defer cancel()
	options := fmt.Sprintf("-c listen_addresses=127.0.0.1 -p %d -c unix_socket_directories=%s", p.port, p.dir)
	cmd := p.command(ctx, "pg_ctl", "-D", p.dataDir, "-l", filepath.Join(p.dir, "server.log"), "-o", options, "-w", "-t", "60", "start")
	if out, err := cmd.CombinedOutput(); err != nil {
		log, _ := os.ReadFile(filepath.Join(p.dir, "server.log"))
		tb.Fatalf("pg_ctl start: %v\n%s\n%s", err, out, log)
	}
}

// Stop stops the server in fast mode: it rolls back open transactions,
// closes every connection and writes a checkpoint.
func (p *Postgres) Stop(tb testing.TB) {
	tb.Helper()

	ctx, cancel := context.WithTimeout(context.Background(), toolTimeout)
	defer cancel()
	if out, err := p.command(ctx, "pg_ctl", "-D", p.dataDir, "-m", "fast", "-w", "stop").CombinedOutput(); err != nil {
		tb.Fatalf("pg_ctl stop: %v\n%s", err, out)
	}
}
