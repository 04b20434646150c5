package accesstoken

import (
	"errors"
	"unicode/utf8"
)

// The scanner below reads the decoded header and payload. It accepts only
// RFC 8259 JSON with valid UTF-8 and no lone surrogates, reads numbers as
// raw text so dates can be checked for integer form, and allocates
// nothing: strings are unescaped in place inside the caller's buffer.

const (
	// maxJSONDepth bounds the nesting of values the scanner skips, such
	// as an unknown claim holding an object.
	maxJSONDepth = 16

	// maxMembers bounds the members of the header or payload object, so
	// the duplicate check stays cheap.
	maxMembers = 32
)

var errJSONSyntax = errors.New("invalid JSON")

type jsonScanner struct {
	data []byte
	pos  int

	names [maxMembers][]byte // member names seen so far, for duplicates
	count int
}

func (s *jsonScanner) skipSpace() {
	for s.pos < len(s.data) {
		switch s.data[s.pos] {
		case ' ', '\t', '\n', '\r':
			s.pos++
		default:
			return
		}
	}
}

// peek returns the next byte after white space, or 0 at the end.
func (s *jsonScanner) peek() byte {
	s.skipSpace()
	if s.pos >= len(s.data) {
		return 0
	}
	return s.data[s.pos]
}

func (s *jsonScanner) consume(c byte) bool {
	if s.peek() == c {
		s.pos++
		return true
	}
	return false
}

// beginObject consumes the opening brace of the top-level object.
func (s *jsonScanner) beginObject() bool {
	return s.consume('{')
}

// nextMember reads the next member name of the top-level object and the
// colon after it. It returns ok=false at the closing brace, after which
// only white space may follow. duplicate reports a name seen before.
func (s *jsonScanner) nextMember() (name []byte, ok, duplicate bool, err error) {
	if s.count > 0 {
		if s.consume('}') {
			return nil, false, false, s.end()
		}
		if !s.consume(',') {
			return nil, false, false, errJSONSyntax
		}
	} else if s.consume('}') {
		return nil, false, false, s.end()
	}

	if s.count == maxMembers {
		return nil, false, false, errJSONSyntax
	}
	name, err = s.readName()
	if err != nil {
		return nil, false, false, err
	}

	for _, seen := range s.names[:s.count] {
		if string(seen) == string(name) {
			return name, true, true, nil
		}
	}
	s.names[s.count] = name
	s.count++
	return name, true, false, nil
}

func (s *jsonScanner) end() error {
	s.skipSpace()
	if s.pos != len(s.data) {
		return errJSONSyntax
	}
	return nil
}

// readName reads a member name and the colon after it.
func (s *jsonScanner) readName() ([]byte, error) {
	if s.peek() != '"' {
		return nil, errJSONSyntax
	}
	name, err := s.readString()
	if err != nil {
		return nil, err
	}
	if !s.consume(':') {
		return nil, errJSONSyntax
	}
	return name, nil
}

// readString reads a string starting at the opening quote and returns its
// unescaped bytes, written in place over the escaped text.
func (s *jsonScanner) readString() ([]byte, error) {
	s.pos++
	start := s.pos
	w := s.pos

	for s.pos < len(s.data) {
		c := s.data[s.pos]
		switch {
		case c == '"':
			s.pos++
			return s.data[start:w], nil

		case c == '\\':
			if s.pos+1 >= len(s.data) {
				return nil, errJSONSyntax
			}
			var b byte
			switch s.data[s.pos+1] {
			case '"':
				b = '"'
			case '\\':
				b = '\\'
			case '/':
				b = '/'
			case 'b':
				b = '\b'
			case 'f':
				b = '\f'
			case 'n':
				b = '\n'
			case 'r':
				b = '\r'
			case 't':
				b = '\t'
			case 'u':
				r, err := s.readUnicodeEscape()
				if err != nil {
					return nil, err
				}
				// The escape just read is at least 6 bytes long and the
				// rune at most 4, so the write stays behind s.pos.
				w += utf8.EncodeRune(s.data[w:], r)
				continue
			default:
				return nil, errJSONSyntax
			}
			s.data[w] = b
			w++
			s.pos += 2

		case c < 0x20:
			return nil, errJSONSyntax

		case c < utf8.RuneSelf:
			s.data[w] = c
			w++
			s.pos++

		default:
			r, size := utf8.DecodeRune(s.data[s.pos:])
			if r == utf8.RuneError && size <= 1 {
				return nil, errJSONSyntax
			}
			copy(s.data[w:], s.data[s.pos:s.pos+size])
			w += size
			s.pos += size
		}
	}
	return nil, errJSONSyntax
}

// readUnicodeEscape reads \uXXXX, or a surrogate pair of two such
// escapes, at s.pos. It rejects lone surrogates.
func (s *jsonScanner) readUnicodeEscape() (rune, error) {
	r, ok := s.hex4(s.pos + 2)
	if !ok {
		return 0, errJSONSyntax
	}
	s.pos += 6

	switch {
	case r >= 0xDC00 && r < 0xE000:
		return 0, errJSONSyntax
	case r >= 0xD800 && r < 0xDC00:
		if s.pos+1 >= len(s.data) || s.data[s.pos] != '\\' || s.data[s.pos+1] != 'u' {
			return 0, errJSONSyntax
		}
		low, ok := s.hex4(s.pos + 2)
		if !ok || low < 0xDC00 || low >= 0xE000 {
			return 0, errJSONSyntax
		}
		s.pos += 6
		return 0x10000 + (r-0xD800)<<10 + (low - 0xDC00), nil
	}
	return r, nil
}

func (s *jsonScanner) hex4(at int) (rune, bool) {
	if at+4 > len(s.data) {
		return 0, false
	}
	var r rune
	for _, c := range s.data[at : at+4] {
		switch {
		case c >= '0' && c <= '9':
			r = r<<4 | rune(c-'0')
		case c >= 'a' && c <= 'f':
			r = r<<4 | rune(c-'a'+10)
		case c >= 'A' && c <= 'F':
			r = r<<4 | rune(c-'A'+10)
		default:
			return 0, false
		}
	}
	return r, true
}

// readNumber reads a number in RFC 8259 grammar and returns its text.
func (s *jsonScanner) readNumber() ([]byte, error) {
	start := s.pos
	if s.pos < len(s.data) && s.data[s.pos] == '-' {
		s.pos++
	}

	switch {
	case s.pos < len(s.data) && s.data[s.pos] == '0':
		s.pos++
	case s.digits() == 0:
		return nil, errJSONSyntax
	}

	if s.pos < len(s.data) && s.data[s.pos] == '.' {
		s.pos++
		if s.digits() == 0 {
			return nil, errJSONSyntax
		}
	}

	if s.pos < len(s.data) && (s.data[s.pos] == 'e' || s.data[s.pos] == 'E') {
		s.pos++
		if s.pos < len(s.data) && (s.data[s.pos] == '+' || s.data[s.pos] == '-') {
			s.pos++
		}
		if s.digits() == 0 {
			return nil, errJSONSyntax
		}
	}
	return s.data[start:s.pos], nil
}

func (s *jsonScanner) digits() int {
	n := 0
	for s.pos < len(s.data) && s.data[s.pos] >= '0' && s.data[s.pos] <= '9' {
		s.pos++
		n++
	}
	return n
}

func (s *jsonScanner) readLiteral(lit string) error {
	if len(s.data)-s.pos < len(lit) || string(s.data[s.pos:s.pos+len(lit)]) != lit {
		return errJSONSyntax
	}
	s.pos += len(lit)
	return nil
}

// skipValue reads and discards one value of any type. It tracks open
// containers in a bit stack instead of recursing, and rejects nesting
// deeper than maxJSONDepth.
func (s *jsonScanner) skipValue() error {
	var objects uint64 // bit i is set when open container i is an object
	depth := 0

	for {
		// Read the start of a value, or a whole scalar value.
		c := s.peek()
		switch {
		case c == '{' || c == '[':
			if depth == maxJSONDepth {
				return errJSONSyntax
			}
			s.pos++
			closer := byte(']')
			if c == '{' {
				objects |= 1 << depth
				closer = '}'
			} else {
				objects &^= 1 << depth
			}
			depth++

			if !s.consume(closer) {
				if c == '{' {
					if _, err := s.readName(); err != nil {
						return err
					}
				}
				continue
			}
			depth--

		case c == '"':
			if _, err := s.readString(); err != nil {
				return err
			}
		case c == 't':
			if err := s.readLiteral("true"); err != nil {
				return err
			}
		case c == 'f':
			if err := s.readLiteral("false"); err != nil {
				return err
			}
		case c == 'n':
			if err := s.readLiteral("null"); err != nil {
				return err
			}
		case c == '-' || (c >= '0' && c <= '9'):
			if _, err := s.readNumber(); err != nil {
				return err
			}
		default:
			return errJSONSyntax
		}

		// A value is complete: close finished containers, or move on to
		// the next element of the innermost one.
		next := false
		for !next {
			if depth == 0 {
				return nil
			}
			isObject := objects&(1<<(depth-1)) != 0
			closer := byte(']')
			if isObject {
				closer = '}'
			}

			switch {
			case s.consume(','):
				if isObject {
					if _, err := s.readName(); err != nil {
						return err
					}
				}
				next = true
			case s.consume(closer):
				depth--
			default:
				return errJSONSyntax
			}
		}
	}
}
