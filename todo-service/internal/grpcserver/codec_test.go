package grpcserver_test

import (
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	todov1 "example.com/todoapp/proto/gen/todo/v1"
)

// rawCodec sends and receives wire bytes as they are, so a test can send
// what a protobuf library would refuse to encode.
type rawCodec struct{}

func (rawCodec) Name() string { return "proto" }

func (rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	return mem.BufferSlice{mem.SliceBuffer(*v.(*[]byte))}, nil
}

func (rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	*v.(*[]byte) = data.Materialize()
	return nil
}

// stringField returns the wire encoding of string or message field num
// with the given bytes.
func stringField(num protowire.Number, value []byte) []byte {
	b := protowire.AppendTag(nil, num, protowire.BytesType)
	return protowire.AppendBytes(b, value)
}

func TestInvalidUTF8(t *testing.T) {
	ts := startServer(t)
	ctx := ts.as(t, alice)
	todo := ts.create(t, ctx, "existing")

	// Field numbers from todo.proto: CreateTodoRequest.todo = 1,
	// Todo.id = 1, Todo.title = 2, Todo.description = 3,
	// UpdateTodoRequest.update_mask = 2, FieldMask.paths = 1,
	// GetTodoRequest.id = 1.
	badTitle := stringField(2, []byte("bad \xff title"))
	badDescription := stringField(3, []byte("\xc3\x28"))
	goodID := stringField(1, []byte(todo.GetId()))

	tests := []struct {
		name       string
		method     string
		request    []byte
		wantFields []string
	}{
		{
			name:       "create title and description",
			method:     "/todo.v1.TodoService/CreateTodo",
			request:    stringField(1, append(badTitle, badDescription...)),
			wantFields: []string{"todo.title", "todo.description"},
		},
		{
			name:       "get id",
			method:     "/todo.v1.TodoService/GetTodo",
			request:    stringField(1, []byte("\xfe\xff")),
			wantFields: []string{"id"},
		},
		{
			name:   "update mask path",
			method: "/todo.v1.TodoService/UpdateTodo",
			request: append(stringField(1, append(goodID, stringField(2, []byte("ok"))...)),
				stringField(2, append(stringField(1, []byte("title")), stringField(1, []byte("ti\x80tle"))...))...),
			wantFields: []string{"update_mask.paths[1]"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var reply []byte
			err := ts.conn.Invoke(ctx, tt.method, &tt.request, &reply, grpc.ForceCodecV2(rawCodec{}))
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
	if !proto.Equal(todo, got.GetTodo()) {
		t.Errorf("todo changed by rejected requests: got %v, want %v", got.GetTodo(), todo)
	}
}

func TestInvalidUTF8NeedsToken(t *testing.T) {
	ts := startServer(t)
	request := stringField(1, []byte("\xff"))

	var reply []byte
	err := ts.conn.Invoke(testContext(t), "/todo.v1.TodoService/GetTodo", &request, &reply, grpc.ForceCodecV2(rawCodec{}))
	wantCode(t, err, codes.Unauthenticated)
}

func TestMalformedWireFormat(t *testing.T) {
	ts := startServer(t)
	request := []byte{0x0a, 0x10, 'x'} // field 1 claims 16 bytes, has 1

	var reply []byte
	err := ts.conn.Invoke(ts.as(t, alice), "/todo.v1.TodoService/GetTodo", &request, &reply, grpc.ForceCodecV2(rawCodec{}))
	if err == nil {
		t.Fatal("GetTodo with truncated wire format succeeded")
	}
}
