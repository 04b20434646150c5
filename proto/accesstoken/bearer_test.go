package accesstoken

import (
	"errors"
	"testing"
)

func TestParseBearer(t *testing.T) {
	tests := []struct {
		name    string
		values  []string
		want    string
		wantErr bool
	}{
		{name: "canonical scheme", values: []string{"Bearer abc.def.ghi"}, want: "abc.def.ghi"},
		{name: "lower-case scheme", values: []string{"bearer abc.def.ghi"}, want: "abc.def.ghi"},
		{name: "upper-case scheme", values: []string{"BEARER abc.def.ghi"}, want: "abc.def.ghi"},

		{name: "no value", values: nil, wantErr: true},
		{name: "empty value", values: []string{""}, wantErr: true},
		{name: "two values", values: []string{"Bearer a.b.c", "Bearer a.b.c"}, wantErr: true},
		{name: "Basic scheme", values: []string{"Basic dXNlcjpwYXNz"}, wantErr: true},
		{name: "scheme without token", values: []string{"Bearer"}, wantErr: true},
		{name: "scheme and space only", values: []string{"Bearer "}, wantErr: true},
		{name: "token without scheme", values: []string{"abc.def.ghi"}, wantErr: true},
		{name: "scheme glued to token", values: []string{"Bearerabc.def.ghi"}, wantErr: true},
		{name: "two spaces", values: []string{"Bearer  abc.def.ghi"}, wantErr: true},
		{name: "tab separator", values: []string{"Bearer\tabc.def.ghi"}, wantErr: true},
		{name: "leading space", values: []string{" Bearer abc.def.ghi"}, wantErr: true},
		{name: "trailing space", values: []string{"Bearer abc.def.ghi "}, wantErr: true},
		{name: "trailing newline", values: []string{"Bearer abc.def.ghi\n"}, wantErr: true},
		{name: "space inside token", values: []string{"Bearer abc.def ghi"}, wantErr: true},
		{name: "non-breaking space", values: []string{"Bearer\u00a0abc.def.ghi"}, wantErr: true},
		{name: "non-ASCII in token", values: []string{"Bearer abc.d\u00e9f.ghi"}, wantErr: true},
		{name: "NUL in token", values: []string{"Bearer abc.def.ghi\x00"}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseBearer(tt.values)
			if tt.wantErr {
				if !errors.Is(err, ErrInvalidToken) || !errors.Is(err, errBearer) {
					t.Errorf("ParseBearer(%q) error = %v, want one wrapping ErrInvalidToken", tt.values, err)
				}
				if got != "" {
					t.Errorf("ParseBearer(%q) = %q, want empty", tt.values, got)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseBearer(%q) error = %v, want nil", tt.values, err)
			}
			if got != tt.want {
				t.Errorf("ParseBearer(%q) = %q, want %q", tt.values, got, tt.want)
			}
		})
	}
}
