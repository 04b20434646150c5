package grpcserver

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	todov1 "example.com/todoapp/proto/gen/todo/v1"
	"example.com/todoapp/todo-service/internal/store"
)

// TestHandlersFailClosedWithoutCaller calls a handler directly, without the
// auth interceptor, as a wiring mistake would. It must not reach the store.
func TestHandlersFailClosedWithoutCaller(t *testing.T) {
	svc := &todoService{} // a nil store panics if a handler reaches it
	_, err := svc.GetTodo(t.Context(), &todov1.GetTodoRequest{Id: uuid.NewString()})
	if got := status.Code(err); got != codes.Internal {
		t.Errorf("GetTodo without a caller: code = %v, want Internal", got)
	}
	_, err = svc.ListTodos(t.Context(), &todov1.ListTodosRequest{})
	if got := status.Code(err); got != codes.Internal {
		t.Errorf("ListTodos without a caller: code = %v, want Internal", got)
	}
}

func TestPageTokenRoundTrip(t *testing.T) {
	last := store.Todo{ID: uuid.NewString(), CreateTime: time.Date(2026, 1, 2, 3, 4, 5, 678901000, time.UTC)}
	for _, completed := range []*bool{nil, new(true), new(false)} {
		token := encodePageToken(last, completed)
		cursor, err := decodePageToken(token, completed)
		if err != nil {
			t.Fatalf("decodePageToken(encodePageToken(...)) error = %v", err)
		}
		if cursor.ID != last.ID || !cursor.CreateTime.Equal(last.CreateTime) {
			t.Errorf("decoded cursor = %+v, want id %s and time %v", cursor, last.ID, last.CreateTime)
		}
	}
}

func FuzzDecodePageToken(f *testing.F) {
	last := store.Todo{ID: uuid.NewString(), CreateTime: time.Unix(1700000000, 0)}
	f.Add(encodePageToken(last, nil), false)
	f.Add(encodePageToken(last, new(true)), true)
	f.Add("", false)
	f.Add(strings.Repeat("A", 44), false)

	f.Fuzz(func(t *testing.T, token string, completed bool) {
		cursor, err := decodePageToken(token, &completed)
		if err != nil {
			return
		}
		// A token that decodes must encode back to itself, so no two
		// texts name the same position.
		again := encodePageToken(store.Todo{ID: cursor.ID, CreateTime: cursor.CreateTime}, &completed)
		if again != token {
			t.Errorf("token %q decodes and encodes back to %q", token, again)
		}
	})
}

func FuzzRepairUTF8(f *testing.F) {
	valid, err := proto.Marshal(&todov1.CreateTodoRequest{Todo: &todov1.Todo{Title: "title", Description: "text"}})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(valid)
	f.Add([]byte{0x0a, 0x05, 0x12, 0x03, 'a', 0xff, 'b'})
	f.Add([]byte{0x0a, 0x10, 'x'})

	desc := (&todov1.CreateTodoRequest{}).ProtoReflect().Descriptor()
	f.Fuzz(func(t *testing.T, raw []byte) {
		var paths []string
		fixed, ok := repairUTF8(nil, raw, desc, "", 0, &paths)
		if !ok {
			return
		}
		if len(paths) == 0 && !bytes.Equal(fixed, raw) {
			t.Errorf("repairUTF8 changed a message without invalid UTF-8: %x to %x", raw, fixed)
		}
		var req todov1.CreateTodoRequest
		if err := proto.Unmarshal(fixed, &req); err != nil && strings.Contains(err.Error(), "UTF-8") {
			t.Errorf("repaired message still has invalid UTF-8: %v", err)
		}
	})
}
