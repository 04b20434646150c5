package introspect

import (
	"testing"
)

// BenchmarkVerifyLoopback measures one Verify call against an
// IntrospectToken server on 127.0.0.1 that returns a fixed response. It
// is the floor of introspect mode, because a real auth service adds its
// signature check and database lookups on top.
func BenchmarkVerifyLoopback(b *testing.B) {
	client, _ := startAuthServer(b, respondWith(activeResponse(), nil))
	v := newTestVerifier(b, client, nil)
	ctx := b.Context()

	b.ReportAllocs()
	for b.Loop() {
		if _, err := v.Verify(ctx, testToken); err != nil {
			b.Fatal(err)
		}
	}
}
