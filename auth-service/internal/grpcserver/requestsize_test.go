package grpcserver

import (
	"bytes"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"

	authv1 "example.com/todoapp/proto/gen/auth/v1"
)

// field returns the wire encoding of string or message field num.
func field(num protowire.Number, value []byte) []byte {
	b := protowire.AppendTag(nil, num, protowire.BytesType)
	return protowire.AppendBytes(b, value)
}

func TestLargestField(t *testing.T) {
	// No auth.v1 request nests messages, so the cases use SignUpResponse:
	// user = 1 (User: id = 1, email = 2), tokens = 2 (TokenPair:
	// access_token = 1, refresh_token = 4).
	desc := (&authv1.SignUpResponse{}).ProtoReflect().Descriptor()
	long := bytes.Repeat([]byte("a"), 300)
	short := bytes.Repeat([]byte("b"), 200)

	tests := []struct {
		name string
		raw  []byte
		want string
	}{
		{
			name: "nested string",
			raw:  append(field(1, field(2, short)), field(2, append(field(1, long), field(4, short)...))...),
			want: "tokens.access_token",
		},
		{
			name: "occurrences of a message merge",
			raw:  append(field(2, field(1, long)), append(field(1, field(2, short)), field(1, field(2, short))...)...),
			want: "user.email",
		},
		{
			name: "unknown field",
			raw:  append(field(1, field(2, short)), field(15, long)...),
			want: "(unknown field 15)",
		},
		{
			name: "unknown field inside a message",
			raw:  field(2, append(field(1, short), field(9, long)...)),
			want: "tokens.(unknown field 9)",
		},
		{
			name: "empty messages",
			raw:  bytes.Repeat(field(1, nil), 10),
			want: "user",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := largestField(tt.raw, desc, "", 0); got != tt.want {
				t.Errorf("largestField() = %q, want %q", got, tt.want)
			}
		})
	}
}
