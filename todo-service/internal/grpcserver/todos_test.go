package grpcserver_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/fieldmaskpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	todov1 "example.com/todoapp/proto/gen/todo/v1"
	"example.com/todoapp/todo-service/internal/grpcserver"
	"example.com/todoapp/todo-service/internal/store/storetest"
)

var (
	alice = uuid.NewString()
	bob   = uuid.NewString()
)

func TestTodoLifecycle(t *testing.T) {
	ts := startServer(t)
	ctx := ts.as(t, alice)

	created, err := ts.client.CreateTodo(ctx, &todov1.CreateTodoRequest{Todo: &todov1.Todo{
		Id:          "ignored",
		Title:       "write tests",
		Description: "for every handler",
	}})
	if err != nil {
		t.Fatalf("CreateTodo: %v", err)
	}
	todo := created.GetTodo()
	if _, err := uuid.Parse(todo.GetId()); err != nil {
		t.Errorf("CreateTodo id = %q, want a UUID", todo.GetId())
	}
	want := &todov1.Todo{
		Id:          todo.GetId(),
		Title:       "write tests",
		Description: "for every handler",
		CreateTime:  timestamppb.New(testStart),
		UpdateTime:  timestamppb.New(testStart),
		Etag:        todo.GetEtag(),
	}
	if diff := cmp.Diff(want, todo, protocmp.Transform()); diff != "" {
		t.Errorf("CreateTodo mismatch (-want +got):\n%s", diff)
	}

	got, err := ts.client.GetTodo(ctx, &todov1.GetTodoRequest{Id: todo.GetId()})
	if err != nil {
		t.Fatalf("GetTodo: %v", err)
	}
	if diff := cmp.Diff(want, got.GetTodo(), protocmp.Transform()); diff != "" {
		t.Errorf("GetTodo mismatch (-want +got):\n%s", diff)
	}

	ts.clock.Advance(time.Minute)
	updated, err := ts.client.UpdateTodo(ctx, &todov1.UpdateTodoRequest{
		Todo:       &todov1.Todo{Id: todo.GetId(), Completed: true, Title: "not in the mask", Etag: todo.GetEtag()},
		UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"completed"}},
	})
	if err != nil {
		t.Fatalf("UpdateTodo: %v", err)
	}
	if updated.GetTodo().GetEtag() == todo.GetEtag() {
		t.Error("UpdateTodo kept the etag, want a new one")
	}
	want.Completed = true
	want.UpdateTime = timestamppb.New(testStart.Add(time.Minute))
	want.CompleteTime = timestamppb.New(testStart.Add(time.Minute))
	want.Etag = updated.GetTodo().GetEtag()
	if diff := cmp.Diff(want, updated.GetTodo(), protocmp.Transform()); diff != "" {
		t.Errorf("UpdateTodo mismatch (-want +got):\n%s", diff)
	}

	list, err := ts.client.ListTodos(ctx, &todov1.ListTodosRequest{})
	if err != nil {
		t.Fatalf("ListTodos: %v", err)
	}
	wantList := &todov1.ListTodosResponse{Todos: []*todov1.Todo{want}}
	if diff := cmp.Diff(wantList, list, protocmp.Transform()); diff != "" {
		t.Errorf("ListTodos mismatch (-want +got):\n%s", diff)
	}

	if _, err := ts.client.DeleteTodo(ctx, &todov1.DeleteTodoRequest{Id: todo.GetId(), Etag: want.Etag}); err != nil {
		t.Fatalf("DeleteTodo: %v", err)
	}
	_, err = ts.client.GetTodo(ctx, &todov1.GetTodoRequest{Id: todo.GetId()})
	wantCode(t, err, codes.NotFound)
}

func TestTodoLifecyclePostgres(t *testing.T) {
	clock := storetest.NewClock(testStart)
	ts := startServerWithStore(t, clock, storetest.OpenPostgres(t, clock.Now))
	ctx := ts.as(t, alice)

	todo := ts.create(t, ctx, "on postgres")
	updated, err := ts.client.UpdateTodo(ctx, &todov1.UpdateTodoRequest{
		Todo:       &todov1.Todo{Id: todo.GetId(), Title: "renamed", Etag: todo.GetEtag()},
		UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"title"}},
	})
	if err != nil {
		t.Fatalf("UpdateTodo: %v", err)
	}
	if got := updated.GetTodo().GetTitle(); got != "renamed" {
		t.Errorf("UpdateTodo title = %q, want %q", got, "renamed")
	}
	_, err = ts.client.UpdateTodo(ctx, &todov1.UpdateTodoRequest{
		Todo:       &todov1.Todo{Id: todo.GetId(), Title: "stale", Etag: todo.GetEtag()},
		UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"title"}},
	})
	wantCode(t, err, codes.Aborted)
}

func TestUsersIsolated(t *testing.T) {
	ts := startServer(t)
	aliceCtx := ts.as(t, alice)
	bobCtx := ts.as(t, bob)

	alices := ts.create(t, aliceCtx, "alice's secret")
	bobs := ts.create(t, bobCtx, "bob's list")

	_, err := ts.client.GetTodo(bobCtx, &todov1.GetTodoRequest{Id: alices.GetId()})
	wantCode(t, err, codes.NotFound)

	_, err = ts.client.UpdateTodo(bobCtx, &todov1.UpdateTodoRequest{
		Todo:       &todov1.Todo{Id: alices.GetId(), Title: "taken over"},
		UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"title"}},
	})
	wantCode(t, err, codes.NotFound)

	// Even the right etag does not reveal that the todo exists.
	_, err = ts.client.DeleteTodo(bobCtx, &todov1.DeleteTodoRequest{Id: alices.GetId(), Etag: alices.GetEtag()})
	wantCode(t, err, codes.NotFound)

	list, err := ts.client.ListTodos(bobCtx, &todov1.ListTodosRequest{})
	if err != nil {
		t.Fatalf("ListTodos as bob: %v", err)
	}
	if diff := cmp.Diff([]*todov1.Todo{bobs}, list.GetTodos(), protocmp.Transform()); diff != "" {
		t.Errorf("ListTodos as bob mismatch (-want +got):\n%s", diff)
	}

	got, err := ts.client.GetTodo(aliceCtx, &todov1.GetTodoRequest{Id: alices.GetId()})
	if err != nil {
		t.Fatalf("GetTodo as alice: %v", err)
	}
	if diff := cmp.Diff(alices, got.GetTodo(), protocmp.Transform()); diff != "" {
		t.Errorf("alice's todo changed (-before +after):\n%s", diff)
	}
}

func TestListPagesStableUnderInserts(t *testing.T) {
	ts := startServer(t)
	ctx := ts.as(t, alice)
	for i := range 7 {
		ts.create(t, ctx, fmt.Sprintf("old %d", i))
		ts.clock.Advance(time.Second)
	}

	var got []string
	token := ""
	for page := 0; ; page++ {
		if page > 10 {
			t.Fatal("ListTodos returned more than 10 pages")
		}
		resp, err := ts.client.ListTodos(ctx, &todov1.ListTodosRequest{PageSize: 3, PageToken: token})
		if err != nil {
			t.Fatalf("ListTodos page %d: %v", page, err)
		}
		for _, todo := range resp.GetTodos() {
			got = append(got, todo.GetTitle())
		}
		// New todos between pages are newer than every todo already
		// listed, so they must not show up on the later pages.
		ts.create(t, ctx, fmt.Sprintf("new %d", page))
		ts.clock.Advance(time.Second)

		token = resp.GetNextPageToken()
		if token == "" {
			break
		}
	}

	want := []string{"old 6", "old 5", "old 4", "old 3", "old 2", "old 1", "old 0"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("titles across pages mismatch (-want +got):\n%s", diff)
	}
}

func TestListExactPageHasNoToken(t *testing.T) {
	ts := startServer(t)
	ctx := ts.as(t, alice)
	for i := range 3 {
		ts.create(t, ctx, fmt.Sprintf("todo %d", i))
	}

	resp, err := ts.client.ListTodos(ctx, &todov1.ListTodosRequest{PageSize: 3})
	if err != nil {
		t.Fatalf("ListTodos: %v", err)
	}
	if len(resp.GetTodos()) != 3 {
		t.Errorf("ListTodos returned %d todos, want 3", len(resp.GetTodos()))
	}
	if resp.GetNextPageToken() != "" {
		t.Errorf("ListTodos next_page_token = %q, want empty on the last page", resp.GetNextPageToken())
	}
}

func TestListDefaultPageSize(t *testing.T) {
	ts := startServer(t)
	ctx := ts.as(t, alice)
	for i := range grpcserver.DefaultPageSize + 1 {
		ts.create(t, ctx, fmt.Sprintf("todo %d", i))
	}

	resp, err := ts.client.ListTodos(ctx, &todov1.ListTodosRequest{})
	if err != nil {
		t.Fatalf("ListTodos: %v", err)
	}
	if got := len(resp.GetTodos()); got != grpcserver.DefaultPageSize {
		t.Errorf("ListTodos returned %d todos, want %d", got, grpcserver.DefaultPageSize)
	}
	if resp.GetNextPageToken() == "" {
		t.Error("ListTodos next_page_token is empty, want a token for the last todo")
	}
}

func TestListFilterCompleted(t *testing.T) {
	ts := startServer(t)
	ctx := ts.as(t, alice)
	for i := range 4 {
		_, err := ts.client.CreateTodo(ctx, &todov1.CreateTodoRequest{Todo: &todov1.Todo{
			Title:     fmt.Sprintf("todo %d", i),
			Completed: i%2 == 1,
		}})
		if err != nil {
			t.Fatalf("CreateTodo: %v", err)
		}
		ts.clock.Advance(time.Second)
	}

	var got []string
	token := ""
	for range 5 {
		resp, err := ts.client.ListTodos(ctx, &todov1.ListTodosRequest{Completed: new(true), PageSize: 1, PageToken: token})
		if err != nil {
			t.Fatalf("ListTodos: %v", err)
		}
		for _, todo := range resp.GetTodos() {
			got = append(got, todo.GetTitle())
		}
		if token = resp.GetNextPageToken(); token == "" {
			break
		}
	}
	if diff := cmp.Diff([]string{"todo 3", "todo 1"}, got); diff != "" {
		t.Errorf("completed todos mismatch (-want +got):\n%s", diff)
	}
}

func TestListPageTokenOtherFilter(t *testing.T) {
	ts := startServer(t)
	ctx := ts.as(t, alice)
	for i := range 3 {
		ts.create(t, ctx, fmt.Sprintf("todo %d", i))
	}
	first, err := ts.client.ListTodos(ctx, &todov1.ListTodosRequest{PageSize: 1, Completed: new(false)})
	if err != nil {
		t.Fatalf("ListTodos: %v", err)
	}
	token := first.GetNextPageToken()

	tests := []struct {
		name string
		req  *todov1.ListTodosRequest
	}{
		{"no filter", &todov1.ListTodosRequest{PageToken: token}},
		{"other filter", &todov1.ListTodosRequest{PageToken: token, Completed: new(true)}},
		{"garbage", &todov1.ListTodosRequest{PageToken: "not a token"}},
		{"truncated", &todov1.ListTodosRequest{PageToken: token[:len(token)-2], Completed: new(false)}},
		{"padded", &todov1.ListTodosRequest{PageToken: token + "=", Completed: new(false)}},
		{"huge", &todov1.ListTodosRequest{PageToken: strings.Repeat("A", 4096)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ts.client.ListTodos(ctx, tt.req)
			wantCode(t, err, codes.InvalidArgument)
			if diff := cmp.Diff([]string{"page_token"}, badRequestFields(t, err)); diff != "" {
				t.Errorf("BadRequest fields mismatch (-want +got):\n%s", diff)
			}
		})
	}

	if _, err := ts.client.ListTodos(ctx, &todov1.ListTodosRequest{PageToken: token, Completed: new(false)}); err != nil {
		t.Errorf("ListTodos with the token and its own filter: %v", err)
	}
}

func TestETagConflict(t *testing.T) {
	ts := startServer(t)
	ctx := ts.as(t, alice)
	original := ts.create(t, ctx, "contended")

	first, err := ts.client.UpdateTodo(ctx, &todov1.UpdateTodoRequest{
		Todo:       &todov1.Todo{Id: original.GetId(), Title: "first writer", Etag: original.GetEtag()},
		UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"title"}},
	})
	if err != nil {
		t.Fatalf("first UpdateTodo: %v", err)
	}

	_, err = ts.client.UpdateTodo(ctx, &todov1.UpdateTodoRequest{
		Todo:       &todov1.Todo{Id: original.GetId(), Title: "second writer", Etag: original.GetEtag()},
		UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"title"}},
	})
	wantCode(t, err, codes.Aborted)

	_, err = ts.client.DeleteTodo(ctx, &todov1.DeleteTodoRequest{Id: original.GetId(), Etag: original.GetEtag()})
	wantCode(t, err, codes.Aborted)

	got, err := ts.client.GetTodo(ctx, &todov1.GetTodoRequest{Id: original.GetId()})
	if err != nil {
		t.Fatalf("GetTodo: %v", err)
	}
	if diff := cmp.Diff(first.GetTodo(), got.GetTodo(), protocmp.Transform()); diff != "" {
		t.Errorf("todo after conflicts mismatch (-first write +stored):\n%s", diff)
	}

	// Without an etag the last writer wins.
	if _, err := ts.client.DeleteTodo(ctx, &todov1.DeleteTodoRequest{Id: original.GetId()}); err != nil {
		t.Errorf("DeleteTodo without etag: %v", err)
	}
}

func TestInvalidArguments(t *testing.T) {
	ts := startServer(t)
	ctx := ts.as(t, alice)
	todo := ts.create(t, ctx, "existing")
	mask := func(paths ...string) *fieldmaskpb.FieldMask { return &fieldmaskpb.FieldMask{Paths: paths} }

	tests := []struct {
		name       string
		call       func() error
		wantFields []string
	}{
		{"create without todo", func() error {
			_, err := ts.client.CreateTodo(ctx, &todov1.CreateTodoRequest{})
			return err
		}, []string{"todo"}},
		{"create empty title", func() error {
			_, err := ts.client.CreateTodo(ctx, &todov1.CreateTodoRequest{Todo: &todov1.Todo{Title: " \t\n"}})
			return err
		}, []string{"todo.title"}},
		{"create long title", func() error {
			_, err := ts.client.CreateTodo(ctx, &todov1.CreateTodoRequest{Todo: &todov1.Todo{
				Title: strings.Repeat("é", grpcserver.MaxTitleBytes/2+1),
			}})
			return err
		}, []string{"todo.title"}},
		{"create long description", func() error {
			_, err := ts.client.CreateTodo(ctx, &todov1.CreateTodoRequest{Todo: &todov1.Todo{
				Title:       "ok",
				Description: strings.Repeat("x", grpcserver.MaxDescriptionBytes+1),
			}})
			return err
		}, []string{"todo.description"}},
		{"create NUL in title and description", func() error {
			_, err := ts.client.CreateTodo(ctx, &todov1.CreateTodoRequest{Todo: &todov1.Todo{
				Title:       "nul\x00",
				Description: "\x00",
			}})
			return err
		}, []string{"todo.title", "todo.description"}},
		{"get empty id", func() error {
			_, err := ts.client.GetTodo(ctx, &todov1.GetTodoRequest{})
			return err
		}, []string{"id"}},
		{"get malformed id", func() error {
			_, err := ts.client.GetTodo(ctx, &todov1.GetTodoRequest{Id: "../../etc/passwd"})
			return err
		}, []string{"id"}},
		{"get id in braces", func() error {
			_, err := ts.client.GetTodo(ctx, &todov1.GetTodoRequest{Id: "{" + todo.GetId() + "}"})
			return err
		}, []string{"id"}},
		{"list page size too large", func() error {
			_, err := ts.client.ListTodos(ctx, &todov1.ListTodosRequest{PageSize: grpcserver.MaxPageSize + 1})
			return err
		}, []string{"page_size"}},
		{"list negative page size", func() error {
			_, err := ts.client.ListTodos(ctx, &todov1.ListTodosRequest{PageSize: -1})
			return err
		}, []string{"page_size"}},
		{"update without todo", func() error {
			_, err := ts.client.UpdateTodo(ctx, &todov1.UpdateTodoRequest{UpdateMask: mask("title", "description", "id")})
			return err
		}, []string{"todo", "update_mask.paths[2]"}},
		{"update without mask", func() error {
			_, err := ts.client.UpdateTodo(ctx, &todov1.UpdateTodoRequest{Todo: &todov1.Todo{Id: todo.GetId(), Title: "x"}})
			return err
		}, []string{"update_mask"}},
		{"update empty mask", func() error {
			_, err := ts.client.UpdateTodo(ctx, &todov1.UpdateTodoRequest{Todo: &todov1.Todo{Id: todo.GetId()}, UpdateMask: mask()})
			return err
		}, []string{"update_mask"}},
		{"update unknown paths", func() error {
			_, err := ts.client.UpdateTodo(ctx, &todov1.UpdateTodoRequest{
				Todo:       &todov1.Todo{Id: todo.GetId(), Title: "x"},
				UpdateMask: mask("title", "id", "etag", "*"),
			})
			return err
		}, []string{"update_mask.paths[1]", "update_mask.paths[2]", "update_mask.paths[3]"}},
		{"update empty title", func() error {
			_, err := ts.client.UpdateTodo(ctx, &todov1.UpdateTodoRequest{
				Todo:       &todov1.Todo{Id: todo.GetId()},
				UpdateMask: mask("title"),
			})
			return err
		}, []string{"todo.title"}},
		{"update malformed id", func() error {
			_, err := ts.client.UpdateTodo(ctx, &todov1.UpdateTodoRequest{
				Todo:       &todov1.Todo{Id: "1 OR 1=1", Completed: true},
				UpdateMask: mask("completed"),
			})
			return err
		}, []string{"todo.id"}},
		{"update long etag", func() error {
			_, err := ts.client.UpdateTodo(ctx, &todov1.UpdateTodoRequest{
				Todo:       &todov1.Todo{Id: todo.GetId(), Completed: true, Etag: strings.Repeat("e", 129)},
				UpdateMask: mask("completed"),
			})
			return err
		}, []string{"todo.etag"}},
		{"delete malformed id", func() error {
			_, err := ts.client.DeleteTodo(ctx, &todov1.DeleteTodoRequest{Id: "nope"})
			return err
		}, []string{"id"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.call()
			wantCode(t, err, codes.InvalidArgument)
			if diff := cmp.Diff(tt.wantFields, badRequestFields(t, err)); diff != "" {
				t.Errorf("BadRequest fields mismatch (-want +got):\n%s", diff)
			}
		})
	}

	got, err := ts.client.GetTodo(ctx, &todov1.GetTodoRequest{Id: todo.GetId()})
	if err != nil {
		t.Fatalf("GetTodo: %v", err)
	}
	if diff := cmp.Diff(todo, got.GetTodo(), protocmp.Transform()); diff != "" {
		t.Errorf("todo changed by rejected requests (-before +after):\n%s", diff)
	}
}

func TestLimitsAccepted(t *testing.T) {
	ts := startServer(t)
	ctx := ts.as(t, alice)

	title := strings.Repeat("🐘", grpcserver.MaxTitleBytes/4)
	description := strings.Repeat("d", grpcserver.MaxDescriptionBytes)
	resp, err := ts.client.CreateTodo(ctx, &todov1.CreateTodoRequest{Todo: &todov1.Todo{Title: title, Description: description}})
	if err != nil {
		t.Fatalf("CreateTodo at the limits: %v", err)
	}
	if resp.GetTodo().GetTitle() != title {
		t.Error("CreateTodo changed a title at the byte limit")
	}
	if _, err := ts.client.ListTodos(ctx, &todov1.ListTodosRequest{PageSize: grpcserver.MaxPageSize}); err != nil {
		t.Errorf("ListTodos with page size %d: %v", grpcserver.MaxPageSize, err)
	}
}

func TestMessageTooLarge(t *testing.T) {
	ts := startServer(t)
	ctx := ts.as(t, alice)

	// Between the application limit and the transport cap, the request is
	// decoded and rejected with a BadRequest naming its largest field.
	request := &todov1.CreateTodoRequest{Todo: &todov1.Todo{
		Title:       "big",
		Description: strings.Repeat("x", 100<<10),
	}}
	_, err := ts.client.CreateTodo(ctx, request)
	wantCode(t, err, codes.InvalidArgument)
	want := []violation{{
		field:       "todo.description",
		description: fmt.Sprintf("request is %d bytes, the limit is %d bytes", proto.Size(request), grpcserver.MaxRequestBytes),
	}}
	if diff := cmp.Diff(want, badRequestViolations(err), cmp.AllowUnexported(violation{})); diff != "" {
		t.Errorf("CreateTodo with a 100 KiB description: BadRequest mismatch (-want +got):\n%s", diff)
	}

	// Over the transport cap, grpc-go rejects the message before any
	// interceptor runs, and the call must still get its log line.
	_, err = ts.client.CreateTodo(ctx, &todov1.CreateTodoRequest{Todo: &todov1.Todo{
		Title:       "big",
		Description: strings.Repeat("x", grpcserver.MaxRecvMsgBytes),
	}})
	wantCode(t, err, codes.ResourceExhausted)

	lines := waitRPCLines(t, ts, 2)
	if len(lines) != 2 {
		t.Fatalf("got %d rpc log lines, want 2:\n%s", len(lines), ts.logs.String())
	}
	if lines[0].Code != "InvalidArgument" {
		t.Errorf("first log line = %+v, want code InvalidArgument", lines[0])
	}
	if lines[1].Code != "ResourceExhausted" || lines[1].Method != "/todo.v1.TodoService/CreateTodo" {
		t.Errorf("second log line = %+v, want CreateTodo with code ResourceExhausted", lines[1])
	}
	if !strings.Contains(lines[1].Err, "larger than max") {
		t.Errorf("second log line err = %q, want grpc-go's reason", lines[1].Err)
	}
}

func TestMessageAtLimitChecksFields(t *testing.T) {
	ts := startServer(t)
	ctx := ts.as(t, alice)

	// A request of exactly MaxRequestBytes passes the size check, so the
	// per-field limit on the description applies.
	request := &todov1.CreateTodoRequest{Todo: &todov1.Todo{Title: "big"}}
	base := proto.Size(request)
	// The description adds a 1-byte tag and a 3-byte length to its text,
	// and the length of todo grows from 1 to 3 bytes.
	request.Todo.Description = strings.Repeat("x", grpcserver.MaxRequestBytes-base-6)
	if got := proto.Size(request); got != grpcserver.MaxRequestBytes {
		t.Fatalf("request is %d bytes, want %d", got, grpcserver.MaxRequestBytes)
	}
	_, err := ts.client.CreateTodo(ctx, request)
	wantCode(t, err, codes.InvalidArgument)
	want := []violation{{
		field:       "todo.description",
		description: fmt.Sprintf("must be at most %d bytes of UTF-8, got %d bytes", grpcserver.MaxDescriptionBytes, len(request.Todo.Description)),
	}}
	if diff := cmp.Diff(want, badRequestViolations(err), cmp.AllowUnexported(violation{})); diff != "" {
		t.Errorf("CreateTodo at the size limit: BadRequest mismatch (-want +got):\n%s", diff)
	}
}

func TestNotFound(t *testing.T) {
	ts := startServer(t)
	ctx := ts.as(t, alice)
	missing := uuid.NewString()

	_, err := ts.client.GetTodo(ctx, &todov1.GetTodoRequest{Id: missing})
	wantCode(t, err, codes.NotFound)
	_, err = ts.client.UpdateTodo(ctx, &todov1.UpdateTodoRequest{
		Todo:       &todov1.Todo{Id: missing, Title: "x", Etag: "any"},
		UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"title"}},
	})
	wantCode(t, err, codes.NotFound)
	_, err = ts.client.DeleteTodo(ctx, &todov1.DeleteTodoRequest{Id: missing})
	wantCode(t, err, codes.NotFound)
}

func TestStoreFailureIsInternal(t *testing.T) {
	ts := startServer(t)
	ctx := ts.as(t, alice)
	if err := ts.store.Close(); err != nil {
		t.Fatalf("close store: %v", err)
	}

	_, err := ts.client.CreateTodo(ctx, &todov1.CreateTodoRequest{Todo: &todov1.Todo{Title: "lost"}})
	wantCode(t, err, codes.Internal)
	if msg := err.Error(); strings.Contains(msg, "sql") || strings.Contains(msg, "database") {
		t.Errorf("INTERNAL message %q reveals the cause, want a generic message", msg)
	}
	waitRPCLines(t, ts, 1)
	if logs := ts.logs.String(); !strings.Contains(logs, "database is closed") {
		t.Errorf("log does not name the cause of the INTERNAL error:\n%s", logs)
	}
}

func TestHostileTitlesRoundTrip(t *testing.T) {
	ts := startServer(t)
	ctx := ts.as(t, alice)

	for _, title := range storetest.HostileTitles {
		created := ts.create(t, ctx, title)
		got, err := ts.client.GetTodo(ctx, &todov1.GetTodoRequest{Id: created.GetId()})
		if err != nil {
			t.Fatalf("GetTodo: %v", err)
		}
		if got.GetTodo().GetTitle() != title {
			t.Errorf("GetTodo title = %q, want %q", got.GetTodo().GetTitle(), title)
		}
	}
}
