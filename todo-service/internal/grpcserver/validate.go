package grpcserver

import (
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/google/uuid"

	todov1 "example.com/todoapp/proto/gen/todo/v1"
	"example.com/todoapp/todo-service/internal/store"
)

// Limits on requests. Larger values are rejected with INVALID_ARGUMENT,
// except messages over MaxRecvMsgBytes, which grpc-go rejects with
// RESOURCE_EXHAUSTED before they are decoded.
const (
	MaxTitleBytes       = 512
	MaxDescriptionBytes = 16 << 10
	DefaultPageSize     = 50
	MaxPageSize         = 1000
	// MaxRequestBytes is the largest TodoService request message accepted.
	// It leaves room for a todo with the largest title and description. A
	// larger request, up to MaxRecvMsgBytes, is rejected with a BadRequest
	// that names its largest field.
	MaxRequestBytes = 64 << 10
	// MaxRecvMsgBytes is the transport cap (grpc.MaxRecvMsgSize). The server
	// decodes messages up to this size, which bounds the memory a request
	// takes, and grpc-go rejects larger ones with RESOURCE_EXHAUSTED.
	MaxRecvMsgBytes = 4 * MaxRequestBytes
	// MaxHeaderListBytes bounds the request metadata. grpc-go's default is
	// 16 MiB, and the largest access token accepted is 8 KiB.
	MaxHeaderListBytes = 16 << 10

	maxETagBytes = 128
)

// violations collects the invalid fields of one request.
type violations []fieldViolation

func (vs *violations) add(field, format string, args ...any) {
	*vs = append(*vs, fieldViolation{field: field, description: fmt.Sprintf(format, args...)})
}

// err returns nil when no field is invalid, and INVALID_ARGUMENT otherwise.
func (vs violations) err() error {
	if len(vs) == 0 {
		return nil
	}
	return invalidArgument(vs...)
}

// checkText checks the byte length and UTF-8 encoding of a text field, and
// rejects the NUL character, which PostgreSQL cannot store.
func (vs *violations) checkText(field, value string, maxBytes int, required bool) {
	switch {
	case required && strings.TrimSpace(value) == "":
		vs.add(field, "must not be empty or only white space")
	case len(value) > maxBytes:
		vs.add(field, "must be at most %d bytes of UTF-8, got %d bytes", maxBytes, len(value))
	case !utf8.ValidString(value):
		vs.add(field, "must be valid UTF-8")
	case strings.IndexByte(value, 0) >= 0:
		vs.add(field, "must not contain NUL characters")
	}
}

// checkID checks that value is a UUID, as the server assigns them.
func (vs *violations) checkID(field, value string) {
	if value == "" {
		vs.add(field, "must not be empty")
		return
	}
	if len(value) != 36 {
		vs.add(field, "must be a UUID such as 123e4567-e89b-12d3-a456-426614174000")
		return
	}
	if _, err := uuid.Parse(value); err != nil {
		vs.add(field, "must be a UUID such as 123e4567-e89b-12d3-a456-426614174000")
	}
}

func (vs *violations) checkETag(field, value string) {
	if len(value) > maxETagBytes {
		vs.add(field, "must be at most %d bytes, got %d bytes", maxETagBytes, len(value))
	}
}

// updatablePaths are the update_mask paths UpdateTodo accepts.
var updatablePaths = []string{"title", "description", "completed"}

// requestViolations returns the invalid fields of a TodoService request,
// found by the same checks that its handler runs before it calls the store.
// It returns nil for other messages.
func requestViolations(req any) violations {
	switch req := req.(type) {
	case *todov1.CreateTodoRequest:
		return createViolations(req)
	case *todov1.GetTodoRequest:
		return getViolations(req)
	case *todov1.ListTodosRequest:
		_, _, _, vs := parseListRequest(req)
		return vs
	case *todov1.UpdateTodoRequest:
		return updateViolations(req)
	case *todov1.DeleteTodoRequest:
		return deleteViolations(req)
	}
	return nil
}

func createViolations(req *todov1.CreateTodoRequest) violations {
	var vs violations
	todo := req.GetTodo()
	if todo == nil {
		vs.add("todo", "is required")
		return vs
	}
	vs.checkText("todo.title", todo.GetTitle(), MaxTitleBytes, true)
	vs.checkText("todo.description", todo.GetDescription(), MaxDescriptionBytes, false)
	return vs
}

func getViolations(req *todov1.GetTodoRequest) violations {
	var vs violations
	vs.checkID("id", req.GetId())
	return vs
}

// parseListRequest returns the page size (DefaultPageSize for 0), the
// completed filter and the position after which the page starts, with the
// invalid fields of req.
func parseListRequest(req *todov1.ListTodosRequest) (pageSize int, completed *bool, after *store.Cursor, vs violations) {
	pageSize = int(req.GetPageSize())
	switch {
	case pageSize < 0:
		vs.add("page_size", "must not be negative, got %d", pageSize)
	case pageSize > MaxPageSize:
		vs.add("page_size", "must be at most %d, got %d", MaxPageSize, pageSize)
	case pageSize == 0:
		pageSize = DefaultPageSize
	}

	if req.Completed != nil {
		completed = new(req.GetCompleted())
	}
	if req.GetPageToken() != "" {
		cursor, err := decodePageToken(req.GetPageToken(), completed)
		if err != nil {
			vs.add("page_token", "must be the next_page_token of a previous ListTodos call with the same filter")
		}
		after = cursor
	}
	return pageSize, completed, after, vs
}

// updateViolations checks the todo fields that the update mask names. A
// request without todo gets only the "todo" violation for them, because
// there is no field to check.
func updateViolations(req *todov1.UpdateTodoRequest) violations {
	var vs violations
	todo := req.GetTodo()
	if todo == nil {
		vs.add("todo", "is required")
	} else {
		vs.checkID("todo.id", todo.GetId())
		vs.checkETag("todo.etag", todo.GetEtag())
	}

	paths := req.GetUpdateMask().GetPaths()
	if len(paths) == 0 {
		vs.add("update_mask", "must name at least one of the fields %s", strings.Join(updatablePaths, ", "))
	}
	for i, path := range paths {
		switch path {
		case "title":
			if todo != nil {
				vs.checkText("todo.title", todo.GetTitle(), MaxTitleBytes, true)
			}
		case "description":
			if todo != nil {
				vs.checkText("todo.description", todo.GetDescription(), MaxDescriptionBytes, false)
			}
		case "completed":
		default:
			vs.add(fmt.Sprintf("update_mask.paths[%d]", i), "unknown field %q, the fields are %s",
				truncate(path, 64), strings.Join(updatablePaths, ", "))
		}
	}
	return vs
}

func deleteViolations(req *todov1.DeleteTodoRequest) violations {
	var vs violations
	vs.checkID("id", req.GetId())
	vs.checkETag("etag", req.GetEtag())
	return vs
}
