//go:build faults

package faults

import (
	"context"
	"fmt"
	"os"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	"example.com/todoapp/deploy/bench"
	"example.com/todoapp/deploy/systemtest"
	authv1 "example.com/todoapp/proto/gen/auth/v1"
	todov1 "example.com/todoapp/proto/gen/todo/v1"
)

func TestMain(m *testing.M) {
	systemtest.Main(m)
}

// short reports whether FAULTS_SHORT=1 selects the short form that CI runs:
// the same faults and checks with fewer requests.
func short() bool {
	return os.Getenv("FAULTS_SHORT") == "1"
}

// scaled returns full, or a quarter of it in the short form.
func scaled(full int) int {
	if short() {
		return max(full/4, 1)
	}
	return full
}

// rpcTimeout bounds every call a test makes. It is longer than the
// PostgreSQL outage, so a call that waits for the database fails by the
// service's choice, not by the client's deadline.
const rpcTimeout = 10 * time.Second

func signUp(ctx context.Context, t *testing.T, client authv1.AuthServiceClient, email string) string {
	t.Helper()

	resp, err := client.SignUp(ctx, &authv1.SignUpRequest{Email: email, Password: "fault run password " + email})
	if err != nil {
		t.Fatalf("SignUp(%s): %v", email, err)
	}
	return resp.GetTokens().GetAccessToken()
}

func withToken(ctx context.Context, token string) context.Context {
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)
}

func createTodos(ctx context.Context, t *testing.T, client todov1.TodoServiceClient, token string, count int) []string {
	t.Helper()

	ids := make([]string, 0, count)
	for i := range count {
		resp, err := client.CreateTodo(withToken(ctx, token), &todov1.CreateTodoRequest{
			Todo: &todov1.Todo{Title: fmt.Sprintf("seeded %d", i)},
		})
		if err != nil {
			t.Fatalf("CreateTodo %d: %v", i, err)
		}
		ids = append(ids, resp.GetTodo().GetId())
	}
	return ids
}

// call is the outcome of one RPC of a load.
type call struct {
	method     string
	start, end time.Time
	code       codes.Code
	message    string
}

// calls collects the outcomes of a load from several goroutines.
type calls struct {
	mu   sync.Mutex // guards list
	list []call
}

func (c *calls) add(method string, start time.Time, err error) {
	st := status.Convert(err)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.list = append(c.list, call{method: method, start: start, end: time.Now(), code: st.Code(), message: st.Message()})
}

func (c *calls) all() []call {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]call(nil), c.list...)
}

// codeCounts counts calls by status code, for failure messages.
func codeCounts(list []call) map[string]int {
	counts := map[string]int{}
	for _, c := range list {
		counts[c.code.String()]++
	}
	return counts
}

// TestPostgresRestartDuringWrites restarts a private PostgreSQL under a
// CreateTodo load and checks that every create that returned OK is readable
// afterwards, and that the same todo-service process serves writes and
// reports readiness again within recoveryBound of the database accepting
// connections.
func TestPostgresRestartDuringWrites(t *testing.T) {
	const (
		workers       = 8
		outage        = 2 * time.Second
		recoveryBound = 5 * time.Second
	)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	pg := StartPostgres(t)
	auth := systemtest.StartAuth(t)
	todo := systemtest.StartTodo(t, auth, "-database-url", pg.URL())
	authClient := authv1.NewAuthServiceClient(systemtest.Dial(t, auth.GRPCAddr))
	todoClient := todov1.NewTodoServiceClient(systemtest.Dial(t, todo.GRPCAddr))
	token := signUp(ctx, t, authClient, "writer@faults.example.com")
	pidBefore, err := bench.FindPID(todo.GRPCAddr)
	if err != nil {
		t.Fatal(err)
	}

	var (
		mu      sync.Mutex // guards created
		created []string
		record  calls
		stop    atomic.Bool
		wg      sync.WaitGroup
	)
	// The phases below, not the count, end the load. The count only bounds
	// it in case they run long, so the short form keeps it.
	const maxCreates = 100000
	var issued atomic.Int64
	for w := range workers {
		wg.Go(func() {
			for i := 0; !stop.Load() && issued.Add(1) <= maxCreates; i++ {
				callCtx, cancel := context.WithTimeout(ctx, rpcTimeout)
				start := time.Now()
				resp, err := todoClient.CreateTodo(withToken(callCtx, token), &todov1.CreateTodoRequest{
					Todo: &todov1.Todo{Title: fmt.Sprintf("worker %d write %d", w, i)},
				})
				cancel()
				record.add("CreateTodo", start, err)
				if err == nil {
					mu.Lock()
					created = append(created, resp.GetTodo().GetId())
					mu.Unlock()
				} else {
					time.Sleep(10 * time.Millisecond) // no busy loop while the database is down
				}
			}
		})
	}

	time.Sleep(time.Second)
	stopTime := time.Now()
	pg.Stop(t)
	time.Sleep(outage)
	pg.Start(t)
	upTime := time.Now()

	// Recovery: the first create that starts after the database is up and
	// succeeds. The load goes on meanwhile.
	var recovered time.Time
	for deadline := upTime.Add(recoveryBound + 10*time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		ok := false
		for _, c := range record.all() {
			if c.code == codes.OK && c.start.After(upTime) {
				if recovered.IsZero() || c.end.Before(recovered) {
					recovered = c.end
				}
				ok = true
			}
		}
		if ok {
			break
		}
	}
	time.Sleep(500 * time.Millisecond)
	stop.Store(true)
	wg.Wait()

	all := record.all()
	var duringOutage []call
	for _, c := range all {
		if c.code != codes.OK {
			duringOutage = append(duringOutage, c)
		}
	}
	t.Logf("%d creates, %d OK, %d failed around the restart: %v", len(all), len(created), len(duringOutage), codeCounts(duringOutage))
	for _, c := range duringOutage {
		// A database outage is a condition the client may retry, so it
		// must not reach clients as INTERNAL.
		if c.code != codes.Unavailable {
			t.Errorf("a create failed during the outage with %v, want UNAVAILABLE", c.code)
			break
		}
	}
	if recovered.IsZero() {
		t.Fatalf("no CreateTodo succeeded within %s of PostgreSQL accepting connections again\n%s", recoveryBound+10*time.Second, todo.Logs())
	}
	recovery := recovered.Sub(upTime)
	t.Logf("PostgreSQL down %s; first successful create %s after it was up again", upTime.Sub(stopTime).Round(time.Millisecond), recovery.Round(time.Millisecond))
	if recovery > recoveryBound {
		t.Errorf("todo-service served a create %s after PostgreSQL was back, want within %s", recovery, recoveryBound)
	}
	if len(duringOutage) == 0 {
		t.Errorf("no create failed while PostgreSQL was down for %s; the restart did not hit the load", outage)
	}

	pidAfter, err := bench.FindPID(todo.GRPCAddr)
	if err != nil {
		t.Fatalf("todo-service is gone after the database restart: %v", err)
	}
	if pidAfter != pidBefore {
		t.Errorf("todo-service process id = %d after the database restart, want %d (no process restart)", pidAfter, pidBefore)
	}

	// Readiness follows the database on a timer of its own, so it must
	// turn SERVING again within the same bound.
	health := healthpb.NewHealthClient(systemtest.Dial(t, todo.GRPCAddr))
	var (
		ready    *healthpb.HealthCheckResponse
		readyErr error
	)
	for deadline := upTime.Add(recoveryBound); ; time.Sleep(50 * time.Millisecond) {
		callCtx, cancel := context.WithTimeout(ctx, time.Second)
		ready, readyErr = health.Check(callCtx, &healthpb.HealthCheckRequest{Service: "readiness"})
		cancel()
		if readyErr == nil && ready.GetStatus() == healthpb.HealthCheckResponse_SERVING {
			t.Logf("readiness SERVING %s after PostgreSQL was up again", time.Since(upTime).Round(time.Millisecond))
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("readiness %s after PostgreSQL was up again = %v, %v; want SERVING within %s",
				time.Since(upTime).Round(time.Millisecond), ready.GetStatus(), readyErr, recoveryBound)
			break
		}
	}

	var lost []string
	for _, id := range created {
		callCtx, cancel := context.WithTimeout(ctx, rpcTimeout)
		_, err := todoClient.GetTodo(withToken(callCtx, token), &todov1.GetTodoRequest{Id: id})
		cancel()
		if err != nil {
			lost = append(lost, fmt.Sprintf("%s: %v", id, err))
		}
	}
	if len(lost) > 0 {
		t.Errorf("%d of %d creates that returned OK are not readable after the restart, first: %s", len(lost), len(created), lost[0])
	}
}

// TestAuthKilledDuringLoad kills auth-service with SIGKILL in the middle of
// a read and write load on todo-service and checks that no todo RPC with a
// valid token fails, before or after the kill.
func TestAuthKilledDuringLoad(t *testing.T) {
	const workers = 8
	total := scaled(8000)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	auth := systemtest.StartAuth(t)
	todo := systemtest.StartTodo(t, auth)
	authClient := authv1.NewAuthServiceClient(systemtest.Dial(t, auth.GRPCAddr))
	todoClient := todov1.NewTodoServiceClient(systemtest.Dial(t, todo.GRPCAddr))
	tokens := []string{
		signUp(ctx, t, authClient, "one@faults.example.com"),
		signUp(ctx, t, authClient, "two@faults.example.com"),
	}
	ids := [][]string{
		createTodos(ctx, t, todoClient, tokens[0], 20),
		createTodos(ctx, t, todoClient, tokens[1], 20),
	}

	var (
		record calls
		issued atomic.Int64
		wg     sync.WaitGroup
	)
	// The workers close reached when a third of the load is issued, and
	// the test goroutine kills auth-service then, while the load goes on.
	killAt := int64(total / 3)
	reached := make(chan struct{})
	loadDone := make(chan struct{})
	for w := range workers {
		wg.Go(func() {
			token, own := tokens[w%2], ids[w%2]
			for {
				n := issued.Add(1)
				if n > int64(total) || ctx.Err() != nil {
					return
				}
				if n == killAt {
					close(reached)
				}
				callCtx, cancel := context.WithTimeout(withToken(ctx, token), rpcTimeout)
				id := own[int(n)%len(own)]
				start := time.Now()
				var (
					method string
					err    error
				)
				switch n % 4 {
				case 0:
					method = "GetTodo"
					_, err = todoClient.GetTodo(callCtx, &todov1.GetTodoRequest{Id: id})
				case 1:
					method = "ListTodos"
					_, err = todoClient.ListTodos(callCtx, &todov1.ListTodosRequest{PageSize: 20})
				case 2:
					method = "CreateTodo"
					_, err = todoClient.CreateTodo(callCtx, &todov1.CreateTodoRequest{Todo: &todov1.Todo{Title: fmt.Sprintf("load %d", n)}})
				default:
					method = "UpdateTodo"
					_, err = todoClient.UpdateTodo(callCtx, &todov1.UpdateTodoRequest{
						Todo:       &todov1.Todo{Id: id, Title: fmt.Sprintf("update %d", n)},
						UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"title"}},
					})
				}
				cancel()
				record.add(method, start, err)
			}
		})
	}
	go func() {
		wg.Wait()
		close(loadDone)
	}()

	var killTime time.Time
	select {
	case <-reached:
		auth.Kill(t)
		killTime = time.Now()
	case <-loadDone:
		t.Fatal("the load ended before auth-service was killed")
	}
	<-loadDone

	all := record.all()
	var failed []call
	afterKill := 0
	for _, c := range all {
		if c.start.After(killTime) {
			afterKill++
		}
		if c.code != codes.OK {
			failed = append(failed, c)
		}
	}
	t.Logf("%d todo RPCs, %d of them started after auth-service was killed, %d failed", len(all), afterKill, len(failed))
	if afterKill == 0 {
		t.Errorf("no todo RPC started after auth-service was killed")
	}
	if len(failed) > 0 {
		sort.Slice(failed, func(i, j int) bool { return failed[i].start.Before(failed[j].start) })
		first := failed[0]
		t.Errorf("%d todo RPCs with valid tokens failed (%v); first: %s %v %q, %s after the kill",
			len(failed), codeCounts(failed), first.method, first.code, first.message, first.start.Sub(killTime))
	}
}

// healthSample is one response of the overall health service, or the error
// in its place.
type healthSample struct {
	at     time.Time
	status healthpb.HealthCheckResponse_ServingStatus
	err    error
}

// TestSIGTERMDrainsInFlight sends SIGTERM to todo-service under a load of
// slow ListTodos calls (pages of 1000). It checks that the overall health
// service returned NOT_SERVING, both to a Watch stream and to a client
// polling Check, before the server stopped responding, and that every call
// started before the signal completed with OK. The process must exit within
// its shutdown delay plus its shutdown timeout.
func TestSIGTERMDrainsInFlight(t *testing.T) {
	const (
		workers         = 16
		shutdownTimeout = 5 * time.Second
		// exitMargin covers closing the stores and process exit after the
		// drain.
		exitMargin = 2 * time.Second
		// signalMargin excuses calls that started this shortly before the
		// signal: they may still sit in the client's buffers when the
		// server stops accepting streams.
		signalMargin = 5 * time.Millisecond
	)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	// A todo-service with -shutdown-delay keeps serving for that long
	// after health turns NOT_SERVING, and only then starts the drain.
	args := []string{"-shutdown-timeout", shutdownTimeout.String()}
	var shutdownDelay time.Duration
	_, todoBin := systemtest.Binaries(t)
	flags, err := bench.HelpFlags(todoBin)
	if err != nil {
		t.Fatal(err)
	}
	if flags["shutdown-delay"] {
		shutdownDelay = time.Second
		args = append(args, "-shutdown-delay", shutdownDelay.String())
	}

	auth := systemtest.StartAuth(t)
	todo := systemtest.StartTodo(t, auth, args...)
	authClient := authv1.NewAuthServiceClient(systemtest.Dial(t, auth.GRPCAddr))
	todoClient := todov1.NewTodoServiceClient(systemtest.Dial(t, todo.GRPCAddr))
	token := signUp(ctx, t, authClient, "drain@faults.example.com")
	createTodos(ctx, t, todoClient, token, scaled(1000))

	var (
		record calls
		stop   atomic.Bool
		wg     sync.WaitGroup
	)
	// The signal, not the count, ends the load. The count only bounds it.
	const maxCalls = 200000
	var issued atomic.Int64
	for range workers {
		wg.Go(func() {
			for !stop.Load() && issued.Add(1) <= maxCalls {
				callCtx, cancel := context.WithTimeout(withToken(ctx, token), rpcTimeout)
				start := time.Now()
				_, err := todoClient.ListTodos(callCtx, &todov1.ListTodosRequest{PageSize: 1000})
				cancel()
				record.add("ListTodos", start, err)
				if err != nil {
					time.Sleep(5 * time.Millisecond)
				}
			}
		})
	}

	// The health poller has its own connection, as a load balancer would.
	health := healthpb.NewHealthClient(systemtest.Dial(t, todo.GRPCAddr))
	var (
		samplesMu sync.Mutex // guards samples
		samples   []healthSample
		pollStop  atomic.Bool
		pollDone  = make(chan struct{})
	)
	go func() {
		defer close(pollDone)
		for i := 0; !pollStop.Load() && i < 1_000_000; i++ {
			callCtx, cancel := context.WithTimeout(ctx, time.Second)
			resp, err := health.Check(callCtx, &healthpb.HealthCheckRequest{Service: ""})
			cancel()
			samplesMu.Lock()
			samples = append(samples, healthSample{at: time.Now(), status: resp.GetStatus(), err: err})
			samplesMu.Unlock()
			time.Sleep(time.Millisecond)
		}
	}()

	// A Watch stream receives the status change as the server makes it,
	// so it shows the order on the server side even when no poll lands
	// in the window. It ends the stream at NOT_SERVING, as a client should,
	// because an open stream would hold the drain until the timeout.
	watchCtx, watchCancel := context.WithCancel(ctx)
	defer watchCancel()
	watch, err := health.Watch(watchCtx, &healthpb.HealthCheckRequest{Service: ""})
	if err != nil {
		t.Fatalf("Watch health \"\": %v", err)
	}
	if first, err := watch.Recv(); err != nil || first.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("Watch health \"\" first status = %v, %v; want SERVING", first.GetStatus(), err)
	}
	var watchNotServing time.Time
	watchDone := make(chan struct{})
	go func() {
		defer close(watchDone)
		for {
			resp, err := watch.Recv()
			if err != nil {
				return
			}
			if resp.GetStatus() == healthpb.HealthCheckResponse_NOT_SERVING {
				watchNotServing = time.Now()
				watchCancel()
				return
			}
		}
	}()

	time.Sleep(time.Second)
	signalTime := time.Now()
	todo.Stop(t)
	exited := time.Since(signalTime)
	stop.Store(true)
	pollStop.Store(true)
	wg.Wait()
	<-pollDone
	<-watchDone

	if watchNotServing.IsZero() {
		t.Errorf("Watch on health \"\" never received NOT_SERVING before the server closed it")
	} else {
		t.Logf("Watch on health \"\" received NOT_SERVING %s after SIGTERM", watchNotServing.Sub(signalTime))
	}

	t.Logf("todo-service exited %s after SIGTERM", exited.Round(time.Millisecond))
	if limit := shutdownDelay + shutdownTimeout + exitMargin; exited > limit {
		t.Errorf("todo-service exited %s after SIGTERM, want within %s (shutdown delay %s, timeout %s, margin %s)",
			exited, limit, shutdownDelay, shutdownTimeout, exitMargin)
	}

	// Health: NOT_SERVING must show before the first failed check.
	var notServing, firstError time.Time
	for _, s := range samples {
		if s.at.Before(signalTime) {
			continue
		}
		if s.err != nil {
			if firstError.IsZero() {
				firstError = s.at
			}
			continue
		}
		if s.status == healthpb.HealthCheckResponse_NOT_SERVING && notServing.IsZero() {
			notServing = s.at
		}
	}
	switch {
	case notServing.IsZero():
		t.Errorf("health \"\" never returned NOT_SERVING after SIGTERM before the server stopped responding (first failed check %s after the signal)",
			firstError.Sub(signalTime))
	case !firstError.IsZero() && firstError.Before(notServing):
		t.Errorf("health \"\" failed %s after SIGTERM, before it returned NOT_SERVING at %s", firstError.Sub(signalTime), notServing.Sub(signalTime))
	default:
		t.Logf("health \"\" returned NOT_SERVING %s after SIGTERM", notServing.Sub(signalTime))
	}

	// The server starts draining no earlier than shutdownDelay after the
	// signal, because its delay starts when the signal arrives. Calls that
	// were running at that point test the drain itself.
	drainStart := signalTime.Add(shutdownDelay)
	var inFlight, inFlightAtDrain, failedAtDrain, failedBefore, unexpected int
	var firstFailure, firstUnexpected, firstFailedAtDrain call
	for _, c := range record.all() {
		// In flight counts every call that was running at the signal. The
		// margin below only excuses failures.
		if c.start.Before(signalTime) && c.end.After(signalTime) {
			inFlight++
		}
		if shutdownDelay > 0 && c.start.Before(drainStart.Add(-signalMargin)) && c.end.After(drainStart) {
			inFlightAtDrain++
			if c.code != codes.OK {
				if failedAtDrain == 0 {
					firstFailedAtDrain = c
				}
				failedAtDrain++
			}
		}
		if c.start.Before(signalTime.Add(-signalMargin)) {
			if c.code != codes.OK {
				if failedBefore == 0 {
					firstFailure = c
				}
				failedBefore++
			}
		}
		if c.code != codes.OK && c.code != codes.Unavailable {
			if unexpected == 0 {
				firstUnexpected = c
			}
			unexpected++
		}
	}
	if unexpected > 0 {
		t.Errorf("%d calls failed with a code other than UNAVAILABLE; first: %v %q, started %s after SIGTERM",
			unexpected, firstUnexpected.code, firstUnexpected.message, firstUnexpected.start.Sub(signalTime))
	}
	t.Logf("%d calls were in flight when SIGTERM was sent, %d when the drain started", inFlight, inFlightAtDrain)
	if inFlight == 0 {
		t.Errorf("no call was in flight when SIGTERM was sent; the load is too light to test the drain")
	}
	if failedAtDrain > 0 {
		t.Errorf("%d of %d calls in flight when the drain started failed; first: %v %q",
			failedAtDrain, inFlightAtDrain, firstFailedAtDrain.code, firstFailedAtDrain.message)
	}
	if failedBefore > 0 {
		t.Errorf("%d calls started before SIGTERM failed; first: %v %q, started %s before the signal",
			failedBefore, firstFailure.code, firstFailure.message, signalTime.Sub(firstFailure.start))
	}
}
