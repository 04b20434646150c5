package storetest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"

	"example.com/todoapp/todo-service/internal/store"
)

// Opener returns an empty, migrated store whose clock is now. Each call
// returns a store that no other test uses.
type Opener func(t *testing.T, now func() time.Time) *store.Store

// start is the clock's first reading in every suite test. It has
// nanoseconds, so the tests also check that the stores truncate to
// microseconds.
var start = time.Date(2026, 3, 1, 12, 0, 0, 123456789, time.UTC)

const (
	alice = "0b7c3a2e-1111-4a4a-9b9b-000000000001"
	bob   = "0b7c3a2e-2222-4a4a-9b9b-000000000002"
)

// Run runs the conformance suite against the stores that open returns.
func Run(t *testing.T, open Opener) {
	tests := []struct {
		name string
		fn   func(t *testing.T, open Opener)
	}{
		{"CreateAndGet", testCreateAndGet},
		{"CreateCompleted", testCreateCompleted},
		{"GetMissing", testGetMissing},
		{"ListOrderAndPages", testListOrderAndPages},
		{"ListFilterCompleted", testListFilterCompleted},
		{"ListStableUnderInserts", testListStableUnderInserts},
		{"ListSameCreateTime", testListSameCreateTime},
		{"UpdateFields", testUpdateFields},
		{"UpdateCompleteTime", testUpdateCompleteTime},
		{"UpdateErrors", testUpdateErrors},
		{"UpdateRaceOneWins", testUpdateRaceOneWins},
		{"Delete", testDelete},
		{"UsersIsolated", testUsersIsolated},
		{"HostileText", testHostileText},
		{"RejectedText", testRejectedText},
		{"KeySet", testKeySet},
		{"MigrateTwice", testMigrateTwice},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.fn(t, open)
		})
	}
}

func testContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func mustCreate(t *testing.T, s *store.Store, userID, title string) store.Todo {
	t.Helper()
	todo, err := s.CreateTodo(testContext(t), store.Todo{UserID: userID, Title: title, Description: "about " + title})
	if err != nil {
		t.Fatalf("CreateTodo(%q): %v", title, err)
	}
	return todo
}

func titles(todos []store.Todo) []string {
	out := make([]string, len(todos))
	for i, todo := range todos {
		out[i] = todo.Title
	}
	return out
}

func ptr[T any](v T) *T {
	return &v
}

func testCreateAndGet(t *testing.T, open Opener) {
	clock := NewClock(start)
	s := open(t, clock.Now)
	ctx := testContext(t)

	created, err := s.CreateTodo(ctx, store.Todo{UserID: alice, Title: "buy milk", Description: "two litres"})
	if err != nil {
		t.Fatalf("CreateTodo: %v", err)
	}
	if _, err := uuid.Parse(created.ID); err != nil {
		t.Errorf("CreateTodo id = %q, want a UUID", created.ID)
	}
	if created.ETag == "" {
		t.Error("CreateTodo etag is empty")
	}

	wantTime := start.Truncate(time.Microsecond)
	want := store.Todo{
		ID:          created.ID,
		UserID:      alice,
		Title:       "buy milk",
		Description: "two litres",
		CreateTime:  wantTime,
		UpdateTime:  wantTime,
		ETag:        created.ETag,
	}
	if diff := cmp.Diff(want, created); diff != "" {
		t.Errorf("CreateTodo result mismatch (-want +got):\n%s", diff)
	}

	got, err := s.GetTodo(ctx, alice, created.ID)
	if err != nil {
		t.Fatalf("GetTodo: %v", err)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("GetTodo mismatch (-want +got):\n%s", diff)
	}
}

func testCreateCompleted(t *testing.T, open Opener) {
	clock := NewClock(start)
	s := open(t, clock.Now)

	created, err := s.CreateTodo(testContext(t), store.Todo{UserID: alice, Title: "done already", Completed: true})
	if err != nil {
		t.Fatalf("CreateTodo: %v", err)
	}
	got, err := s.GetTodo(testContext(t), alice, created.ID)
	if err != nil {
		t.Fatalf("GetTodo: %v", err)
	}
	if !got.Completed {
		t.Error("GetTodo completed = false, want true")
	}
	if want := start.Truncate(time.Microsecond); !got.CompleteTime.Equal(want) {
		t.Errorf("GetTodo complete time = %v, want %v", got.CompleteTime, want)
	}
}

func testGetMissing(t *testing.T, open Opener) {
	s := open(t, NewClock(start).Now)
	mustCreate(t, s, alice, "present")

	for _, id := range []string{uuid.NewString(), "not-a-uuid", "", "' OR '1'='1"} {
		_, err := s.GetTodo(testContext(t), alice, id)
		if !errors.Is(err, store.ErrNotFound) {
			t.Errorf("GetTodo(%q) error = %v, want ErrNotFound", id, err)
		}
	}
}

func testListOrderAndPages(t *testing.T, open Opener) {
	clock := NewClock(start)
	s := open(t, clock.Now)
	for i := range 7 {
		mustCreate(t, s, alice, fmt.Sprintf("todo %d", i))
		clock.Advance(time.Second)
	}

	var pages [][]string
	var after *store.Cursor
	for range 10 {
		todos, err := s.ListTodos(testContext(t), store.ListParams{UserID: alice, After: after, Limit: 3})
		if err != nil {
			t.Fatalf("ListTodos: %v", err)
		}
		if len(todos) == 0 {
			break
		}
		pages = append(pages, titles(todos))
		last := todos[len(todos)-1]
		after = &store.Cursor{CreateTime: last.CreateTime, ID: last.ID}
	}

	want := [][]string{
		{"todo 6", "todo 5", "todo 4"},
		{"todo 3", "todo 2", "todo 1"},
		{"todo 0"},
	}
	if diff := cmp.Diff(want, pages); diff != "" {
		t.Errorf("ListTodos pages mismatch (-want +got):\n%s", diff)
	}
}

func testListFilterCompleted(t *testing.T, open Opener) {
	clock := NewClock(start)
	s := open(t, clock.Now)
	for i := range 6 {
		todo := mustCreate(t, s, alice, fmt.Sprintf("todo %d", i))
		if i%2 == 0 {
			if _, err := s.UpdateTodo(testContext(t), store.TodoUpdate{ID: todo.ID, UserID: alice, Completed: ptr(true)}); err != nil {
				t.Fatalf("UpdateTodo: %v", err)
			}
		}
		clock.Advance(time.Second)
	}

	tests := []struct {
		name      string
		completed *bool
		want      []string
	}{
		{"all", nil, []string{"todo 5", "todo 4", "todo 3", "todo 2", "todo 1", "todo 0"}},
		{"completed", ptr(true), []string{"todo 4", "todo 2", "todo 0"}},
		{"open", ptr(false), []string{"todo 5", "todo 3", "todo 1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			todos, err := s.ListTodos(testContext(t), store.ListParams{UserID: alice, Completed: tt.completed, Limit: 100})
			if err != nil {
				t.Fatalf("ListTodos: %v", err)
			}
			if diff := cmp.Diff(tt.want, titles(todos)); diff != "" {
				t.Errorf("ListTodos titles mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func testListStableUnderInserts(t *testing.T, open Opener) {
	clock := NewClock(start)
	s := open(t, clock.Now)
	for i := range 4 {
		mustCreate(t, s, alice, fmt.Sprintf("old %d", i))
		clock.Advance(time.Second)
	}

	first, err := s.ListTodos(testContext(t), store.ListParams{UserID: alice, Limit: 2})
	if err != nil {
		t.Fatalf("ListTodos first page: %v", err)
	}
	mustCreate(t, s, alice, "new 0")
	clock.Advance(time.Second)
	mustCreate(t, s, alice, "new 1")

	last := first[len(first)-1]
	second, err := s.ListTodos(testContext(t), store.ListParams{
		UserID: alice,
		After:  &store.Cursor{CreateTime: last.CreateTime, ID: last.ID},
		Limit:  2,
	})
	if err != nil {
		t.Fatalf("ListTodos second page: %v", err)
	}

	got := append(titles(first), titles(second)...)
	want := []string{"old 3", "old 2", "old 1", "old 0"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("pages after inserts mismatch (-want +got):\n%s", diff)
	}
}

// testListSameCreateTime checks that todos created in the same microsecond
// are ordered by id and that paging through them loses none.
func testListSameCreateTime(t *testing.T, open Opener) {
	s := open(t, NewClock(start).Now)
	created := make(map[string]bool)
	for i := range 5 {
		created[mustCreate(t, s, alice, fmt.Sprintf("tie %d", i)).ID] = true
	}

	seen := make(map[string]bool)
	var previous string
	var after *store.Cursor
	for range 10 {
		todos, err := s.ListTodos(testContext(t), store.ListParams{UserID: alice, After: after, Limit: 2})
		if err != nil {
			t.Fatalf("ListTodos: %v", err)
		}
		if len(todos) == 0 {
			break
		}
		for _, todo := range todos {
			if previous != "" && todo.ID >= previous {
				t.Errorf("ListTodos id %s follows %s, want descending ids", todo.ID, previous)
			}
			previous = todo.ID
			seen[todo.ID] = true
		}
		last := todos[len(todos)-1]
		after = &store.Cursor{CreateTime: last.CreateTime, ID: last.ID}
	}
	if diff := cmp.Diff(created, seen); diff != "" {
		t.Errorf("ids seen across pages mismatch (-created +seen):\n%s", diff)
	}
}

func testUpdateFields(t *testing.T, open Opener) {
	clock := NewClock(start)
	s := open(t, clock.Now)
	original := mustCreate(t, s, alice, "draft")
	clock.Advance(time.Minute)

	updated, err := s.UpdateTodo(testContext(t), store.TodoUpdate{
		ID:     original.ID,
		UserID: alice,
		Title:  ptr("final"),
		ETag:   original.ETag,
	})
	if err != nil {
		t.Fatalf("UpdateTodo title: %v", err)
	}
	if updated.ETag == original.ETag {
		t.Error("UpdateTodo kept the etag, want a new one")
	}
	want := original
	want.Title = "final"
	want.UpdateTime = start.Add(time.Minute).Truncate(time.Microsecond)
	want.ETag = updated.ETag
	if diff := cmp.Diff(want, updated); diff != "" {
		t.Errorf("UpdateTodo title mismatch (-want +got):\n%s", diff)
	}

	clock.Advance(time.Minute)
	updated2, err := s.UpdateTodo(testContext(t), store.TodoUpdate{ID: original.ID, UserID: alice, Description: ptr("")})
	if err != nil {
		t.Fatalf("UpdateTodo description: %v", err)
	}
	if updated2.ETag == updated.ETag {
		t.Error("second UpdateTodo kept the etag, want a new one")
	}
	want.Description = ""
	want.UpdateTime = start.Add(2 * time.Minute).Truncate(time.Microsecond)
	want.ETag = updated2.ETag
	if diff := cmp.Diff(want, updated2); diff != "" {
		t.Errorf("UpdateTodo description mismatch (-want +got):\n%s", diff)
	}

	got, err := s.GetTodo(testContext(t), alice, original.ID)
	if err != nil {
		t.Fatalf("GetTodo: %v", err)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("GetTodo after updates mismatch (-want +got):\n%s", diff)
	}
}

func testUpdateCompleteTime(t *testing.T, open Opener) {
	clock := NewClock(start)
	s := open(t, clock.Now)
	todo := mustCreate(t, s, alice, "task")

	update := func(completed bool) store.Todo {
		t.Helper()
		clock.Advance(time.Minute)
		got, err := s.UpdateTodo(testContext(t), store.TodoUpdate{ID: todo.ID, UserID: alice, Completed: ptr(completed)})
		if err != nil {
			t.Fatalf("UpdateTodo(completed=%v): %v", completed, err)
		}
		return got
	}

	completedAt := start.Add(time.Minute).Truncate(time.Microsecond)
	steps := []struct {
		completed        bool
		wantCompleteTime time.Time
	}{
		{true, completedAt},
		// Completing again keeps the first complete time.
		{true, completedAt},
		{false, time.Time{}},
		{true, start.Add(4 * time.Minute).Truncate(time.Microsecond)},
	}
	for i, step := range steps {
		got := update(step.completed)
		if got.Completed != step.completed {
			t.Errorf("step %d: completed = %v, want %v", i, got.Completed, step.completed)
		}
		if !got.CompleteTime.Equal(step.wantCompleteTime) {
			t.Errorf("step %d: complete time = %v, want %v", i, got.CompleteTime, step.wantCompleteTime)
		}
	}
}

func testUpdateErrors(t *testing.T, open Opener) {
	s := open(t, NewClock(start).Now)
	todo := mustCreate(t, s, alice, "task")

	tests := []struct {
		name   string
		update store.TodoUpdate
		want   error
	}{
		{"stale etag", store.TodoUpdate{ID: todo.ID, UserID: alice, Title: ptr("x"), ETag: "stale"}, store.ErrETagMismatch},
		{"other user", store.TodoUpdate{ID: todo.ID, UserID: bob, Title: ptr("x")}, store.ErrNotFound},
		{"other user with etag", store.TodoUpdate{ID: todo.ID, UserID: bob, Title: ptr("x"), ETag: todo.ETag}, store.ErrNotFound},
		{"missing id", store.TodoUpdate{ID: uuid.NewString(), UserID: alice, Title: ptr("x")}, store.ErrNotFound},
		{"malformed id", store.TodoUpdate{ID: "nope", UserID: alice, Title: ptr("x")}, store.ErrNotFound},
		{"no field", store.TodoUpdate{ID: todo.ID, UserID: alice}, store.ErrInvalidArgument},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := s.UpdateTodo(testContext(t), tt.update)
			if !errors.Is(err, tt.want) {
				t.Errorf("UpdateTodo error = %v, want %v", err, tt.want)
			}
		})
	}

	got, err := s.GetTodo(testContext(t), alice, todo.ID)
	if err != nil {
		t.Fatalf("GetTodo: %v", err)
	}
	if diff := cmp.Diff(todo, got); diff != "" {
		t.Errorf("todo changed by failed updates (-before +after):\n%s", diff)
	}
}

// testUpdateRaceOneWins starts several updates with the same etag at once,
// and checks that exactly one succeeds.
func testUpdateRaceOneWins(t *testing.T, open Opener) {
	s := open(t, NewClock(start).Now)
	todo := mustCreate(t, s, alice, "contended")

	const writers = 8
	errs := make([]error, writers)
	var wg sync.WaitGroup
	for i := range writers {
		wg.Go(func() {
			_, errs[i] = s.UpdateTodo(testContext(t), store.TodoUpdate{
				ID:     todo.ID,
				UserID: alice,
				Title:  ptr(fmt.Sprintf("writer %d", i)),
				ETag:   todo.ETag,
			})
		})
	}
	wg.Wait()

	wins := 0
	for i, err := range errs {
		switch {
		case err == nil:
			wins++
		case errors.Is(err, store.ErrETagMismatch):
		default:
			t.Errorf("writer %d: UpdateTodo error = %v, want nil or ErrETagMismatch", i, err)
		}
	}
	if wins != 1 {
		t.Errorf("successful updates = %d, want 1", wins)
	}
}

func testDelete(t *testing.T, open Opener) {
	s := open(t, NewClock(start).Now)
	todo := mustCreate(t, s, alice, "short-lived")
	ctx := testContext(t)

	if err := s.DeleteTodo(ctx, bob, todo.ID, ""); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("DeleteTodo by other user error = %v, want ErrNotFound", err)
	}
	if err := s.DeleteTodo(ctx, alice, todo.ID, "stale"); !errors.Is(err, store.ErrETagMismatch) {
		t.Errorf("DeleteTodo with stale etag error = %v, want ErrETagMismatch", err)
	}
	if err := s.DeleteTodo(ctx, alice, todo.ID, todo.ETag); err != nil {
		t.Fatalf("DeleteTodo with current etag: %v", err)
	}
	if _, err := s.GetTodo(ctx, alice, todo.ID); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("GetTodo after delete error = %v, want ErrNotFound", err)
	}
	if err := s.DeleteTodo(ctx, alice, todo.ID, ""); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("second DeleteTodo error = %v, want ErrNotFound", err)
	}
	if err := s.DeleteTodo(ctx, alice, "not-a-uuid", ""); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("DeleteTodo of malformed id error = %v, want ErrNotFound", err)
	}

	other := mustCreate(t, s, alice, "kept")
	if err := s.DeleteTodo(ctx, alice, other.ID, ""); err != nil {
		t.Errorf("DeleteTodo without etag: %v", err)
	}
}

func testUsersIsolated(t *testing.T, open Opener) {
	clock := NewClock(start)
	s := open(t, clock.Now)
	mustCreate(t, s, alice, "alice 1")
	clock.Advance(time.Second)
	bobs := mustCreate(t, s, bob, "bob 1")
	clock.Advance(time.Second)
	mustCreate(t, s, alice, "alice 2")

	todos, err := s.ListTodos(testContext(t), store.ListParams{UserID: alice, Limit: 10})
	if err != nil {
		t.Fatalf("ListTodos: %v", err)
	}
	if diff := cmp.Diff([]string{"alice 2", "alice 1"}, titles(todos)); diff != "" {
		t.Errorf("ListTodos of alice mismatch (-want +got):\n%s", diff)
	}
	if _, err := s.GetTodo(testContext(t), alice, bobs.ID); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("GetTodo of bob's todo as alice error = %v, want ErrNotFound", err)
	}
}

// HostileTitles are texts that break SQL built by string concatenation or
// careless encoding. Every store must return them unchanged.
var HostileTitles = []string{
	`'; DROP TABLE todos; --`,
	`" OR "1"="1`,
	`Robert'); DELETE FROM todos WHERE ('1' = '1`,
	`\'; SELECT pg_sleep(10); --`,
	`$1 ? ?? :name @p1 %s %d`,
	`/* comment */ UNION SELECT * FROM schema_migrations --`,
	"emoji 🐘🧪👩‍👩‍👧‍👦 and flags 🇳🇱",
	"control \x01\x02\x07\x08\t\n\v\f\r\x1b[31m red \x7f end",
	"right-to-left \u202e txet and zero\u200bwidth",
	"backslashes \\\\ and \\x00 spelled out",
	"`backticks` and ‘curly’ “quotes”",
	"   leading and trailing spaces   ",
}

func testHostileText(t *testing.T, open Opener) {
	s := open(t, NewClock(start).Now)
	for i, title := range HostileTitles {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			created, err := s.CreateTodo(testContext(t), store.Todo{UserID: alice, Title: title, Description: title + title})
			if err != nil {
				t.Fatalf("CreateTodo(%q): %v", title, err)
			}
			got, err := s.GetTodo(testContext(t), alice, created.ID)
			if err != nil {
				t.Fatalf("GetTodo: %v", err)
			}
			if got.Title != title {
				t.Errorf("GetTodo title = %q, want %q", got.Title, title)
			}
			if got.Description != title+title {
				t.Errorf("GetTodo description = %q, want %q", got.Description, title+title)
			}

			updated, err := s.UpdateTodo(testContext(t), store.TodoUpdate{ID: created.ID, UserID: alice, Title: ptr("again " + title)})
			if err != nil {
				t.Fatalf("UpdateTodo: %v", err)
			}
			if updated.Title != "again "+title {
				t.Errorf("UpdateTodo title = %q, want %q", updated.Title, "again "+title)
			}
		})
	}

	todos, err := s.ListTodos(testContext(t), store.ListParams{UserID: alice, Limit: 100})
	if err != nil {
		t.Fatalf("ListTodos: %v", err)
	}
	if len(todos) != len(HostileTitles) {
		t.Errorf("ListTodos returned %d todos, want %d", len(todos), len(HostileTitles))
	}
}

func testRejectedText(t *testing.T, open Opener) {
	s := open(t, NewClock(start).Now)
	todo := mustCreate(t, s, alice, "valid")

	for _, text := range []string{"nul \x00 inside", "bad utf-8 \xff\xfe"} {
		_, err := s.CreateTodo(testContext(t), store.Todo{UserID: alice, Title: text})
		if !errors.Is(err, store.ErrInvalidArgument) {
			t.Errorf("CreateTodo(title %q) error = %v, want ErrInvalidArgument", text, err)
		}
		_, err = s.CreateTodo(testContext(t), store.Todo{UserID: alice, Title: "ok", Description: text})
		if !errors.Is(err, store.ErrInvalidArgument) {
			t.Errorf("CreateTodo(description %q) error = %v, want ErrInvalidArgument", text, err)
		}
		_, err = s.UpdateTodo(testContext(t), store.TodoUpdate{ID: todo.ID, UserID: alice, Title: ptr(text)})
		if !errors.Is(err, store.ErrInvalidArgument) {
			t.Errorf("UpdateTodo(title %q) error = %v, want ErrInvalidArgument", text, err)
		}
	}
}

func testKeySet(t *testing.T, open Opener) {
	s := open(t, NewClock(start).Now)
	ctx := testContext(t)

	body, fetchedAt, err := s.LoadKeySet(ctx)
	if err != nil || body != nil || !fetchedAt.IsZero() {
		t.Errorf("LoadKeySet on empty store = %q, %v, %v; want nil, zero time, nil", body, fetchedAt, err)
	}

	first := []byte(`{"keys":[{"kid":"one"}]}`)
	firstAt := start.Truncate(time.Microsecond)
	if err := s.SaveKeySet(ctx, first, firstAt); err != nil {
		t.Fatalf("SaveKeySet: %v", err)
	}
	assertKeySet(t, s, first, firstAt)

	// An older set, as saved late by a slower replica, must not win.
	if err := s.SaveKeySet(ctx, []byte(`{"keys":[]}`), firstAt.Add(-time.Minute)); err != nil {
		t.Fatalf("SaveKeySet older: %v", err)
	}
	assertKeySet(t, s, first, firstAt)

	second := []byte(`{"keys":[{"kid":"two"}]}`)
	secondAt := firstAt.Add(time.Hour)
	if err := s.SaveKeySet(ctx, second, secondAt); err != nil {
		t.Fatalf("SaveKeySet newer: %v", err)
	}
	assertKeySet(t, s, second, secondAt)
}

func assertKeySet(t *testing.T, s *store.Store, wantBody []byte, wantAt time.Time) {
	t.Helper()
	body, fetchedAt, err := s.LoadKeySet(testContext(t))
	if err != nil {
		t.Fatalf("LoadKeySet: %v", err)
	}
	if string(body) != string(wantBody) {
		t.Errorf("LoadKeySet body = %s, want %s", body, wantBody)
	}
	if !fetchedAt.Equal(wantAt) {
		t.Errorf("LoadKeySet fetched at = %v, want %v", fetchedAt, wantAt)
	}
}

func testMigrateTwice(t *testing.T, open Opener) {
	s := open(t, NewClock(start).Now)

	applied, err := s.Migrate(testContext(t))
	if err != nil {
		t.Fatalf("second Migrate: %v", err)
	}
	if len(applied) != 0 {
		t.Errorf("second Migrate applied %v, want nothing", applied)
	}

	var versions []int
	if err := s.DB().SelectContext(testContext(t), &versions, `SELECT version FROM schema_migrations ORDER BY version`); err != nil {
		t.Fatalf("select schema_migrations: %v", err)
	}
	migrations, err := store.Migrations(s.Dialect())
	if err != nil {
		t.Fatalf("Migrations: %v", err)
	}
	var want []int
	for _, m := range migrations {
		want = append(want, m.Version)
	}
	if diff := cmp.Diff(want, versions); diff != "" {
		t.Errorf("schema_migrations versions mismatch (-want +got):\n%s", diff)
	}
}
