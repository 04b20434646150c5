package grpcserver

import (
	"fmt"
	"strings"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// maxFieldDepth bounds the message nesting that largestField walks.
const maxFieldDepth = 32

// largestField returns the proto field path, such as "password", of the
// field that takes the most bytes of the wire-format message raw of type
// desc. The encoded size of a field counts its tag and every occurrence of
// its number. When that field is a singular message, the path continues
// into the largest field of the merged occurrences, so it ends at a scalar,
// string, bytes, repeated or map field. Nesting deeper than maxFieldDepth
// ends the path at the message field. An unknown field is named by its
// number. raw must be well-formed wire format, as it is after a successful
// decode.
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
	if fd.Kind() != protoreflect.MessageKind || fd.IsList() || fd.IsMap() || depth >= maxFieldDepth {
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
