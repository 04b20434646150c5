//go:build bench

package bench

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/metadata"

	"example.com/todoapp/deploy/systemtest"
	authv1 "example.com/todoapp/proto/gen/auth/v1"
	todov1 "example.com/todoapp/proto/gen/todo/v1"
)

func TestMain(m *testing.M) {
	systemtest.Main(m)
}

// Request counts and concurrency of the scenarios. They are fixed so that
// runs on the same machine compare. BENCH_QUICK=1 divides the counts by 10
// for a smoke run whose numbers are not worth recording.
const (
	healthRequests  = 20000
	readRequests    = 10000
	listRequests    = 5000
	writeRequests   = 5000
	loginRequests   = 400
	refreshRequests = 500
	loadConcurrency = 50
	authConcurrency = 20

	// memoryLogins is the number of concurrent logins of the memory step,
	// all started at once.
	memoryLogins = 200

	// scaleRequests and scaleConcurrency drive the scale step below
	// saturation, so its p50 shows the cost of the query, not queueing.
	scaleRequests    = 5000
	scaleConcurrency = 10

	// seededTodos is how many todos the reading and the writing account
	// own before the todo scenarios start.
	seededTodos = 100

	// maxRunTime bounds one scenario, warm-up included. The slowest,
	// Login, takes under two minutes on two loaded CPUs.
	maxRunTime = 15 * time.Minute

	// argon2MemoryBytes is the memory of one argon2id hash at the
	// auth-service parameters (19456 KiB in password.DefaultParams).
	argon2MemoryBytes = 19 << 20
	// maxConcurrentHashes is the -max-concurrent-hashes the harness
	// passes to auth-service, equal to its default.
	maxConcurrentHashes = 8
)

// truncateOutOnce empties the BENCH_OUT file once per test process.
var truncateOutOnce sync.Once

// harness holds what every step of a run needs.
type harness struct {
	t         *testing.T
	root      string
	ghz       string
	protoset  string
	serverURL string
	kekFile   string
	quick     bool
	out       io.Writer
	// meter, when set, measures the server-side CPU time of each recorded
	// run.
	meter *CPUMeter
}

func newHarness(t *testing.T) *harness {
	t.Helper()

	serverURL := os.Getenv("TEST_DATABASE_URL")
	if serverURL == "" {
		if os.Getenv("REQUIRE_POSTGRES") == "1" || systemtest.InCI() {
			t.Fatal("TEST_DATABASE_URL is not set; the load harness needs a PostgreSQL server")
		}
		t.Skip("TEST_DATABASE_URL is not set; skipping the load harness, which needs a PostgreSQL server " +
			"(for example TEST_DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable)")
	}

	root := systemtest.RepoRoot(t)
	ghz, err := FindGhz(root)
	if err != nil {
		if systemtest.InCI() {
			t.Fatal(err)
		}
		t.Skip(err)
	}

	out := io.Writer(os.Stdout)
	if path := os.Getenv("BENCH_OUT"); path != "" {
		// The first test of the process empties the file, and every test
		// appends its report.
		truncateOutOnce.Do(func() { os.Truncate(path, 0) })
		f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			t.Fatalf("open BENCH_OUT file: %v", err)
		}
		t.Cleanup(func() { f.Close() })
		out = io.MultiWriter(os.Stdout, f)
	}

	return &harness{
		t:         t,
		root:      root,
		ghz:       ghz,
		protoset:  filepath.Join(root, "proto", "gen", "todoapp.binpb"),
		serverURL: serverURL,
		kekFile:   writeKEK(t),
		quick:     os.Getenv("BENCH_QUICK") == "1",
		out:       out,
	}
}

// writeKEK writes a random key-encryption key to a file, so that every
// auth-service the harness starts on the same database can decrypt the
// signing keys of the first one.
func writeKEK(t *testing.T) string {
	t.Helper()

	var kek [32]byte
	rand.Read(kek[:])
	path := filepath.Join(t.TempDir(), "kek")
	if err := os.WriteFile(path, []byte(base64.StdEncoding.EncodeToString(kek[:])), 0o600); err != nil {
		t.Fatalf("write key-encryption key: %v", err)
	}
	return path
}

func (h *harness) requests(n int) int {
	if h.quick {
		return max(n/10, 20)
	}
	return n
}

// startAuth starts auth-service on its own fresh PostgreSQL database.
func (h *harness) startAuth(databaseURL string) *systemtest.Service {
	return systemtest.StartAuth(h.t,
		"-database-url", databaseURL,
		"-kek-file", h.kekFile,
		"-access-token-ttl", "1h",
		"-max-concurrent-hashes", fmt.Sprint(maxConcurrentHashes),
		"-log-level", "warn",
	)
}

// startTodo starts todo-service on databaseURL, trusting auth, with extra
// flags for the token-check mode.
func (h *harness) startTodo(auth *systemtest.Service, databaseURL string, extra ...string) *systemtest.Service {
	args := append([]string{"-database-url", databaseURL, "-log-level", "warn"}, extra...)
	return systemtest.StartTodo(h.t, auth, args...)
}

// run runs one load, after a short warm-up run that is not recorded when
// warmUp is true, and fails the test when a call failed.
func (h *harness) run(ctx context.Context, l Load, mode string, warmUp bool) Row {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(ctx, maxRunTime)
	defer cancel()

	if warmUp {
		warm := l
		warm.Name = l.Name + " (warm-up)"
		warm.Requests = min(200, l.Requests)
		if _, err := RunGhz(ctx, h.ghz, warm); err != nil {
			h.t.Fatal(err)
		}
	}

	var before CPUSample
	if h.meter != nil {
		var err error
		if before, err = h.meter.Sample(ctx); err != nil {
			h.t.Fatal(err)
		}
	}
	res, err := RunGhz(ctx, h.ghz, l)
	if err != nil {
		h.t.Fatal(err)
	}
	row := Row{Scenario: l.Name, Mode: mode, Concurrency: l.Concurrency, Result: res}
	if h.meter != nil {
		usage, err := h.meter.Since(ctx, before)
		if err != nil {
			h.t.Fatal(err)
		}
		row.CPU = &usage
	}
	if res.Errors > 0 {
		h.t.Errorf("%s (%s): %d of %d calls failed: %v", l.Name, mode, res.Errors, res.Requests, res.Codes)
	}
	h.t.Logf("%s %s: %.0f req/s, p50 %s, p99 %s, %d errors", l.Name, mode, res.RPS, res.P50, res.P99, res.Errors)
	return row
}

// newMeter returns a CPU meter for the services and for the PostgreSQL
// backends of the databases at databaseURLs.
func (h *harness) newMeter(admin *sql.DB, services []*systemtest.Service, databaseURLs ...string) *CPUMeter {
	h.t.Helper()

	pids := make([]int, 0, len(services))
	for _, s := range services {
		pid, err := FindPID(s.GRPCAddr)
		if err != nil {
			h.t.Fatalf("find the process of %s: %v", s.Name, err)
		}
		pids = append(pids, pid)
	}
	// PostgreSQL's CPU time comes from /proc, so it is measured only when
	// the server runs on this machine.
	var names []string
	if isLocalPostgres(h.serverURL) {
		for _, raw := range databaseURLs {
			u, err := url.Parse(raw)
			if err != nil {
				h.t.Fatalf("parse database URL: %v", err)
			}
			names = append(names, strings.TrimPrefix(u.Path, "/"))
		}
	}
	return NewCPUMeter(admin, pids, names)
}

func signUp(ctx context.Context, t *testing.T, client authv1.AuthServiceClient, email string) Account {
	t.Helper()

	password := "load harness password " + email
	resp, err := client.SignUp(ctx, &authv1.SignUpRequest{Email: email, Password: password})
	if err != nil {
		t.Fatalf("SignUp(%s): %v", email, err)
	}
	return Account{
		ID:           resp.GetUser().GetId(),
		Email:        email,
		Password:     password,
		AccessToken:  resp.GetTokens().GetAccessToken(),
		RefreshToken: resp.GetTokens().GetRefreshToken(),
	}
}

func withToken(ctx context.Context, token string) context.Context {
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)
}

// createTodos creates count todos for a through the todo-service API and
// returns their ids.
func createTodos(ctx context.Context, t *testing.T, client todov1.TodoServiceClient, a Account, count int) []string {
	t.Helper()

	ids := make([]string, 0, count)
	for i := range count {
		resp, err := client.CreateTodo(withToken(ctx, a.AccessToken), &todov1.CreateTodoRequest{
			Todo: &todov1.Todo{Title: fmt.Sprintf("seeded todo %d", i), Description: "created before the load"},
		})
		if err != nil {
			t.Fatalf("CreateTodo %d for %s: %v", i, a.Email, err)
		}
		ids = append(ids, resp.GetTodo().GetId())
	}
	return ids
}

// loginMany logs a in count times, 4 at a time, and returns the refresh
// token of each new session. A refresh token works once, so the Refresh
// scenario needs one session per request.
func loginMany(ctx context.Context, t *testing.T, client authv1.AuthServiceClient, a Account, count int) []string {
	t.Helper()

	tokens := make([]string, count)
	errs := make([]error, count)
	slots := make(chan struct{}, 4)
	var wg sync.WaitGroup
	for i := range count {
		wg.Go(func() {
			slots <- struct{}{}
			defer func() { <-slots }()

			resp, err := client.Login(ctx, &authv1.LoginRequest{Email: a.Email, Password: a.Password})
			if err != nil {
				errs[i] = fmt.Errorf("login %d of %s: %w", i, a.Email, err)
				return
			}
			tokens[i] = resp.GetTokens().GetRefreshToken()
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	return tokens
}

// TestBench runs every scenario once against the real binaries on
// PostgreSQL and prints the results table, the ratios from this run and the
// memory of auth-service during concurrent logins.
func TestBench(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 55*time.Minute)
	defer cancel()
	h := newHarness(t)
	fmt.Fprintf(h.out, "\n## Machine at the start of the run\n\n%s\n", DescribeMachine())

	authDB := CreateDatabase(t, h.serverURL, "auth")
	todoDB := CreateDatabase(t, h.serverURL, "todo")
	auth := h.startAuth(authDB)
	authClient := authv1.NewAuthServiceClient(systemtest.Dial(t, auth.GRPCAddr))

	reader := signUp(ctx, t, authClient, "reader@bench.example.com")
	writer := signUp(ctx, t, authClient, "writer@bench.example.com")

	memory := h.measureLoginMemory(ctx)

	var rows []Row
	offline := h.startTodo(auth, todoDB)
	todoClient := todov1.NewTodoServiceClient(systemtest.Dial(t, offline.GRPCAddr))
	readerIDs := createTodos(ctx, t, todoClient, reader, seededTodos)
	writerIDs := createTodos(ctx, t, todoClient, writer, seededTodos)

	// Every todo scenario is charged with both services and both
	// databases, so offline and introspect mode compare on equal terms.
	admin := OpenDB(t, h.serverURL)
	h.meter = h.newMeter(admin, []*systemtest.Service{auth, offline}, authDB, todoDB)

	rows = append(rows, h.run(ctx, Load{
		Name:        "Health.Check",
		Call:        "grpc.health.v1.Health/Check",
		Addr:        offline.GRPCAddr,
		Data:        map[string]string{"service": ""},
		Requests:    h.requests(healthRequests),
		Concurrency: loadConcurrency,
	}, "", true))
	rows = append(rows, h.todoScenarios(ctx, offline.GRPCAddr, "offline", reader, writer, readerIDs, writerIDs)...)
	offline.Stop(t)

	if args, reason := h.introspectArgs(auth); args == nil {
		fmt.Fprintf(h.out, "\nSKIPPED introspect mode: %s\n", reason)
		t.Logf("introspect mode skipped: %s", reason)
	} else {
		introspect := h.startTodo(auth, todoDB, args...)
		h.meter = h.newMeter(admin, []*systemtest.Service{auth, introspect}, authDB, todoDB)
		rows = append(rows, h.todoScenarios(ctx, introspect.GRPCAddr, "introspect", reader, writer, readerIDs, writerIDs)...)
		introspect.Stop(t)
	}

	h.meter = h.newMeter(admin, []*systemtest.Service{auth}, authDB)

	rows = append(rows, h.run(ctx, Load{
		Name:        "Login",
		Call:        "auth.v1.AuthService/Login",
		Addr:        auth.GRPCAddr,
		Protoset:    h.protoset,
		Data:        map[string]string{"email": reader.Email, "password": reader.Password},
		Requests:    h.requests(loginRequests),
		Concurrency: authConcurrency,
	}, "", true))

	refreshTokens := loginMany(ctx, t, authClient, writer, h.requests(refreshRequests))
	refreshData := make([]map[string]string, len(refreshTokens))
	for i, token := range refreshTokens {
		refreshData[i] = map[string]string{"refresh_token": token}
	}
	rows = append(rows, h.run(ctx, Load{
		Name:        "Refresh",
		Call:        "auth.v1.AuthService/Refresh",
		Addr:        auth.GRPCAddr,
		Protoset:    h.protoset,
		Data:        refreshData,
		Requests:    len(refreshData),
		Concurrency: authConcurrency,
	}, "", false))

	serialSign, parallelSign, err := SigningRate()
	if err != nil {
		t.Fatal(err)
	}

	fmt.Fprintf(h.out, "\n## Results (load average at the end: %s)\n\n", LoadAverage())
	WriteTable(h.out, rows)
	h.printRatios(rows, serialSign, parallelSign)
	memory.print(h.out)
}

// TestBenchScale compares one user's GetTodo and ListTodos latency with
// 1,000 and with 1,000,000 todos in the table, and prints the query plans.
// BENCH_SKIP_SCALE=1 skips it.
func TestBenchScale(t *testing.T) {
	if os.Getenv("BENCH_SKIP_SCALE") == "1" {
		t.Skip("BENCH_SKIP_SCALE=1: skipping the scale step with a million todos")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	h := newHarness(t)

	auth := h.startAuth(CreateDatabase(t, h.serverURL, "auth"))
	authClient := authv1.NewAuthServiceClient(systemtest.Dial(t, auth.GRPCAddr))
	reader := signUp(ctx, t, authClient, "reader@bench.example.com")
	h.scaleStep(ctx, auth, reader)
}

// todoScenarios runs GetTodo, ListTodos, CreateTodo and UpdateTodo against
// the todo-service at addr. reader's todos are read, writer's are written,
// so the writes do not change what the reads return.
func (h *harness) todoScenarios(ctx context.Context, addr, mode string, reader, writer Account, readerIDs, writerIDs []string) []Row {
	getData := make([]map[string]string, len(readerIDs))
	for i, id := range readerIDs {
		getData[i] = map[string]string{"id": id}
	}
	updateData := make([]map[string]any, len(writerIDs))
	for i, id := range writerIDs {
		updateData[i] = map[string]any{
			"todo":        map[string]string{"id": id, "title": fmt.Sprintf("updated by the load %d", i)},
			"update_mask": map[string][]string{"paths": {"title"}},
		}
	}

	loads := []Load{
		{Name: "GetTodo", Call: "todo.v1.TodoService/GetTodo", Data: getData, Token: reader.AccessToken, Requests: h.requests(readRequests)},
		{Name: "ListTodos", Call: "todo.v1.TodoService/ListTodos", Data: map[string]int{"page_size": 20}, Token: reader.AccessToken, Requests: h.requests(listRequests)},
		{Name: "CreateTodo", Call: "todo.v1.TodoService/CreateTodo", Data: map[string]any{"todo": map[string]string{"title": "created by the load", "description": "one of many"}}, Token: writer.AccessToken, Requests: h.requests(writeRequests)},
		{Name: "UpdateTodo", Call: "todo.v1.TodoService/UpdateTodo", Data: updateData, Token: writer.AccessToken, Requests: h.requests(writeRequests)},
	}
	var rows []Row
	for _, l := range loads {
		l.Addr = addr
		l.Protoset = h.protoset
		l.Concurrency = loadConcurrency
		rows = append(rows, h.run(ctx, l, mode, true))
	}
	return rows
}

// introspectArgs returns the todo-service flags of introspect mode, or nil
// and the reason when the binary does not offer the mode.
func (h *harness) introspectArgs(auth *systemtest.Service) ([]string, string) {
	_, todoBin := systemtest.Binaries(h.t)
	flags, err := HelpFlags(todoBin)
	if err != nil {
		return nil, err.Error()
	}
	if !flags["token-check"] {
		return nil, "todo-service has no -token-check flag"
	}
	// Take the first flag that names introspection and an address
	// (-introspect-addr today), so a rename does not silently drop the mode.
	names := make([]string, 0, len(flags))
	for name := range flags {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		if !strings.Contains(name, "introspect") && !strings.HasPrefix(name, "auth-") {
			continue
		}
		if strings.HasSuffix(name, "addr") || strings.HasSuffix(name, "address") || strings.HasSuffix(name, "target") {
			return []string{"-token-check", "introspect", "-" + name, auth.GRPCAddr}, ""
		}
	}
	return nil, "todo-service has -token-check but no flag for the auth-service gRPC address that the harness knows"
}

func findRow(rows []Row, scenario, mode string) (Row, bool) {
	for _, r := range rows {
		if r.Scenario == scenario && r.Mode == mode {
			return r, true
		}
	}
	return Row{}, false
}

func (h *harness) printRatios(rows []Row, serialSign, parallelSign float64) {
	fmt.Fprintf(h.out, "\n## Ratios (same run)\n\n")

	health, _ := findRow(rows, "Health.Check", "")
	get, _ := findRow(rows, "GetTodo", "offline")
	fmt.Fprintf(h.out, "- GetTodo offline / health floor: %.2f of the throughput, %.2fx the p50 latency\n",
		get.RPS/health.RPS, float64(get.P50)/float64(health.P50))

	for _, scenario := range []string{"GetTodo", "ListTodos"} {
		off, _ := findRow(rows, scenario, "offline")
		in, ok := findRow(rows, scenario, "introspect")
		if !ok {
			fmt.Fprintf(h.out, "- %s offline / introspect: not measured (introspect mode skipped)\n", scenario)
			continue
		}
		fmt.Fprintf(h.out, "- %s offline / introspect throughput: %.2fx (target: at least 2x)\n", scenario, off.RPS/in.RPS)
		offCPU, okOff := off.CPUPerCall()
		inCPU, okIn := in.CPUPerCall()
		if okOff && okIn {
			offServer, inServer, measuredParts := offCPU.Services, inCPU.Services, "services"
			if offCPU.PostgresMeasured && inCPU.PostgresMeasured {
				offServer, inServer, measuredParts = offServer+offCPU.Postgres, inServer+inCPU.Postgres, "services and PostgreSQL"
			}
			if offServer > 0 {
				fmt.Fprintf(h.out, "- %s introspect / offline server CPU per call (%s): %.2fx (%s µs against %s µs; ghz itself used %s µs and %s µs per call)\n",
					scenario, measuredParts, float64(inServer)/float64(offServer), micros(inServer), micros(offServer),
					micros(in.ClientCPU/time.Duration(in.Requests)), micros(off.ClientCPU/time.Duration(off.Requests)))
			}
		}

	}

	refresh, _ := findRow(rows, "Refresh", "")
	fmt.Fprintf(h.out, "- bare RSA-2048 PKCS#1 v1.5 signing: %.0f/s on one goroutine, %.0f/s on %d goroutines\n",
		serialSign, parallelSign, runtime.GOMAXPROCS(0))
	fmt.Fprintf(h.out, "- Refresh / bare signing rate: %.3f (against all cores), %.3f (against one goroutine)\n",
		refresh.RPS/parallelSign, refresh.RPS/serialSign)
}

// loginMemory is the result of the memory step.
type loginMemory struct {
	before, after Memory
	bound         int64
	result        Result
}

func (m loginMemory) print(w io.Writer) {
	fmt.Fprintf(w, "\n## Memory of auth-service during %d concurrent logins\n\n", memoryLogins)
	fmt.Fprintf(w, "- RSS before: %.1f MiB; peak RSS (VmHWM) before: %.1f MiB\n", mib(m.before.RSS), mib(m.before.Peak))
	fmt.Fprintf(w, "- peak RSS (VmHWM) after: %.1f MiB; bound: %.1f MiB = RSS before + 3 x %d hashes x 19 MiB\n",
		mib(m.after.Peak), mib(m.bound), maxConcurrentHashes)
	fmt.Fprintf(w, "- logins: %d, %.1f/s, p50 %s ms, p99 %s ms, errors %d\n",
		m.result.Requests, m.result.RPS, millis(m.result.P50), millis(m.result.P99), m.result.Errors)
}

func mib(b int64) float64 {
	return float64(b) / (1 << 20)
}

// measureLoginMemory sends memoryLogins logins at once to a freshly started
// auth-service and compares its peak RSS with the bound that the hashing
// limit implies. At most maxConcurrentHashes hashes of 19 MiB are live at
// once. Go's collector (GOGC=100) lets the heap grow to twice the live size,
// and the runtime returns freed pages to the OS only gradually, so the bound
// allows three times the live hash memory above the RSS before the load.
// The factor is an estimate, not a guarantee of the Go runtime. Without the
// limit, 200 hashes would need 3.7 GiB.
func (h *harness) measureLoginMemory(ctx context.Context) loginMemory {
	// A separate auth-service on its own database, so that VmHWM covers
	// only start-up and this load.
	auth := h.startAuth(CreateDatabase(h.t, h.serverURL, "memory"))
	client := authv1.NewAuthServiceClient(systemtest.Dial(h.t, auth.GRPCAddr))
	a := signUp(ctx, h.t, client, "memory@bench.example.com")

	pid, err := FindPID(auth.GRPCAddr)
	if err != nil {
		h.t.Fatal(err)
	}
	before, err := ReadMemory(pid)
	if err != nil {
		h.t.Fatal(err)
	}

	res, err := RunGhz(ctx, h.ghz, Load{
		Name:        "Login x200 at once",
		Call:        "auth.v1.AuthService/Login",
		Addr:        auth.GRPCAddr,
		Protoset:    h.protoset,
		Data:        map[string]string{"email": a.Email, "password": a.Password},
		Requests:    memoryLogins,
		Concurrency: memoryLogins,
		Timeout:     2 * time.Minute,
	})
	if err != nil {
		h.t.Fatal(err)
	}
	after, err := ReadMemory(pid)
	if err != nil {
		h.t.Fatal(err)
	}

	m := loginMemory{
		before: before,
		after:  after,
		bound:  before.RSS + 3*maxConcurrentHashes*argon2MemoryBytes,
		result: res,
	}
	if res.Errors > 0 {
		h.t.Errorf("%d of %d concurrent logins failed: %v", res.Errors, res.Requests, res.Codes)
	}
	auth.Stop(h.t)
	if after.Peak > m.bound {
		h.t.Errorf("auth-service peak RSS during %d concurrent logins = %.1f MiB, want at most %.1f MiB",
			memoryLogins, mib(after.Peak), mib(m.bound))
	}
	return m
}

// scaleStep compares one user's GetTodo and ListTodos latency at two table
// sizes, on a database of its own. The small table has 1,000 todos: 100 of
// the user's and 900 of 9 other users. The large one adds 999,000 todos, so
// 1,000,000 over 10,000 users.
func (h *harness) scaleStep(ctx context.Context, auth *systemtest.Service, reader Account) {
	t := h.t
	const (
		userTodos  = 100
		smallRows  = 900
		smallUsers = 9
		largeRows  = 999_900
		largeUsers = 9_999
	)

	scaleURL := CreateDatabase(t, h.serverURL, "scale")
	todo := h.startTodo(auth, scaleURL)
	db := OpenDB(t, scaleURL)

	ids, err := SeedUserTodos(ctx, db, reader.ID, userTodos)
	if err != nil {
		t.Fatal(err)
	}
	if err := SeedSyntheticTodos(ctx, db, 0, smallRows, smallUsers); err != nil {
		t.Fatal(err)
	}
	small := h.scaleRun(ctx, db, todo.GRPCAddr, reader, ids, "1k")

	start := time.Now()
	if err := SeedSyntheticTodos(ctx, db, smallRows, largeRows-smallRows, largeUsers); err != nil {
		t.Fatal(err)
	}
	seedTime := time.Since(start)
	large := h.scaleRun(ctx, db, todo.GRPCAddr, reader, ids, "1M")

	fmt.Fprintf(h.out, "\n## Scale: one user's reads with 1,000 vs 1,000,000 todos in the table\n\n")
	fmt.Fprintf(h.out, "Load average at the end: %s.\n\n", LoadAverage())
	fmt.Fprintf(h.out, "Seeding 999,000 rows with generate_series plus VACUUM ANALYZE took %s.\n\n", seedTime.Round(time.Second))
	WriteTable(h.out, append(small.rows, large.rows...))
	fmt.Fprintln(h.out)
	for i, name := range []string{"GetTodo", "ListTodos"} {
		ratio := float64(large.rows[i].P50) / float64(small.rows[i].P50)
		fmt.Fprintf(h.out, "- %s p50 1M / 1k: %.2fx (target: at most 1.5x)\n", name, ratio)
		if ratio > 1.5 {
			t.Errorf("%s p50 with 1M todos is %.2fx that with 1k, want at most 1.5x", name, ratio)
		}
	}
	for _, run := range []scaleResult{small, large} {
		for _, plan := range []struct {
			query, index string
			// bound, when set, is a column that the plan's index
			// condition must name, so that the cursor limits the index
			// scan instead of filtering its rows.
			bound string
			plans Plans
		}{
			{"GetTodo", "todos_pkey", "", run.getPlans},
			{"ListTodos (page of 20)", "todos_user_create_idx", "", run.listPlans},
			{fmt.Sprintf("ListTodos (page of 20 after %d todos)", laterPageOffset), "todos_user_create_idx", "create_time", run.laterPlans},
		} {
			for _, kind := range []struct{ name, text string }{{"custom", plan.plans.Custom}, {"generic", plan.plans.Generic}} {
				fmt.Fprintf(h.out, "\nEXPLAIN ANALYZE of %s, %s plan, with %s rows (%d in the table):\n\n```\n%s\n```\n",
					plan.query, kind.name, run.label, run.count, kind.text)
				if !strings.Contains(kind.text, plan.index) {
					t.Errorf("%s %s plan with %s rows does not use %s:\n%s", plan.query, kind.name, run.label, plan.index, kind.text)
				}
				if plan.bound != "" && !indexCondNames(kind.text, plan.bound) {
					t.Errorf("%s %s plan with %s rows has no %s in its index condition:\n%s", plan.query, kind.name, run.label, plan.bound, kind.text)
				}
			}
		}
	}
	todo.Stop(t)
}

type scaleResult struct {
	label      string
	count      int64
	rows       []Row
	getPlans   Plans
	listPlans  Plans
	laterPlans Plans
}

// indexCondNames reports whether an "Index Cond:" line of plan contains
// column.
func indexCondNames(plan, column string) bool {
	for _, line := range strings.Split(plan, "\n") {
		if _, cond, ok := strings.Cut(line, "Index Cond:"); ok && strings.Contains(cond, column) {
			return true
		}
	}
	return false
}

// laterPageOffset is the position of the cursor todo for the later-page plan
// of the scale step.
const laterPageOffset = 60

func (h *harness) scaleRun(ctx context.Context, db *sql.DB, addr string, reader Account, ids []string, label string) scaleResult {
	t := h.t

	count, err := CountTodos(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	getData := make([]map[string]string, len(ids))
	for i, id := range ids {
		getData[i] = map[string]string{"id": id}
	}
	res := scaleResult{label: label, count: count}
	res.rows = append(res.rows, h.run(ctx, Load{
		Name: "GetTodo " + label, Call: "todo.v1.TodoService/GetTodo", Addr: addr, Protoset: h.protoset,
		Data: getData, Token: reader.AccessToken, Requests: h.requests(scaleRequests), Concurrency: scaleConcurrency,
	}, "offline", true))
	res.rows = append(res.rows, h.run(ctx, Load{
		Name: "ListTodos " + label, Call: "todo.v1.TodoService/ListTodos", Addr: addr, Protoset: h.protoset,
		Data: map[string]int{"page_size": 20}, Token: reader.AccessToken, Requests: h.requests(scaleRequests), Concurrency: scaleConcurrency,
	}, "offline", true))

	if res.getPlans, err = ExplainGet(ctx, db, reader.ID, ids[len(ids)/2]); err != nil {
		t.Fatal(err)
	}
	if res.listPlans, err = ExplainList(ctx, db, reader.ID, 20); err != nil {
		t.Fatal(err)
	}
	afterTime, afterID, err := TodoAt(ctx, db, reader.ID, laterPageOffset-1)
	if err != nil {
		t.Fatal(err)
	}
	if res.laterPlans, err = ExplainListAfter(ctx, db, reader.ID, afterTime, afterID, 20); err != nil {
		t.Fatal(err)
	}
	return res
}
