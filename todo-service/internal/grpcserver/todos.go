package grpcserver

import (
	"context"
	"errors"
	"unicode/utf8"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	todov1 "example.com/todoapp/proto/gen/todo/v1"
	"example.com/todoapp/todo-service/internal/store"
)

// Store is the storage the todo handlers use. *store.Store implements it.
type Store interface {
	CreateTodo(ctx context.Context, t store.Todo) (store.Todo, error)
	GetTodo(ctx context.Context, userID, id string) (store.Todo, error)
	ListTodos(ctx context.Context, p store.ListParams) ([]store.Todo, error)
	UpdateTodo(ctx context.Context, u store.TodoUpdate) (store.Todo, error)
	DeleteTodo(ctx context.Context, userID, id, etag string) error
}

// todoService implements todov1.TodoServiceServer. Every handler reads the
// caller from the context, where the auth interceptor put it.
type todoService struct {
	todov1.UnimplementedTodoServiceServer
	store Store
}

// CreateTodo implements the CreateTodo RPC.
func (s *todoService) CreateTodo(ctx context.Context, req *todov1.CreateTodoRequest) (*todov1.CreateTodoResponse, error) {
	user, err := caller(ctx)
	if err != nil {
		return nil, err
	}

	if err := createViolations(req).err(); err != nil {
		return nil, err
	}

	todo := req.GetTodo()
	created, err := s.store.CreateTodo(ctx, store.Todo{
		UserID:      user,
		Title:       todo.GetTitle(),
		Description: todo.GetDescription(),
		Completed:   todo.GetCompleted(),
	})
	if err != nil {
		return nil, storeError(ctx, err)
	}
	return &todov1.CreateTodoResponse{Todo: toProto(created)}, nil
}

// GetTodo implements the GetTodo RPC.
func (s *todoService) GetTodo(ctx context.Context, req *todov1.GetTodoRequest) (*todov1.GetTodoResponse, error) {
	user, err := caller(ctx)
	if err != nil {
		return nil, err
	}

	if err := getViolations(req).err(); err != nil {
		return nil, err
	}

	todo, err := s.store.GetTodo(ctx, user, req.GetId())
	if err != nil {
		return nil, storeError(ctx, err)
	}
	return &todov1.GetTodoResponse{Todo: toProto(todo)}, nil
}

// ListTodos implements the ListTodos RPC. It reads one row more than the
// page size to learn whether a next page exists.
func (s *todoService) ListTodos(ctx context.Context, req *todov1.ListTodosRequest) (*todov1.ListTodosResponse, error) {
	user, err := caller(ctx)
	if err != nil {
		return nil, err
	}

	pageSize, completed, after, vs := parseListRequest(req)
	if err := vs.err(); err != nil {
		return nil, err
	}

	todos, err := s.store.ListTodos(ctx, store.ListParams{
		UserID:    user,
		Completed: completed,
		After:     after,
		Limit:     pageSize + 1,
	})
	if err != nil {
		return nil, storeError(ctx, err)
	}

	resp := &todov1.ListTodosResponse{}
	if len(todos) > pageSize {
		todos = todos[:pageSize]
		resp.NextPageToken = encodePageToken(todos[len(todos)-1], completed)
	}
	for _, todo := range todos {
		resp.Todos = append(resp.Todos, toProto(todo))
	}
	return resp, nil
}

// UpdateTodo implements the UpdateTodo RPC.
func (s *todoService) UpdateTodo(ctx context.Context, req *todov1.UpdateTodoRequest) (*todov1.UpdateTodoResponse, error) {
	user, err := caller(ctx)
	if err != nil {
		return nil, err
	}

	if err := updateViolations(req).err(); err != nil {
		return nil, err
	}

	todo := req.GetTodo()
	update := store.TodoUpdate{
		ID:     todo.GetId(),
		UserID: user,
		ETag:   todo.GetEtag(),
	}
	// updateViolations accepted every path, so each is one of updatablePaths.
	for _, path := range req.GetUpdateMask().GetPaths() {
		switch path {
		case "title":
			update.Title = new(todo.GetTitle())
		case "description":
			update.Description = new(todo.GetDescription())
		case "completed":
			update.Completed = new(todo.GetCompleted())
		}
	}

	updated, err := s.store.UpdateTodo(ctx, update)
	if err != nil {
		return nil, storeError(ctx, err)
	}
	return &todov1.UpdateTodoResponse{Todo: toProto(updated)}, nil
}

// DeleteTodo implements the DeleteTodo RPC.
func (s *todoService) DeleteTodo(ctx context.Context, req *todov1.DeleteTodoRequest) (*todov1.DeleteTodoResponse, error) {
	user, err := caller(ctx)
	if err != nil {
		return nil, err
	}

	if err := deleteViolations(req).err(); err != nil {
		return nil, err
	}

	if err := s.store.DeleteTodo(ctx, user, req.GetId(), req.GetEtag()); err != nil {
		return nil, storeError(ctx, err)
	}
	return &todov1.DeleteTodoResponse{}, nil
}

// caller returns the user id of the verified token in ctx. A call without
// one means the auth interceptor did not run, which is a wiring bug, so
// the call fails closed.
func caller(ctx context.Context) (string, error) {
	user := userID(ctx)
	if user == "" {
		recordCause(ctx, errors.New("no verified user in the context: the auth interceptor did not run"))
		return "", status.Error(codes.Internal, msgInternal)
	}
	return user, nil
}

func toProto(t store.Todo) *todov1.Todo {
	out := &todov1.Todo{
		Id:          t.ID,
		Title:       t.Title,
		Description: t.Description,
		Completed:   t.Completed,
		CreateTime:  timestamppb.New(t.CreateTime),
		UpdateTime:  timestamppb.New(t.UpdateTime),
		Etag:        t.ETag,
	}
	if !t.CompleteTime.IsZero() {
		out.CompleteTime = timestamppb.New(t.CompleteTime)
	}
	return out
}

// truncate shortens s to at most n bytes for an error message, cutting at a
// rune boundary.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}
