package bench

import (
	"context"
	"database/sql"
	"fmt"
	"net"
	"net/url"
	"strings"
	"time"

	"github.com/lib/pq"
)

// CPUMeter measures the CPU time that a scenario costs on the server side:
// the service processes, and the PostgreSQL backends connected to the
// scenario's databases. Unlike requests per second, CPU time per call does
// not include the work of the load generator, which shares the machine's
// CPUs, and depends less on other processes that load the machine.
//
// NOTE: A backend that exits during a run takes its CPU time with it, so
// PostgreSQL time is a lower bound when the services' pools close
// connections under load. Their pools keep every connection idle, so this
// does not happen in the scenarios here.
type CPUMeter struct {
	admin     *sql.DB
	pids      []int
	databases []string
}

// NewCPUMeter returns a meter for the processes pids and the PostgreSQL
// backends of databases, which it lists through admin. The backends must
// run on this machine, because their CPU time comes from /proc. With no
// databases, the meter leaves PostgreSQL unmeasured.
func NewCPUMeter(admin *sql.DB, pids []int, databases []string) *CPUMeter {
	return &CPUMeter{admin: admin, pids: pids, databases: databases}
}

// CPUSample is a reading of a CPUMeter.
type CPUSample struct {
	services time.Duration
	backends map[int]time.Duration
}

// CPUUsage is the CPU time spent between two samples.
type CPUUsage struct {
	// Services is the CPU time of the service processes.
	Services time.Duration
	// Postgres is the CPU time of the PostgreSQL backends, valid when
	// PostgresMeasured is true.
	Postgres         time.Duration
	PostgresMeasured bool
}

// Sample reads the CPU times now.
func (m *CPUMeter) Sample(ctx context.Context) (CPUSample, error) {
	s := CPUSample{backends: map[int]time.Duration{}}
	for _, pid := range m.pids {
		t, err := ReadCPUTime(pid)
		if err != nil {
			return CPUSample{}, err
		}
		s.services += t
	}

	if len(m.databases) == 0 {
		return s, nil
	}
	rows, err := m.admin.QueryContext(ctx,
		`SELECT pid FROM pg_stat_activity WHERE datname = ANY($1)`, pq.Array(m.databases))
	if err != nil {
		return CPUSample{}, fmt.Errorf("list PostgreSQL backends: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var pid int
		if err := rows.Scan(&pid); err != nil {
			return CPUSample{}, fmt.Errorf("list PostgreSQL backends: %w", err)
		}
		t, err := ReadCPUTime(pid)
		if err != nil {
			continue // the backend exited after the query listed it
		}
		s.backends[pid] = t
	}
	if err := rows.Err(); err != nil {
		return CPUSample{}, fmt.Errorf("list PostgreSQL backends: %w", err)
	}
	return s, nil
}

// Since returns the CPU time spent from before until now. A backend that
// started after before counts from zero.
func (m *CPUMeter) Since(ctx context.Context, before CPUSample) (CPUUsage, error) {
	now, err := m.Sample(ctx)
	if err != nil {
		return CPUUsage{}, err
	}
	usage := CPUUsage{Services: now.services - before.services, PostgresMeasured: len(m.databases) > 0}
	for pid, t := range now.backends {
		usage.Postgres += t - before.backends[pid]
	}
	return usage, nil
}

// isLocalPostgres reports whether the PostgreSQL server at rawURL runs on
// this machine: a loopback host, or no host, which means the local Unix
// socket.
func isLocalPostgres(rawURL string) bool {
	u, err := url.Parse(rawURL)
	if err != nil {
		return false
	}
	host := u.Hostname()
	if host == "" {
		host = u.Query().Get("host")
	}
	if host == "" || host == "localhost" || strings.HasPrefix(host, "/") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
