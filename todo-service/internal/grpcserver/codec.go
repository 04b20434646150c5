package grpcserver

import (
	"context"
	"fmt"
	"strings"
	"unicode/utf8"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/encoding"
	_ "google.golang.org/grpc/encoding/proto" // registers the "proto" codec that requestCodec wraps
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// invalidUTF8Marker is the field number of the unknown fields that
// requestCodec appends to a request, one per string field that held invalid
// UTF-8, with the field's path as value. It is the largest field number
// protobuf allows, which no message of this API uses.
const invalidUTF8Marker = protowire.MaxValidNumber

// tooLargeMarker is the field number of the unknown field that requestCodec
// appends to a request larger than MaxRequestBytes. Its value is a
// tooLargeMark in wire format. No message of this API uses the number.
const tooLargeMarker = protowire.MaxValidNumber - 1

// malformedMarker is the field number of the unknown field that
// requestCodec puts on an emptied request whose bytes it could not decode.
// No message of this API uses the number.
const malformedMarker = protowire.MaxValidNumber - 2

// msgMalformed is the status message for a request marked malformed. It
// echoes nothing of the request.
const msgMalformed = "invalid request: malformed protobuf message"

// todoPackage is the proto package of the requests that requestCodec checks.
const todoPackage = "todo.v1"

// maxRepairDepth bounds the message nesting that requestCodec walks.
const maxRepairDepth = 32

// requestCodec is the server's proto codec. It marks three kinds of
// todo.v1 request so that the unary interceptor rejectMarkedRequests
// rejects them with INVALID_ARGUMENT, which grpc-go (v1.85.0) cannot do
// because it fails them before any interceptor runs:
//   - protobuf-go rejects a string field holding invalid UTF-8, and grpc-go
//     reports that as INTERNAL. requestCodec instead replaces the invalid
//     bytes with U+FFFD, decodes the result, and marks each field.
//   - grpc-go rejects a message over grpc.MaxRecvMsgSize with
//     RESOURCE_EXHAUSTED. The server sets that transport cap to
//     MaxRecvMsgBytes, four times MaxRequestBytes, and requestCodec marks a
//     message between the two with its size and its largest field.
//   - Any other decoding error is INTERNAL in grpc-go. requestCodec instead
//     empties the message and marks it malformed.
//
// Because the auth interceptor runs before rejectMarkedRequests, a marked
// request without a valid token still gets UNAUTHENTICATED. Messages of
// other packages keep the default behaviour.
type requestCodec struct {
	base encoding.CodecV2
}

func newRequestCodec() *requestCodec {
	return &requestCodec{base: encoding.GetCodecV2("proto")}
}

func (c *requestCodec) Name() string {
	return c.base.Name()
}

func (c *requestCodec) Marshal(v any) (mem.BufferSlice, error) {
	return c.base.Marshal(v)
}

func (c *requestCodec) Unmarshal(data mem.BufferSlice, v any) error {
	if err := c.decode(data, v); err != nil {
		return err
	}
	msg, ok := v.(proto.Message)
	if !ok || data.Len() <= MaxRequestBytes {
		return nil
	}
	// NOTE: messages of other packages (health, reflection) are limited
	// only by the transport cap MaxRecvMsgBytes.
	desc := msg.ProtoReflect().Descriptor()
	if desc.ParentFile().Package() != todoPackage {
		return nil
	}
	// Only unary calls pass rejectMarkedRequests, and every todo.v1 method
	// is unary, so a marked request never reaches a handler.
	markTooLarge(msg.ProtoReflect(), data.Len(), largestField(data.Materialize(), desc, "", 0))
	return nil
}

// decode unmarshals data into v, repairing invalid UTF-8 in todo.v1
// requests and marking the repaired fields. A todo.v1 request that cannot
// be decoded even after the repair is emptied and marked malformed, and
// decode returns nil for it.
func (c *requestCodec) decode(data mem.BufferSlice, v any) error {
	err := c.base.Unmarshal(data, v)
	if err == nil {
		return nil
	}
	msg, ok := v.(proto.Message)
	if !ok {
		return err
	}
	desc := msg.ProtoReflect().Descriptor()
	if desc.ParentFile().Package() != todoPackage {
		return err
	}

	var paths []string
	fixed, ok := repairUTF8(nil, data.Materialize(), desc, "", 0, &paths)
	proto.Reset(msg)
	if !ok || len(paths) == 0 || proto.Unmarshal(fixed, msg) != nil {
		proto.Reset(msg)
		markMalformed(msg.ProtoReflect())
		return nil
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

// markMalformed sets the malformed mark as the only unknown field of m,
// which the caller has reset.
func markMalformed(m protoreflect.Message) {
	mark := protowire.AppendTag(nil, malformedMarker, protowire.BytesType)
	m.SetUnknown(protowire.AppendBytes(mark, nil))
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

// takeMarks removes the marks that requestCodec left on req and returns
// INVALID_ARGUMENT naming the marked fields, or nil when there are none.
// A request marked malformed gets a plain INVALID_ARGUMENT without
// BadRequest, because no field of it could be decoded. A request marked too
// large gets only that violation, because its other fields are not checked.
// A request with invalid UTF-8 also gets the violations of its handler's
// checks, run on the repaired values.
func takeMarks(req any) error {
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
	var invalidUTF8, tooLarge violations
	malformed := false
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

		if typ != protowire.BytesType || (num != invalidUTF8Marker && num != tooLargeMarker && num != malformedMarker) {
			kept = append(kept, field...)
			continue
		}
		if num == malformedMarker {
			malformed = true
			continue
		}
		// A client can send these field numbers itself, so the values are
		// client text. They only ever reach that client's own error.
		value, _ := protowire.ConsumeBytes(field[tagLen:])
		if num == tooLargeMarker {
			mark := parseTooLargeMark(value)
			tooLarge.add(checkedPath(mark.path), "request is %d bytes, the limit is %d bytes", mark.size, MaxRequestBytes)
			continue
		}
		invalidUTF8.add(checkedPath(string(value)), "must be valid UTF-8")
	}
	m.SetUnknown(kept)
	if malformed {
		return status.Error(codes.InvalidArgument, msgMalformed)
	}
	if len(tooLarge) > 0 {
		// requestCodec appends its mark after any the client sent.
		return tooLarge[len(tooLarge)-1:].err()
	}
	if len(invalidUTF8) == 0 {
		return nil
	}
	return mergeViolations(requestViolations(req), invalidUTF8).err()
}

// mergeViolations returns checked, in its order, with the description of
// each field in invalidUTF8 replaced by the UTF-8 one, followed by the
// fields of invalidUTF8 that checked does not name. A repaired field that
// fails another check gets only the UTF-8 violation, because the checked
// value is not what the client sent: each invalid byte became the
// three-byte U+FFFD.
func mergeViolations(checked, invalidUTF8 violations) violations {
	utf8Fields := make(map[string]bool, len(invalidUTF8))
	for _, v := range invalidUTF8 {
		utf8Fields[v.field] = true
	}

	var merged violations
	reported := make(map[string]bool)
	for _, v := range checked {
		if utf8Fields[v.field] {
			if reported[v.field] {
				continue
			}
			v.description = "must be valid UTF-8"
		}
		reported[v.field] = true
		merged = append(merged, v)
	}
	for _, v := range invalidUTF8 {
		if !reported[v.field] {
			reported[v.field] = true
			merged = append(merged, v)
		}
	}
	return merged
}

// checkedPath returns path, or a placeholder when path is too long or not
// valid UTF-8 to be sent back in a BadRequest.
func checkedPath(path string) string {
	if !utf8.ValidString(path) || len(path) > 256 {
		return "(unknown field)"
	}
	return path
}

// rejectMarkedRequests is a unary interceptor that fails requests marked by
// requestCodec.
func rejectMarkedRequests(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if err := takeMarks(req); err != nil {
		return nil, err
	}
	return handler(ctx, req)
}
