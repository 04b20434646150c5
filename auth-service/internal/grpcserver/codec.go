package grpcserver

import (
	"fmt"
	"strings"
	"sync"
	"unicode/utf8"

	"google.golang.org/grpc/encoding"
	_ "google.golang.org/grpc/encoding/proto" // registers the "proto" codec that requestCodec wraps
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"example.com/todoapp/auth-service/internal/auth"
)

// authPackage is the proto package of the requests that requestCodec checks.
const authPackage = "auth.v1"

// requestCodec is the server's proto codec. It records three kinds of
// auth.v1 request so that the unary interceptor can return INVALID_ARGUMENT
// before any handler runs, which grpc-go (v1.85.0) cannot do because it
// fails them before any interceptor runs:
//   - protobuf-go rejects a string field holding invalid UTF-8 while
//     decoding, and grpc-go turns that into INTERNAL. requestCodec instead
//     replaces the invalid bytes with U+FFFD, decodes the result, and
//     records the field names.
//   - grpc-go rejects a message over grpc.MaxRecvMsgSize with
//     RESOURCE_EXHAUSTED. The server sets that transport cap to
//     MaxRecvMsgBytes, four times MaxRequestBytes, and requestCodec records
//     a message between the two with its size and its largest field.
//   - grpc-go turns any other decode error into INTERNAL. requestCodec
//     instead resets the message and records it as malformed.
//
// NOTE: messages of other packages (health, reflection) that fail to decode
// still end as INTERNAL, which the observer logs at WARN.
type requestCodec struct {
	inner encoding.CodecV2
}

// decodeFindings records the problems requestCodec found in one request.
type decodeFindings struct {
	// invalidUTF8 names the string fields that held invalid UTF-8.
	invalidUTF8 []string
	// size is the encoded size of a request over MaxRequestBytes, and 0
	// for a request within the limit.
	size int
	// largestField is the path of the largest field when size is set.
	largestField string
	// malformed is the decode error of a request that is not valid wire
	// format for its message type, and nil otherwise.
	malformed error
}

// requestFindings maps a decoded request message (by pointer) to its
// *decodeFindings. The unary interceptor removes each entry. Only auth.v1
// messages are recorded, and every auth.v1 method is unary, so no entry
// outlives its request.
var requestFindings sync.Map

func newRequestCodec() requestCodec {
	return requestCodec{inner: encoding.GetCodecV2("proto")}
}

func (c requestCodec) Name() string { return c.inner.Name() }

func (c requestCodec) Marshal(v any) (mem.BufferSlice, error) { return c.inner.Marshal(v) }

func (c requestCodec) Unmarshal(data mem.BufferSlice, v any) error {
	invalidUTF8, err := c.decode(data, v)
	msg, ok := v.(proto.Message)
	if err != nil && (!ok || msg.ProtoReflect().Descriptor().ParentFile().Package() != authPackage) {
		return err
	}
	if !ok {
		return nil
	}
	findings := &decodeFindings{invalidUTF8: invalidUTF8}
	if err != nil {
		// The interceptor rejects the request before a handler could read
		// the partly decoded fields.
		proto.Reset(msg)
		findings.malformed = err
	}

	// NOTE: messages of other packages (health, reflection) are limited
	// only by the transport cap MaxRecvMsgBytes.
	desc := msg.ProtoReflect().Descriptor()
	if data.Len() > MaxRequestBytes && desc.ParentFile().Package() == authPackage {
		findings.size = data.Len()
		findings.largestField = largestField(data.Materialize(), desc, "", 0)
	}
	if len(findings.invalidUTF8) > 0 || findings.size > 0 || findings.malformed != nil {
		requestFindings.Store(msg, findings)
	}
	return nil
}

// decode unmarshals data into v. For an auth.v1 request with invalid UTF-8
// in string fields, it decodes a repaired copy and returns the names of
// those fields.
func (c requestCodec) decode(data mem.BufferSlice, v any) ([]string, error) {
	err := c.inner.Unmarshal(data, v)
	if err == nil {
		return nil, nil
	}
	msg, ok := v.(proto.Message)
	if !ok {
		return nil, err
	}
	desc := msg.ProtoReflect().Descriptor()
	if desc.ParentFile().Package() != authPackage {
		return nil, err
	}

	fixed, fields, ok := replaceInvalidUTF8(data.Materialize(), desc)
	if !ok || len(fields) == 0 {
		return nil, err
	}
	if err := proto.Unmarshal(fixed, msg); err != nil {
		return nil, err
	}
	return fields, nil
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

// takeFindings returns an *auth.InvalidArgumentError for the problems that
// requestCodec found in req, or nil, and deletes the entry of req. A
// request over MaxRequestBytes gets only the size violation, because its
// other fields are not checked. A request that failed to decode gets a
// *malformedRequestError.
func takeFindings(req any) error {
	value, ok := requestFindings.LoadAndDelete(req)
	if !ok {
		return nil
	}
	findings := value.(*decodeFindings)
	if findings.malformed != nil && findings.size == 0 {
		return &malformedRequestError{err: findings.malformed}
	}
	if findings.size > 0 {
		return &auth.InvalidArgumentError{Violations: []auth.FieldViolation{{
			Field:       findings.largestField,
			Description: fmt.Sprintf("request is %d bytes, the limit is %d bytes", findings.size, MaxRequestBytes),
		}}}
	}
	var violations []auth.FieldViolation
	for _, field := range findings.invalidUTF8 {
		violations = append(violations, auth.FieldViolation{Field: field, Description: "must be valid UTF-8"})
	}
	return &auth.InvalidArgumentError{Violations: violations}
}

// malformedRequestError is a request that is not valid protobuf wire format
// for its message type. toStatus maps it to INVALID_ARGUMENT with a fixed
// message, so that no part of the request goes back to the client.
type malformedRequestError struct {
	err error
}

func (e *malformedRequestError) Error() string { return "malformed request: " + e.err.Error() }

func (e *malformedRequestError) Unwrap() error { return e.err }
