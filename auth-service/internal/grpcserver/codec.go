package grpcserver

import (
	"strings"
	"sync"
	"unicode/utf8"

	"google.golang.org/grpc/encoding"
	_ "google.golang.org/grpc/encoding/proto" // registers the "proto" codec wrapped below
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"example.com/todoapp/auth-service/internal/auth"
)

// utf8Codec is the server's proto codec. protobuf-go rejects a string field
// holding invalid UTF-8 while decoding, and grpc-go turns that into an
// INTERNAL status that never reaches an interceptor. For auth.v1 requests,
// utf8Codec instead replaces the invalid bytes with U+FFFD, decodes the
// result, and records the field names, so that the unary interceptor can
// return INVALID_ARGUMENT with a BadRequest naming each field before any
// handler runs.
type utf8Codec struct {
	inner encoding.CodecV2
}

// invalidUTF8Fields maps a decoded request message (by pointer) to the
// names of its fields that held invalid UTF-8. The unary interceptor
// removes each entry. Only auth.v1 messages are recorded, and every
// auth.v1 method is unary, so no entry outlives its request.
var invalidUTF8Fields sync.Map

func newUTF8Codec() utf8Codec {
	return utf8Codec{inner: encoding.GetCodecV2("proto")}
}

func (c utf8Codec) Name() string { return c.inner.Name() }

func (c utf8Codec) Marshal(v any) (mem.BufferSlice, error) { return c.inner.Marshal(v) }

func (c utf8Codec) Unmarshal(data mem.BufferSlice, v any) error {
	err := c.inner.Unmarshal(data, v)
	if err == nil {
		return nil
	}
	msg, ok := v.(proto.Message)
	if !ok {
		return err
	}
	desc := msg.ProtoReflect().Descriptor()
	if desc.ParentFile().Package() != "auth.v1" {
		return err
	}

	fixed, fields, ok := replaceInvalidUTF8(data.Materialize(), desc)
	if !ok || len(fields) == 0 {
		return err
	}
	if err := proto.Unmarshal(fixed, msg); err != nil {
		return err
	}
	invalidUTF8Fields.Store(msg, fields)
	return nil
}

// replaceInvalidUTF8 copies the top-level fields of a wire-format message,
// replacing invalid UTF-8 in string fields with U+FFFD. It returns the
// names of the fields it changed, and ok=false when the input is not
// well-formed wire format.
func replaceInvalidUTF8(raw []byte, desc protoreflect.MessageDescriptor) (fixed []byte, fields []string, ok bool) {
	fixed = make([]byte, 0, len(raw))
	for len(raw) > 0 {
		num, typ, tagLen := protowire.ConsumeTag(raw)
		if tagLen < 0 {
			return nil, nil, false
		}
		valueLen := protowire.ConsumeFieldValue(num, typ, raw[tagLen:])
		if valueLen < 0 {
			return nil, nil, false
		}
		field := raw[:tagLen+valueLen]
		raw = raw[tagLen+valueLen:]

		fd := desc.Fields().ByNumber(num)
		if typ != protowire.BytesType || fd == nil || fd.Kind() != protoreflect.StringKind {
			fixed = append(fixed, field...)
			continue
		}
		value, _ := protowire.ConsumeBytes(field[tagLen:])
		if utf8.Valid(value) {
			fixed = append(fixed, field...)
			continue
		}
		fields = append(fields, string(fd.Name()))
		fixed = protowire.AppendTag(fixed, num, typ)
		fixed = protowire.AppendString(fixed, strings.ToValidUTF8(string(value), "\uFFFD"))
	}
	return fixed, fields, true
}

// takeInvalidUTF8 returns an *auth.InvalidArgumentError naming the fields
// of req that held invalid UTF-8, or nil, and deletes the entry of req.
func takeInvalidUTF8(req any) error {
	value, ok := invalidUTF8Fields.LoadAndDelete(req)
	if !ok {
		return nil
	}
	var violations []auth.FieldViolation
	for _, field := range value.([]string) {
		violations = append(violations, auth.FieldViolation{Field: field, Description: "must be valid UTF-8"})
	}
	return &auth.InvalidArgumentError{Violations: violations}
}
