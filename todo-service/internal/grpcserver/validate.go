package grpcserver

import (
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/google/uuid"
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
