package systemtest

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"database/sql"
	"encoding/base64"
	"encoding/hex"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"example.com/todoapp/proto/accesstoken"
	authv1 "example.com/todoapp/proto/gen/auth/v1"
	todov1 "example.com/todoapp/proto/gen/todo/v1"
)

// TestReadinessFollowsDatabase blocks new connections to each service's
// PostgreSQL database and ends the open ones, and checks that "readiness"
// turns NOT_SERVING while the process stays up, then SERVING again once
// the database accepts connections.
func TestReadinessFollowsDatabase(t *testing.T) {
	authURL, todoURL := PostgresURL(t), PostgresURL(t)
	kek := make([]byte, 32)
	rand.Read(kek)

	auth := NewAuth(t, "-database-url", authURL)
	auth.Env = []string{"AUTH_KEK=" + base64.StdEncoding.EncodeToString(kek)}
	auth.Start(t)
	todo := StartTodo(t, auth, "-database-url", todoURL)

	admin, err := sql.Open("postgres", PostgresAdminURL(t))
	if err != nil {
		t.Fatalf("open TEST_DATABASE_URL: %v", err)
	}
	defer admin.Close()

	for _, target := range []struct {
		service *Service
		dbURL   string
	}{{auth, authURL}, {todo, todoURL}} {
		name := databaseName(t, target.dbURL)
		health := healthpb.NewHealthClient(Dial(t, target.service.GRPCAddr))

		setConnections(t, admin, name, false)
		waitHealth(t, health, "readiness", healthpb.HealthCheckResponse_NOT_SERVING)
		resp, err := health.Check(context.Background(), &healthpb.HealthCheckRequest{Service: ""})
		if err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			t.Errorf("%s overall health with its database down = %v, %v; want SERVING", target.service.Name, resp.GetStatus(), err)
		}

		setConnections(t, admin, name, true)
		waitHealth(t, health, "readiness", healthpb.HealthCheckResponse_SERVING)
	}
}

// setConnections allows or blocks new connections to the database name and,
// when blocking, ends the connections already open.
func setConnections(t *testing.T, admin *sql.DB, name string, allow bool) {
	t.Helper()

	if _, err := admin.Exec("ALTER DATABASE " + name + " ALLOW_CONNECTIONS " + strconv.FormatBool(allow)); err != nil {
		t.Fatalf("set ALLOW_CONNECTIONS %v on %s: %v", allow, name, err)
	}
	if allow {
		return
	}
	if _, err := admin.Exec("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()", name); err != nil {
		t.Fatalf("end the connections to %s: %v", name, err)
	}
}

func databaseName(t *testing.T, dbURL string) string {
	t.Helper()

	u, err := url.Parse(dbURL)
	if err != nil {
		t.Fatalf("parse database URL: %v", err)
	}
	return strings.TrimPrefix(u.Path, "/")
}

// TestUnknownKidFloodFetchesOnce sends thousands of tokens, each with a
// random kid, to the real todo-service and checks from its metrics that
// they caused at most one JWKS fetch, while a valid token keeps working.
func TestUnknownKidFloodFetchesOnce(t *testing.T) {
	const (
		floodTokens = 3000
		workers     = 32
	)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	auth := StartAuth(t)
	todo := StartTodo(t, auth)
	authClient := authv1.NewAuthServiceClient(Dial(t, auth.GRPCAddr))
	todoClient := todov1.NewTodoServiceClient(Dial(t, todo.GRPCAddr))

	resp, err := authClient.SignUp(ctx, &authv1.SignUpRequest{Email: "flood@example.com", Password: "a long enough password"})
	if err != nil {
		t.Fatalf("SignUp: %v", err)
	}
	valid := resp.GetTokens().GetAccessToken()

	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	flood := make([]string, floodTokens)
	for i := range flood {
		kid := make([]byte, 16)
		rand.Read(kid)
		flood[i], err = accesstoken.Sign(accesstoken.Claims{
			Issuer:    "http://" + auth.HTTPAddr,
			Subject:   uuid.NewString(),
			Audience:  []string{"todo-service"},
			Expiry:    now.Add(5 * time.Minute),
			IssuedAt:  now,
			NotBefore: now,
			ID:        uuid.NewString(),
			SessionID: uuid.NewString(),
		}, accesstoken.SigningKey{ID: hex.EncodeToString(kid), Key: key})
		if err != nil {
			t.Fatalf("Sign: %v", err)
		}
	}

	before := metricSum(t, todo, "todo_jwks_fetches_total")

	var wg sync.WaitGroup
	var mu sync.Mutex
	var wrongCodes, validFailures int
	next := make(chan string)
	for range workers {
		wg.Go(func() {
			for token := range next {
				_, err := todoClient.ListTodos(withToken(ctx, token), &todov1.ListTodosRequest{PageSize: 1})
				if status.Code(err) != codes.Unauthenticated {
					mu.Lock()
					wrongCodes++
					mu.Unlock()
				}
			}
		})
	}
	for i, token := range flood {
		next <- token
		if i%100 == 0 {
			if _, err := todoClient.ListTodos(withToken(ctx, valid), &todov1.ListTodosRequest{PageSize: 1}); err != nil {
				validFailures++
			}
		}
	}
	close(next)
	wg.Wait()

	if wrongCodes > 0 {
		t.Errorf("%d of %d tokens with unknown kids got a code other than UNAUTHENTICATED", wrongCodes, floodTokens)
	}
	if validFailures > 0 {
		t.Errorf("%d calls with the valid token failed during the flood", validFailures)
	}
	fetches := metricSum(t, todo, "todo_jwks_fetches_total") - before
	t.Logf("%d tokens with random kids caused %v JWKS fetches", floodTokens, fetches)
	// One refetch for the first unknown kid; the 30 s cooldown suppresses
	// the rest. A scheduled refresh may add one more.
	if fetches > 2 {
		t.Errorf("the flood caused %v JWKS fetches, want at most 2", fetches)
	}
	if suppressed := metricSum(t, todo, "todo_jwks_unknown_kid_refetches_suppressed_total"); suppressed == 0 {
		t.Error("no unknown-kid refetch was suppressed by the cooldown; the flood did not reach the cache")
	}
}

// metricSum returns the sum of every sample of the named metric on the
// service's /metrics page.
func metricSum(t *testing.T, s *Service, name string) float64 {
	t.Helper()

	resp, err := http.Get("http://" + s.HTTPAddr + "/metrics")
	if err != nil {
		t.Fatalf("GET %s/metrics: %v", s.Name, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read %s/metrics: %v", s.Name, err)
	}

	var sum float64
	found := false
	for _, line := range strings.Split(string(body), "\n") {
		if !strings.HasPrefix(line, name+"{") && !strings.HasPrefix(line, name+" ") {
			continue
		}
		fields := strings.Fields(line)
		value, err := strconv.ParseFloat(fields[len(fields)-1], 64)
		if err != nil {
			t.Fatalf("parse metric line %q: %v", line, err)
		}
		sum += value
		found = true
	}
	if !found {
		t.Fatalf("%s/metrics has no %s", s.Name, name)
	}
	return sum
}
