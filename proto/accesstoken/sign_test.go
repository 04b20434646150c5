package accesstoken

import (
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestSignVerifyRoundTrip(t *testing.T) {
	v, _ := newTestVerifier(t)

	tests := []struct {
		name   string
		claims func() Claims
	}{
		{"one audience", validClaims},
		{"several audiences", func() Claims {
			c := validClaims()
			c.Audience = []string{"other-service", testAudience}
			return c
		}},
		{"no nbf and no email", func() Claims {
			c := validClaims()
			c.NotBefore = time.Time{}
			c.Email = ""
			return c
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			want := tt.claims()
			token := mustSign(t, want)

			got, err := v.Verify(t.Context(), token)
			if err != nil {
				t.Fatalf("Verify(signed token) error = %v, want nil", err)
			}
			if diff := cmp.Diff(&want, got); diff != "" {
				t.Errorf("Verify(signed token) claims mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestVerifyRejectsTamperedPayload(t *testing.T) {
	v, _ := newTestVerifier(t)
	token := mustSign(t, validClaims())

	other := validClaims()
	other.Subject = "11111111-2222-4333-8444-555555555555"
	forged := mustSign(t, other)

	// Header of one token, payload of another, signature of the first.
	h, _, sig := splitToken(t, token)
	_, p, _ := splitToken(t, forged)
	_, err := v.Verify(t.Context(), h+"."+p+"."+sig)
	if !errors.Is(err, ErrInvalidToken) || !errors.Is(err, errBadSignature) {
		t.Errorf("Verify(tampered) error = %v, want %v", err, errBadSignature)
	}
}
