package store

import (
	"database/sql/driver"
	"errors"
	"io"
	"net"
	"strings"
	"syscall"

	"github.com/lib/pq"
)

// IsUnavailable reports whether err means that the database could not be
// reached or is restarting, so the same request may succeed when retried
// later. Callers map such errors to UNAVAILABLE instead of INTERNAL.
func IsUnavailable(err error) bool {
	if err == nil {
		return false
	}

	var netErr net.Error
	var pqErr *pq.Error
	switch {
	case errors.Is(err, driver.ErrBadConn),
		errors.Is(err, io.EOF),
		errors.Is(err, io.ErrUnexpectedEOF),
		errors.Is(err, syscall.ECONNREFUSED),
		errors.Is(err, syscall.ECONNRESET),
		errors.Is(err, syscall.EPIPE),
		errors.As(err, &netErr):
		return true
	case errors.As(err, &pqErr):
		// Class 08 is "connection exception"; 57P01 to 57P03 are the
		// server shutting down or not accepting connections yet.
		code := string(pqErr.Code)
		return strings.HasPrefix(code, "08") || code == "57P01" || code == "57P02" || code == "57P03"
	}
	return false
}
