package accesstoken

import (
	"bytes"
	"encoding/json"
	"errors"
	"testing"
)

var errDuplicateName = errors.New("duplicate member name")

// scanMemberNames reads a top-level object with jsonScanner, skipping
// every value, and returns its member names.
func scanMemberNames(data []byte) ([]string, error) {
	s := jsonScanner{data: data}
	if !s.beginObject() {
		return nil, errJSONSyntax
	}
	var names []string
	for {
		name, ok, dup, err := s.nextMember()
		if err != nil {
			return nil, err
		}
		if !ok {
			return names, nil
		}
		if dup {
			return nil, errDuplicateName
		}
		names = append(names, string(name))
		if err := s.skipValue(); err != nil {
			return nil, err
		}
	}
}

// decodeMemberNames returns the top-level member names of a JSON object
// as encoding/json reads them.
func decodeMemberNames(t *testing.T, data []byte) []string {
	t.Helper()
	var object map[string]json.RawMessage
	if err := json.Unmarshal(data, &object); err != nil {
		t.Fatalf("json.Unmarshal(%q) error = %v, but jsonScanner accepted it", data, err)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	if _, err := dec.Token(); err != nil {
		t.Fatalf("Token() error = %v", err)
	}
	var names []string
	for dec.More() {
		token, err := dec.Token()
		if err != nil {
			t.Fatalf("Token() error = %v", err)
		}
		names = append(names, token.(string))
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			t.Fatalf("Decode() error = %v", err)
		}
	}
	return names
}

func TestJSONScanner(t *testing.T) {
	tests := []struct {
		name  string
		input string
		want  []string // nil: rejected
	}{
		{"empty object", `{}`, []string{}},
		{"white space", " {\t\"a\" :\r\n1 } \n", []string{"a"}},
		{"every value type", `{"s":"x","n":-1.5e+3,"t":true,"f":false,"z":null,"a":[1,[],{}],"o":{"k":[{"k":"v"}]}}`, []string{"s", "n", "t", "f", "z", "a", "o"}},
		{"escaped names", `{"\u0061\n":1,"\ud83d\ude00":2,"\/\"\\":3}`, []string{"a\n", "\U0001F600", `/"\`}},
		{"non-ASCII name", `{"é":1}`, []string{"é"}},

		{"not an object", `[]`, nil},
		{"empty input", ``, nil},
		{"unterminated object", `{"a":1`, nil},
		{"missing colon", `{"a" 1}`, nil},
		{"missing value", `{"a":}`, nil},
		{"trailing comma", `{"a":1,}`, nil},
		{"leading comma", `{,"a":1}`, nil},
		{"unquoted name", `{a:1}`, nil},
		{"single quotes", `{'a':1}`, nil},
		{"duplicate name", `{"a":1,"a":2}`, nil},
		{"duplicate by escape", `{"a":1,"\u0061":2}`, nil},
		{"trailing data", `{"a":1}x`, nil},
		{"two objects", `{}{}`, nil},
		{"control character", "{\"a\x01\":1}", nil},
		{"invalid UTF-8", "{\"\xc3\x28\":1}", nil},
		{"lone high surrogate", `{"\ud800":1}`, nil},
		{"lone low surrogate", `{"\udc00":1}`, nil},
		{"bad escape", `{"\x":1}`, nil},
		{"short unicode escape", `{"\u12":1}`, nil},
		{"leading zero", `{"a":01}`, nil},
		{"bare minus", `{"a":-}`, nil},
		{"bare fraction", `{"a":1.}`, nil},
		{"bare exponent", `{"a":1e}`, nil},
		{"plus sign", `{"a":+1}`, nil},
		{"truncated literal", `{"a":tru}`, nil},
		{"unclosed array", `{"a":[1,2}`, nil},
		{"array trailing comma", `{"a":[1,]}`, nil},
		{"too deep", `{"a":[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]}`, nil},
		{"byte order mark", "\ufeff{}", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := scanMemberNames([]byte(tt.input))
			if tt.want == nil {
				if err == nil {
					t.Errorf("scan(%q) = %q, want an error", tt.input, got)
				}
				return
			}
			if err != nil {
				t.Fatalf("scan(%q) error = %v, want nil", tt.input, err)
			}
			if len(got) != len(tt.want) {
				t.Fatalf("scan(%q) = %q, want %q", tt.input, got, tt.want)
			}
			for i := range got {
				if got[i] != tt.want[i] {
					t.Errorf("scan(%q) name %d = %q, want %q", tt.input, i, got[i], tt.want[i])
				}
			}
		})
	}
}

// FuzzJSONScanner checks jsonScanner against encoding/json: whatever the
// scanner accepts must be valid JSON with the same member names.
func FuzzJSONScanner(f *testing.F) {
	for _, seed := range []string{
		`{}`,
		`{"a":"b","c":[1,2.5,-3e4,true,false,null,{"d":{}}]}`,
		`{"\u00e9\ud83d\ude00\n":"\"\\\/\b\f\r\t"}`,
		`{"a":1,"a":2}`,
		payloadJSON(nil),
		validHeader,
	} {
		f.Add([]byte(seed))
	}

	f.Fuzz(func(t *testing.T, data []byte) {
		original := bytes.Clone(data)
		names, err := scanMemberNames(data)
		if err != nil {
			return
		}

		want := decodeMemberNames(t, original)
		if len(names) != len(want) {
			t.Fatalf("scan(%q) = %q, encoding/json reads %q", original, names, want)
		}
		for i := range names {
			if names[i] != want[i] {
				t.Errorf("scan(%q) name %d = %q, encoding/json reads %q", original, i, names[i], want[i])
			}
		}
	})
}
