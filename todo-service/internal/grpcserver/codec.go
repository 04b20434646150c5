package grpcserver

import (
	"context"
	"fmt"
	"strings"
	"unicode/utf8"

	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding"
	_ "google.golang.org/grpc/encoding/proto" // registers the "proto" codec that utf8Codec wraps
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// invalidUTF8Marker is the field number of the unknown fields that
// utf8Codec appends to a request, one per string field that held invalid
// UTF-8, with the field's path as value. It is the largest field number
// protobuf allows, which no message of this API uses.
const invalidUTF8Marker = protowire.MaxValidNumber

// todoPackage is the proto package of the requests that utf8Codec repairs.
const todoPackage = "todo.v1"

// maxRepairDepth bounds the message nesting that utf8Codec walks.
const maxRepairDepth = 32

// utf8Codec is the server's proto codec. protobuf-go rejects a request
// whose string fields hold invalid UTF-8, and grpc-go (v1.85.0) reports it as
// INTERNAL before any interceptor runs. utf8Codec instead replaces the
// invalid bytes with U+FFFD, decodes the result, and marks the request, so
// that the unary interceptor rejects it with INVALID_ARGUMENT and a
// BadRequest naming each field. Other decoding errors, and messages of
// other packages, keep the default behaviour.
type utf8Codec struct {
	base encoding.CodecV2
}

func newUTF8Codec() *utf8Codec {
	return &utf8Codec{base: encoding.GetCodecV2("proto")}
}

func (c *utf8Codec) Name() string {
	return c.base.Name()
}

func (c *utf8Codec) Marshal(v any) (mem.BufferSlice, error) {
	return c.base.Marshal(v)
}

func (c *utf8Codec) Unmarshal(data mem.BufferSlice, v any) error {
	err := c.base.Unmarshal(data, v)
	if err == nil {
		return nil
	}
	msg, ok := v.(proto.Message)
	if !ok {
		return err
	}
	// Only todo.v1 requests are repaired, because only unary calls pass
	// rejectInvalidUTF8, and every todo.v1 method is unary.
	desc := msg.ProtoReflect().Descriptor()
	if desc.ParentFile().Package() != todoPackage {
		return err
	}

	var paths []string
	fixed, ok := repairUTF8(nil, data.Materialize(), desc, "", 0, &paths)
	if !ok || len(paths) == 0 {
		return err
	}
	proto.Reset(msg)
	if proto.Unmarshal(fixed, msg) != nil {
		return err
	}

	m := msg.ProtoReflect()
	unknown := m.GetUnknown()
	for _, path := range paths {
		unknown = protowire.AppendTag(unknown, invalidUTF8Marker, protowire.BytesType)
		unknown = protowire.AppendString(unknown, path)
	}
	m.SetUnknown(unknown)
	return nil
}

// repairUTF8 appends to dst a copy of the wire-format message raw of type
// desc in which every string field holding invalid UTF-8, at any depth, has
// its invalid bytes replaced by U+FFFD. It appends the path of each such
// field to paths. It returns false when raw is not well-formed wire format
// or nests deeper than maxRepairDepth.
func repairUTF8(dst, raw []byte, desc protoreflect.MessageDescriptor, prefix string, depth int, paths *[]string) ([]byte, bool) {
	if depth > maxRepairDepth {
		return nil, false
	}
	occurrences := make(map[protowire.Number]int)
	for len(raw) > 0 {
		num, typ, tagLen := protowire.ConsumeTag(raw)
		if tagLen < 0 {
			return nil, false
		}
		valueLen := protowire.ConsumeFieldValue(num, typ, raw[tagLen:])
		if valueLen < 0 {
			return nil, false
		}
		field, value := raw[:tagLen+valueLen], raw[tagLen:tagLen+valueLen]
		raw = raw[tagLen+valueLen:]

		fd := desc.Fields().ByNumber(num)
		if fd == nil || typ != protowire.BytesType {
			dst = append(dst, field...)
			continue
		}
		path := prefix + string(fd.Name())
		if fd.IsList() {
			path = fmt.Sprintf("%s[%d]", path, occurrences[num])
			occurrences[num]++
		}
		content, _ := protowire.ConsumeBytes(value)

		switch {
		case fd.Kind() == protoreflect.StringKind && !utf8.Valid(content):
			*paths = append(*paths, path)
			dst = protowire.AppendTag(dst, num, typ)
			dst = protowire.AppendString(dst, strings.ToValidUTF8(string(content), "\uFFFD"))
		case fd.Kind() == protoreflect.MessageKind:
			found := len(*paths)
			inner, ok := repairUTF8(nil, content, fd.Message(), path+".", depth+1, paths)
			if !ok {
				return nil, false
			}
			if len(*paths) == found {
				// Nothing changed inside, so the field keeps its bytes.
				dst = append(dst, field...)
				continue
			}
			dst = protowire.AppendTag(dst, num, typ)
			dst = protowire.AppendBytes(dst, inner)
		default:
			dst = append(dst, field...)
		}
	}
	return dst, true
}

// takeInvalidUTF8 removes the marks that utf8Codec left on req and returns
// INVALID_ARGUMENT naming the marked fields, or nil when there are none.
func takeInvalidUTF8(req any) error {
	msg, ok := req.(proto.Message)
	if !ok {
		return nil
	}
	m := msg.ProtoReflect()
	unknown := m.GetUnknown()
	if len(unknown) == 0 {
		return nil
	}

	var kept []byte
	var vs violations
	for len(unknown) > 0 {
		num, typ, tagLen := protowire.ConsumeTag(unknown)
		valueLen := -1
		if tagLen >= 0 {
			valueLen = protowire.ConsumeFieldValue(num, typ, unknown[tagLen:])
		}
		if valueLen < 0 {
			// proto.Unmarshal accepted these bytes, so this does not
			// happen. Keep the rest as it is.
			kept = append(kept, unknown...)
			break
		}
		field := unknown[:tagLen+valueLen]
		unknown = unknown[tagLen+valueLen:]

		if num != invalidUTF8Marker || typ != protowire.BytesType {
			kept = append(kept, field...)
			continue
		}
		// A client can send this field number itself, so the path is
		// client text. It only ever reaches that client's own error.
		path, _ := protowire.ConsumeString(field[tagLen:])
		if !utf8.ValidString(path) || len(path) > 256 {
			path = "(unknown field)"
		}
		vs.add(path, "must be valid UTF-8")
	}
	m.SetUnknown(kept)
	return vs.err()
}

// rejectInvalidUTF8 is a unary interceptor that fails requests marked by
// utf8Codec.
func rejectInvalidUTF8(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if err := takeInvalidUTF8(req); err != nil {
		return nil, err
	}
	return handler(ctx, req)
}
