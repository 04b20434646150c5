package grpcserver

import (
	"fmt"
	"strings"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// tooLargeMark is the value of a tooLargeMarker field: the size of the
// request in bytes and the path of its largest field.
type tooLargeMark struct {
	path string
	size int
}

// Field numbers inside a tooLargeMarker value.
const (
	tooLargeMarkPath protowire.Number = 1
	tooLargeMarkSize protowire.Number = 2
)

// markTooLarge appends a tooLargeMarker field to the unknown fields of m.
func markTooLarge(m protoreflect.Message, size int, path string) {
	var value []byte
	value = protowire.AppendTag(value, tooLargeMarkPath, protowire.BytesType)
	value = protowire.AppendString(value, path)
	value = protowire.AppendTag(value, tooLargeMarkSize, protowire.VarintType)
	value = protowire.AppendVarint(value, uint64(size))

	unknown := m.GetUnknown()
	unknown = protowire.AppendTag(unknown, tooLargeMarker, protowire.BytesType)
	unknown = protowire.AppendBytes(unknown, value)
	m.SetUnknown(unknown)
}

// parseTooLargeMark decodes a tooLargeMarker value. Fields it cannot
// decode are left at their zero values.
func parseTooLargeMark(value []byte) tooLargeMark {
	var mark tooLargeMark
	for len(value) > 0 {
		num, typ, tagLen := protowire.ConsumeTag(value)
		if tagLen < 0 {
			break
		}
		valueLen := protowire.ConsumeFieldValue(num, typ, value[tagLen:])
		if valueLen < 0 {
			break
		}
		switch {
		case num == tooLargeMarkPath && typ == protowire.BytesType:
			path, _ := protowire.ConsumeString(value[tagLen:])
			mark.path = path
		case num == tooLargeMarkSize && typ == protowire.VarintType:
			size, _ := protowire.ConsumeVarint(value[tagLen:])
			mark.size = int(min(size, 1<<31))
		}
		value = value[tagLen+valueLen:]
	}
	return mark
}

// largestField returns the proto field path, such as "todo.description",
// of the field that takes the most bytes of the wire-format message raw of
// type desc. The encoded size of a field counts its tag and every
// occurrence of its number. When that field is a singular message, the
// path continues into the largest field of the merged occurrences, so it
// ends at a scalar, string, bytes, repeated or map field. Nesting deeper
// than maxRepairDepth ends the path at the message field. An unknown field
// is named by its number. raw must be well-formed wire format, as it is
// after a successful decode.
func largestField(raw []byte, desc protoreflect.MessageDescriptor, prefix string, depth int) string {
	sizes := make(map[protowire.Number]int)
	var largest protowire.Number
	for rest := raw; len(rest) > 0; {
		num, typ, tagLen := protowire.ConsumeTag(rest)
		if tagLen < 0 {
			break
		}
		valueLen := protowire.ConsumeFieldValue(num, typ, rest[tagLen:])
		if valueLen < 0 {
			break
		}
		rest = rest[tagLen+valueLen:]

		sizes[num] += tagLen + valueLen
		// Ties go to the field that occurs first.
		if largest == 0 || sizes[num] > sizes[largest] {
			largest = num
		}
	}
	if largest == 0 {
		// The message is empty, so the message field itself is named.
		return strings.TrimSuffix(prefix, ".")
	}

	fd := desc.Fields().ByNumber(largest)
	if fd == nil {
		return fmt.Sprintf("%s(unknown field %d)", prefix, largest)
	}
	path := prefix + string(fd.Name())
	if fd.Kind() != protoreflect.MessageKind || fd.IsList() || fd.IsMap() || depth >= maxRepairDepth {
		return path
	}
	// Occurrences of a singular message field merge, and so does the
	// concatenation of their contents.
	var merged []byte
	for rest := raw; len(rest) > 0; {
		num, typ, tagLen := protowire.ConsumeTag(rest)
		if tagLen < 0 {
			break
		}
		valueLen := protowire.ConsumeFieldValue(num, typ, rest[tagLen:])
		if valueLen < 0 {
			break
		}
		if num == largest && typ == protowire.BytesType {
			content, _ := protowire.ConsumeBytes(rest[tagLen:])
			merged = append(merged, content...)
		}
		rest = rest[tagLen+valueLen:]
	}
	return largestField(merged, fd.Message(), path+".", depth+1)
}
