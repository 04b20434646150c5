package grpcserver

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"time"

	"github.com/google/uuid"

	"example.com/todoapp/todo-service/internal/store"
)

// A page token is base64url (no padding) of 33 bytes: a version byte, the
// first 8 bytes of the SHA-256 of the list filter, the create time of the
// last todo in unix microseconds (big-endian), and its 16-byte UUID. The
// filter hash ties the token to the request that produced it.
const (
	pageTokenVersion = 1
	pageTokenBytes   = 1 + 8 + 8 + 16
)

var errPageToken = errors.New("invalid page token")

// filterHash returns the 8-byte digest of the ListTodos filter.
func filterHash(completed *bool) [8]byte {
	filter := "completed=any"
	if completed != nil && *completed {
		filter = "completed=true"
	} else if completed != nil {
		filter = "completed=false"
	}
	sum := sha256.Sum256([]byte(filter))
	return [8]byte(sum[:8])
}

func encodePageToken(last store.Todo, completed *bool) string {
	id := uuid.MustParse(last.ID)
	hash := filterHash(completed)

	buf := make([]byte, 0, pageTokenBytes)
	buf = append(buf, pageTokenVersion)
	buf = append(buf, hash[:]...)
	buf = binary.BigEndian.AppendUint64(buf, uint64(last.CreateTime.UnixMicro()))
	buf = append(buf, id[:]...)
	return base64.RawURLEncoding.EncodeToString(buf)
}

// decodePageToken returns the keyset position in token, and errPageToken
// when token is malformed or was issued for another filter.
func decodePageToken(token string, completed *bool) (*store.Cursor, error) {
	if len(token) != base64.RawURLEncoding.EncodedLen(pageTokenBytes) {
		return nil, errPageToken
	}
	buf, err := base64.RawURLEncoding.Strict().DecodeString(token)
	if err != nil || len(buf) != pageTokenBytes || buf[0] != pageTokenVersion {
		return nil, errPageToken
	}
	if hash := filterHash(completed); [8]byte(buf[1:9]) != hash {
		return nil, errPageToken
	}

	micros := int64(binary.BigEndian.Uint64(buf[9:17]))
	id, err := uuid.FromBytes(buf[17:])
	if err != nil {
		return nil, errPageToken
	}
	return &store.Cursor{CreateTime: time.UnixMicro(micros).UTC(), ID: id.String()}, nil
}
