//go:build bench

package bench

import (
	"context"
	"fmt"
	"math"
	"os"
	"sync"
	"testing"
	"time"

	"example.com/todoapp/deploy/systemtest"
	authv1 "example.com/todoapp/proto/gen/auth/v1"
	todov1 "example.com/todoapp/proto/gen/todo/v1"
)

// soakConcurrency is the concurrency of each of the three loads of the soak.
const soakConcurrency = 10

// soakSample is the memory and goroutine count of both services at one
// moment of the soak.
type soakSample struct {
	at                             time.Duration // since the soak load started
	todoRSS, authRSS               int64
	todoGoroutines, authGoroutines float64
}

// TestSoak drives todo-service with a mix of 60% GetTodo, 30% ListTodos and
// 10% CreateTodo at half the capacity measured for that mix at its start,
// for BENCH_SOAK_DURATION (default 10m). It samples memory and goroutines
// of both services every minute and fails on any failed call. It runs only
// with BENCH_SOAK=1, because it takes the whole duration.
func TestSoak(t *testing.T) {
	if os.Getenv("BENCH_SOAK") != "1" {
		t.Skip("BENCH_SOAK is not 1: skipping the soak run, which takes BENCH_SOAK_DURATION (default 10m)")
	}
	duration := 10 * time.Minute
	if raw := os.Getenv("BENCH_SOAK_DURATION"); raw != "" {
		d, err := time.ParseDuration(raw)
		if err != nil || d <= 0 {
			t.Fatalf("invalid BENCH_SOAK_DURATION %q: want a positive duration such as 10m", raw)
		}
		duration = d
	}
	ctx, cancel := context.WithTimeout(context.Background(), duration+15*time.Minute)
	defer cancel()
	h := newHarness(t)
	fmt.Fprintf(h.out, "\n## Soak for %s\n\nMachine at the start: %s\n", duration, DescribeMachine())

	auth := h.startAuth(CreateDatabase(t, h.serverURL, "auth"))
	todo := h.startTodo(auth, CreateDatabase(t, h.serverURL, "todo"))
	authClient := authv1.NewAuthServiceClient(systemtest.Dial(t, auth.GRPCAddr))
	todoClient := todov1.NewTodoServiceClient(systemtest.Dial(t, todo.GRPCAddr))
	reader := signUp(ctx, t, authClient, "reader@soak.example.com")
	writer := signUp(ctx, t, authClient, "writer@soak.example.com")
	readerIDs := createTodos(ctx, t, todoClient, reader, seededTodos)

	getData := make([]map[string]string, len(readerIDs))
	for i, id := range readerIDs {
		getData[i] = map[string]string{"id": id}
	}
	mix := []struct {
		load   Load
		weight float64
	}{
		{Load{Name: "GetTodo", Call: "todo.v1.TodoService/GetTodo", Data: getData, Token: reader.AccessToken}, 0.6},
		{Load{Name: "ListTodos", Call: "todo.v1.TodoService/ListTodos", Data: map[string]int{"page_size": 20}, Token: reader.AccessToken}, 0.3},
		{Load{Name: "CreateTodo", Call: "todo.v1.TodoService/CreateTodo", Data: map[string]any{"todo": map[string]string{"title": "soak"}}, Token: writer.AccessToken}, 0.1},
	}

	// The capacity of the mix follows from the capacity of each call: a
	// second of mixed load spends weight/capacity seconds on each kind.
	var secondsPerCall float64
	for i := range mix {
		mix[i].load.Addr = todo.GRPCAddr
		mix[i].load.Protoset = h.protoset
		row := h.run(ctx, Load{
			Name: mix[i].load.Name + " capacity", Call: mix[i].load.Call, Addr: todo.GRPCAddr, Protoset: h.protoset,
			Data: mix[i].load.Data, Token: mix[i].load.Token, Requests: 3000, Concurrency: loadConcurrency,
		}, "offline", true)
		secondsPerCall += mix[i].weight / row.RPS
	}
	capacity := 1 / secondsPerCall
	target := capacity / 2
	fmt.Fprintf(h.out, "Measured capacity of the mix: %.0f req/s; soak rate: %.0f req/s\n\n", capacity, target)

	todoPID, err := FindPID(todo.GRPCAddr)
	if err != nil {
		t.Fatal(err)
	}
	authPID, err := FindPID(auth.GRPCAddr)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	sample := func() soakSample {
		s := soakSample{at: time.Since(start).Round(time.Second)}
		if m, err := ReadMemory(todoPID); err == nil {
			s.todoRSS = m.RSS
		}
		if m, err := ReadMemory(authPID); err == nil {
			s.authRSS = m.RSS
		}
		s.todoGoroutines, _ = ReadMetric(ctx, todo.HTTPAddr, "go_goroutines")
		s.authGoroutines, _ = ReadMetric(ctx, auth.HTTPAddr, "go_goroutines")
		return s
	}

	var (
		wg      sync.WaitGroup
		results = make([]Result, len(mix))
		errs    = make([]error, len(mix))
	)
	for i, m := range mix {
		l := m.load
		l.RPS = max(1, int(math.Round(target*m.weight)))
		l.Requests = l.RPS * int(duration/time.Second)
		l.Concurrency = soakConcurrency
		wg.Go(func() {
			results[i], errs[i] = RunGhz(ctx, h.ghz, l)
		})
	}

	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()
	var samples []soakSample
	time.Sleep(10 * time.Second) // past the start of the three loads
	samples = append(samples, sample())
	ticker := time.NewTicker(time.Minute)
	defer ticker.Stop()
loop:
	for {
		select {
		case <-ticker.C:
			samples = append(samples, sample())
		case <-done:
			break loop
		}
	}
	samples = append(samples, sample())

	var rows []Row
	var failed uint64
	for i, res := range results {
		if errs[i] != nil {
			t.Fatal(errs[i])
		}
		failed += res.Errors
		rows = append(rows, Row{Scenario: res.Name + " soak", Mode: "offline", Concurrency: soakConcurrency, Result: res})
	}
	WriteTable(h.out, rows)
	fmt.Fprintf(h.out, "\n| time | todo RSS MiB | todo goroutines | auth RSS MiB | auth goroutines |\n|---:|---:|---:|---:|---:|\n")
	for _, s := range samples {
		fmt.Fprintf(h.out, "| %s | %.1f | %.0f | %.1f | %.0f |\n", s.at, mib(s.todoRSS), s.todoGoroutines, mib(s.authRSS), s.authGoroutines)
	}
	fmt.Fprintf(h.out, "\nFailed calls: %d. Load average at the end: %s.\n", failed, LoadAverage())

	if failed > 0 {
		t.Errorf("%d calls failed during the soak", failed)
	}
	// Stability heuristics, not exact limits: the first sample and the last
	// one before the load ended see the same load, so growth beyond these
	// margins points to a leak.
	first, last := samples[0], samples[len(samples)-2]
	// Each in-flight call holds one or two goroutines, so the count may
	// differ between samples by about twice the total concurrency.
	goroutineMargin := float64(2*soakConcurrency*len(mix) + 10)
	if last.todoGoroutines > first.todoGoroutines+goroutineMargin {
		t.Errorf("todo-service goroutines grew from %.0f to %.0f under the same load", first.todoGoroutines, last.todoGoroutines)
	}
	if float64(last.todoRSS) > 1.5*float64(first.todoRSS)+32<<20 {
		t.Errorf("todo-service RSS grew from %.1f MiB to %.1f MiB under the same load", mib(first.todoRSS), mib(last.todoRSS))
	}
}
