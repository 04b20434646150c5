package grpcserver_test

import (
	"bytes"
	"fmt"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	todov1 "example.com/todoapp/proto/gen/todo/v1"
	"example.com/todoapp/todo-service/internal/grpcserver"
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
			name:       "create empty title and bad description",
			method:     "/todo.v1.TodoService/CreateTodo",
			request:    stringField(1, append(stringField(2, nil), badDescription...)),
			wantFields: []string{"todo.title", "todo.description"},
		},
		{
			name:       "update bad title and malformed id",
			method:     "/todo.v1.TodoService/UpdateTodo",
			request:    append(stringField(1, append(stringField(1, []byte("1 OR 1=1")), badTitle...)), stringField(2, stringField(1, []byte("title")))...),
			wantFields: []string{"todo.id", "todo.title"},
		},
		{
			name:       "update bad title not in mask",
			method:     "/todo.v1.TodoService/UpdateTodo",
			request:    append(stringField(1, append(goodID, badTitle...)), stringField(2, stringField(1, []byte("completed")))...),
			wantFields: []string{"todo.title"},
		},
		{
			name:       "delete bad id and long etag",
			method:     "/todo.v1.TodoService/DeleteTodo",
			request:    append(stringField(1, []byte("\xfe\xff")), stringField(2, bytes.Repeat([]byte("e"), 129))...),
			wantFields: []string{"id", "etag"},
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

func TestInvalidUTF8WithOtherViolations(t *testing.T) {
	ts := startServer(t)
	ctx := ts.as(t, alice)

	// CreateTodo with an empty title (Todo.title = 2) and a description
	// (Todo.description = 3) of invalid UTF-8 that grows past the limit
	// once each byte becomes the three-byte U+FFFD.
	description := bytes.Repeat([]byte{0xff}, grpcserver.MaxDescriptionBytes/2)
	request := stringField(1, append(stringField(2, nil), stringField(3, description)...))

	var reply []byte
	err := ts.conn.Invoke(ctx, "/todo.v1.TodoService/CreateTodo", &request, &reply, grpc.ForceCodecV2(rawCodec{}))
	wantCode(t, err, codes.InvalidArgument)
	want := []violation{
		{field: "todo.title", description: "must not be empty or only white space"},
		{field: "todo.description", description: "must be valid UTF-8"},
	}
	if diff := cmp.Diff(want, badRequestViolations(err), cmp.AllowUnexported(violation{})); diff != "" {
		t.Errorf("BadRequest mismatch (-want +got):\n%s", diff)
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
	ctx := ts.as(t, alice)

	tests := []struct {
		name    string
		method  string
		request []byte
	}{
		{name: "create invalid tag", method: "/todo.v1.TodoService/CreateTodo", request: []byte{0xff, 0xff, 0xff, 0xff}},
		{name: "get truncated field", method: "/todo.v1.TodoService/GetTodo", request: []byte{0x0a, 0x10, 'x'}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var reply []byte
			err := ts.conn.Invoke(ctx, tt.method, &tt.request, &reply, grpc.ForceCodecV2(rawCodec{}))
			wantCode(t, err, codes.InvalidArgument)
			if got, want := status.Convert(err).Message(), "invalid request: malformed protobuf message"; got != want {
				t.Errorf("status message = %q, want %q", got, want)
			}
		})
	}

	for _, line := range rpcLogLevels(t, waitRPCLines(t, ts, len(tests)), ts.logs.String()) {
		if line.level == "ERROR" {
			t.Errorf("%s logged at level ERROR, want INFO or WARN", line.method)
		}
	}
}

func TestMalformedWireFormatNeedsToken(t *testing.T) {
	ts := startServer(t)
	request := []byte{0xff, 0xff, 0xff, 0xff}

	var reply []byte
	err := ts.conn.Invoke(testContext(t), "/todo.v1.TodoService/CreateTodo", &request, &reply, grpc.ForceCodecV2(rawCodec{}))
	wantCode(t, err, codes.Unauthenticated)
}

// A malformed request to a service outside todo.v1 still fails inside
// grpc-go with INTERNAL, but the client caused it, so it must not be logged
// at level ERROR.
func TestMalformedHealthCheckNotLoggedAsError(t *testing.T) {
	ts := startServer(t)
	request := []byte{0xff, 0xff, 0xff, 0xff}

	var reply []byte
	err := ts.conn.Invoke(testContext(t), "/grpc.health.v1.Health/Check", &request, &reply, grpc.ForceCodecV2(rawCodec{}))
	wantCode(t, err, codes.Internal)

	lines := rpcLogLevels(t, waitRPCLines(t, ts, 1), ts.logs.String())
	if got := lines[0].level; got != "WARN" {
		t.Errorf("malformed health check logged at level %s, want WARN", got)
	}
}

func TestRequestTooLargeNamesField(t *testing.T) {
	ts := startServer(t)
	ctx := ts.as(t, alice)
	todo := ts.create(t, ctx, "existing")

	// Field numbers as in TestInvalidUTF8. No todo.v1 message uses 15.
	goodID := stringField(1, []byte(todo.GetId()))
	var manyPaths []byte
	for range 10 << 10 {
		manyPaths = append(manyPaths, stringField(1, []byte("title"))...)
	}
	halfTitle := stringField(2, bytes.Repeat([]byte("t"), 40<<10))

	tests := []struct {
		name      string
		method    string
		request   []byte
		wantField string
	}{
		{
			name:      "update mask with many paths",
			method:    "/todo.v1.TodoService/UpdateTodo",
			request:   append(stringField(1, append(goodID, stringField(2, []byte("ok"))...)), stringField(2, manyPaths)...),
			wantField: "update_mask.paths",
		},
		{
			name:      "todo sent twice merges",
			method:    "/todo.v1.TodoService/CreateTodo",
			request:   append(stringField(1, halfTitle), stringField(1, append(halfTitle, stringField(3, []byte("d"))...))...),
			wantField: "todo.title",
		},
		{
			name:      "unknown field",
			method:    "/todo.v1.TodoService/GetTodo",
			request:   append(goodID, stringField(15, bytes.Repeat([]byte("u"), 70<<10))...),
			wantField: "(unknown field 15)",
		},
		{
			name:   "size reported before invalid UTF-8",
			method: "/todo.v1.TodoService/CreateTodo",
			request: stringField(1, append(stringField(2, []byte("bad \xff title")),
				stringField(3, bytes.Repeat([]byte("d"), 100<<10))...)),
			wantField: "todo.description",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var reply []byte
			err := ts.conn.Invoke(ctx, tt.method, &tt.request, &reply, grpc.ForceCodecV2(rawCodec{}))
			wantCode(t, err, codes.InvalidArgument)
			want := []violation{{
				field:       tt.wantField,
				description: fmt.Sprintf("request is %d bytes, the limit is %d bytes", len(tt.request), grpcserver.MaxRequestBytes),
			}}
			if diff := cmp.Diff(want, badRequestViolations(err), cmp.AllowUnexported(violation{})); diff != "" {
				t.Errorf("BadRequest mismatch (-want +got):\n%s", diff)
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

func TestRequestAtSizeLimitAccepted(t *testing.T) {
	ts := startServer(t)
	ctx := ts.as(t, alice)

	// A valid CreateTodo padded with unknown field 15, which the server
	// ignores. The padding adds a 1-byte tag and a 3-byte length.
	valid := stringField(1, stringField(2, []byte("padded")))
	padding := bytes.Repeat([]byte("p"), grpcserver.MaxRequestBytes-len(valid)-4)
	request := append(valid, stringField(15, padding)...)
	if len(request) != grpcserver.MaxRequestBytes {
		t.Fatalf("request is %d bytes, want %d", len(request), grpcserver.MaxRequestBytes)
	}

	var reply []byte
	if err := ts.conn.Invoke(ctx, "/todo.v1.TodoService/CreateTodo", &request, &reply, grpc.ForceCodecV2(rawCodec{})); err != nil {
		t.Fatalf("CreateTodo of exactly %d bytes: %v", len(request), err)
	}
	var resp todov1.CreateTodoResponse
	if err := proto.Unmarshal(reply, &resp); err != nil {
		t.Fatalf("decode CreateTodo response: %v", err)
	}
	if resp.GetTodo().GetTitle() != "padded" {
		t.Errorf("created title = %q, want %q", resp.GetTodo().GetTitle(), "padded")
	}

	// One more byte of padding crosses the limit.
	request = append(valid, stringField(15, append(padding, 'p'))...)
	err := ts.conn.Invoke(ctx, "/todo.v1.TodoService/CreateTodo", &request, &reply, grpc.ForceCodecV2(rawCodec{}))
	wantCode(t, err, codes.InvalidArgument)
	if diff := cmp.Diff([]string{"(unknown field 15)"}, badRequestFields(t, err)); diff != "" {
		t.Errorf("BadRequest fields one byte over the limit mismatch (-want +got):\n%s", diff)
	}
	if strings.Contains(fmt.Sprint(err), "ppp") {
		t.Errorf("error %v echoes the request payload", err)
	}
}
