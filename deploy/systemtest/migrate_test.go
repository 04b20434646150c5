package systemtest

import (
	"crypto/rand"
	"database/sql"
	"encoding/base64"
	"sync"
	"testing"
)

// TestReplicasStartTogether starts three replicas of each service at the
// same moment on one fresh PostgreSQL database per service, as a Kubernetes
// rollout does, and checks that every replica becomes ready and that each
// migration was applied exactly once.
func TestReplicasStartTogether(t *testing.T) {
	const replicas = 3

	authURL, todoURL := PostgresURL(t), PostgresURL(t)
	kek := make([]byte, 32)
	rand.Read(kek)

	// The todo replicas need a JWKS to become ready, so one auth replica
	// names the issuer and JWKS URL before any of them starts.
	var services []*Service
	var first *Service
	for i := range replicas {
		args := []string{"-database-url", authURL}
		if first != nil {
			args = append(args, "-issuer", "http://"+first.HTTPAddr)
		}
		s := NewAuth(t, args...)
		s.Env = []string{"AUTH_KEK=" + base64.StdEncoding.EncodeToString(kek)}
		if i == 0 {
			first = s
		}
		services = append(services, s)
	}
	for range replicas {
		services = append(services, NewTodo(t, "http://"+first.HTTPAddr, "http://"+first.HTTPAddr+"/.well-known/jwks.json", "-database-url", todoURL))
	}

	for _, s := range services {
		s.StartNoWait(t)
	}
	var wg sync.WaitGroup
	for _, s := range services {
		wg.Go(func() { s.WaitReady(t) })
	}
	wg.Wait()

	for name, url := range map[string]string{"auth": authURL, "todo": todoURL} {
		db, err := sql.Open("postgres", url)
		if err != nil {
			t.Fatalf("open %s database: %v", name, err)
		}
		defer db.Close()

		var total, distinct int
		if err := db.QueryRow("SELECT count(*), count(DISTINCT version) FROM schema_migrations").Scan(&total, &distinct); err != nil {
			t.Fatalf("read schema_migrations of the %s database: %v", name, err)
		}
		if total == 0 {
			t.Errorf("%s database: schema_migrations is empty, want the applied migrations", name)
		}
		if total != distinct {
			t.Errorf("%s database: %d schema_migrations rows for %d versions, want each version once", name, total, distinct)
		}
	}
}
