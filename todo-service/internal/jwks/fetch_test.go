package jwks

import (
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"example.com/todoapp/proto/accesstoken"
)

// fault is a misbehaviour of the JWKS endpoint.
type fault struct {
	name    string
	outcome string
	// requests is the number of requests the endpoint receives in the
	// test: one good fetch and two failed ones. Zero means 3.
	requests int64
	// refuse makes every fetch after the first connect to a port that
	// refuses the connection. The cache then uses a client that dials
	// for each fetch; the other faults use the default client.
	refuse bool
	// hang marks a fault that makes fetches time out. The test then uses a
	// fetch timeout of 100ms so that the timeout fires quickly.
	hang bool
	// inject switches env's endpoint to the fault.
	inject func(t *testing.T, env *testEnv)
}

func statusFault(code int) func(*testing.T, *testEnv) {
	return func(t *testing.T, env *testEnv) {
		env.server.serve(func(w http.ResponseWriter, r *http.Request) {
			http.Error(w, http.StatusText(code), code)
		})
	}
}

func bodyFault(body string) func(*testing.T, *testEnv) {
	return func(t *testing.T, env *testEnv) {
		env.server.serveBody("max-age=60", []byte(body))
	}
}

func keysFault(keys ...func() map[string]any) func(*testing.T, *testEnv) {
	return func(t *testing.T, env *testEnv) {
		jwks := make([]map[string]any, 0, len(keys))
		for _, key := range keys {
			jwks = append(jwks, key())
		}
		env.server.serveBody("", jwksBody(t, jwks...))
	}
}

// oversizedKeySet returns a valid key set padded with spaces to size bytes.
func oversizedKeySet(t *testing.T, size int) []byte {
	t.Helper()
	body := jwksBody(t, publicJWK("a", keyA()))
	return append(body, bytes.Repeat([]byte(" "), size-len(body))...)
}

func redirectFault(target func(t *testing.T, env *testEnv) string) func(*testing.T, *testEnv) {
	return func(t *testing.T, env *testEnv) {
		location := target(t, env)
		env.server.serve(func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, location, http.StatusFound)
		})
	}
}

var fetchFaults = []fault{
	{
		name:     "connection refused",
		outcome:  outcomeNetworkError,
		requests: 1, // the failed fetches reach only the refusing port
		refuse:   true,
		inject:   func(t *testing.T, env *testEnv) {},
	},
	{
		name:    "timeout before headers",
		outcome: outcomeTimeout,
		hang:    true,
		inject: func(t *testing.T, env *testEnv) {
			env.server.serveHang(t)
		},
	},
	{
		name:    "timeout during body",
		outcome: outcomeTimeout,
		hang:    true,
		inject: func(t *testing.T, env *testEnv) {
			env.server.serve(func(w http.ResponseWriter, r *http.Request) {
				w.WriteHeader(http.StatusOK)
				_, _ = w.Write([]byte(`{"keys":[`))
				w.(http.Flusher).Flush()
				<-r.Context().Done()
			})
		},
	},
	{
		name:    "truncated body",
		outcome: outcomeNetworkError,
		inject: func(t *testing.T, env *testEnv) {
			env.server.serve(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Length", "1000")
				_, _ = w.Write([]byte(`{"keys":[`))
			})
		},
	},
	{name: "status 500", outcome: outcomeStatus, inject: statusFault(http.StatusInternalServerError)},
	{name: "status 404", outcome: outcomeStatus, inject: statusFault(http.StatusNotFound)},
	{name: "status 204", outcome: outcomeStatus, inject: statusFault(http.StatusNoContent)},
	{name: "html body", outcome: outcomeInvalidBody, inject: bodyFault("<!doctype html><html><body>Bad gateway</body></html>")},
	{name: "plain text body", outcome: outcomeInvalidBody, inject: bodyFault("service unavailable")},
	{name: "empty body", outcome: outcomeInvalidBody, inject: bodyFault("")},
	{name: "json array", outcome: outcomeInvalidBody, inject: bodyFault(`[{"kty":"RSA"}]`)},
	{name: "object without keys", outcome: outcomeInvalidBody, inject: bodyFault(`{"kty":"RSA","kid":"a"}`)},
	{name: "null keys", outcome: outcomeInvalidBody, inject: bodyFault(`{"keys":null}`)},
	{name: "keys not an array", outcome: outcomeInvalidBody, inject: bodyFault(`{"keys":{"a":1}}`)},
	{name: "trailing data", outcome: outcomeInvalidBody, inject: bodyFault(`{"keys":[]} {"keys":[]}`)},
	{name: "empty key set", outcome: outcomeEmptySet, inject: bodyFault(`{"keys":[]}`)},
	{
		name:    "too many keys",
		outcome: outcomeTooManyKeys,
		inject:  bodyFault(`{"keys":[` + strings.Repeat(`{},`, 349000) + `{}]}`),
	},
	{
		name:    "no usable key",
		outcome: outcomeNoUsableKey,
		inject: keysFault(
			func() map[string]any { return publicJWK("weak", weakKey()) },
			func() map[string]any { return with(publicJWK("e3", keyB()), map[string]any{"e": "Aw"}) },
			func() map[string]any { return privateJWK("private", keyB()) },
			func() map[string]any { return with(publicJWK("no-alg", keyB()), map[string]any{"alg": nil}) },
			func() map[string]any { return with(publicJWK("no-use", keyB()), map[string]any{"use": nil}) },
		),
	},
	{
		name:    "body over cap with content length",
		outcome: outcomeTooLarge,
		inject: func(t *testing.T, env *testEnv) {
			env.server.serveBody("", oversizedKeySet(t, 1<<20+1))
		},
	},
	{
		name:    "body over cap chunked",
		outcome: outcomeTooLarge,
		inject: func(t *testing.T, env *testEnv) {
			body := oversizedKeySet(t, 1<<20+1)
			env.server.serve(func(w http.ResponseWriter, r *http.Request) {
				// Flushing before the end sends the body chunked, without
				// a Content-Length.
				_, _ = w.Write(body[:100])
				w.(http.Flusher).Flush()
				_, _ = w.Write(body[100:])
			})
		},
	},
	{
		name:    "gzip body over cap",
		outcome: outcomeTooLarge,
		inject: func(t *testing.T, env *testEnv) {
			var compressed bytes.Buffer
			writer := gzip.NewWriter(&compressed)
			_, _ = writer.Write(oversizedKeySet(t, 1<<20+1))
			_ = writer.Close()
			env.server.serve(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Encoding", "gzip")
				_, _ = w.Write(compressed.Bytes())
			})
		},
	},
	{
		name:    "oversized response headers",
		outcome: outcomeNetworkError,
		inject: func(t *testing.T, env *testEnv) {
			body := jwksBody(t, publicJWK("a", keyA()))
			padding := strings.Repeat("x", 8<<10)
			env.server.serve(func(w http.ResponseWriter, r *http.Request) {
				for i := range 10 {
					w.Header().Set(fmt.Sprintf("X-Padding-%d", i), padding)
				}
				_, _ = w.Write(body)
			})
		},
	},
	{
		name:    "redirect to another port",
		outcome: outcomeRedirectRejected,
		inject: redirectFault(func(t *testing.T, env *testEnv) string {
			other := newFakeJWKS(t)
			other.serveBody("", jwksBody(t, publicJWK("b", keyB())))
			t.Cleanup(func() {
				if got := other.fetches(); got != 0 {
					t.Errorf("other endpoint received %d requests, want 0", got)
				}
			})
			return other.URL()
		}),
	},
	{
		name:    "redirect to another host name",
		outcome: outcomeRedirectRejected,
		inject: redirectFault(func(t *testing.T, env *testEnv) string {
			u, err := url.Parse(env.server.URL())
			if err != nil {
				t.Fatalf("url.Parse(%q) error = %v", env.server.URL(), err)
			}
			u.Host = net.JoinHostPort("localhost", u.Port())
			return u.String()
		}),
	},
	{
		name:    "redirect to https",
		outcome: outcomeRedirectRejected,
		inject: redirectFault(func(t *testing.T, env *testEnv) string {
			return strings.Replace(env.server.URL(), "http://", "https://", 1)
		}),
	},
	{
		name:     "redirect loop on the same origin",
		outcome:  outcomeNetworkError,
		requests: 1 + 2*maxRedirects,
		inject: redirectFault(func(t *testing.T, env *testEnv) string {
			return env.server.URL()
		}),
	},
}

// refusableClient returns an HTTP client that opens a new connection for
// each request and, while refuse is set, sends it to a port that refuses
// it.
func refusableClient(t *testing.T, refuse *atomic.Bool) *http.Client {
	t.Helper()
	refused := refusingAddr(t)
	return &http.Client{Transport: &http.Transport{
		DisableKeepAlives: true,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			if refuse.Load() {
				addr = refused
			}
			var dialer net.Dialer
			return dialer.DialContext(ctx, network, addr)
		},
	}}
}

// TestCacheFetchFaultKeepsLastGoodSet plays each fault against a cache that
// holds a good key set: a scheduled refresh and one unknown-kid refetch
// fail, the known key keeps verifying, and a second unknown kid within the
// cooldown starts no fetch.
func TestCacheFetchFaultKeepsLastGoodSet(t *testing.T) {
	for _, tt := range fetchFaults {
		t.Run(tt.name, func(t *testing.T) {
			var refuse atomic.Bool
			env := newTestEnv(t, func(cfg *Config) {
				if tt.hang {
					cfg.FetchTimeout = 100 * time.Millisecond
				}
				if tt.refuse {
					cfg.HTTPClient = refusableClient(t, &refuse)
				}
			})
			env.server.serveBody("", jwksBody(t, publicJWK("a", keyA())))
			env.start(t)

			refuse.Store(tt.refuse)
			tt.inject(t, env)
			env.clock.Advance(10 * time.Minute)
			delay := env.timer.fire(t)

			if delay != time.Minute {
				t.Errorf("retry delay after the first failure = %s, want the min refresh interval 1m", delay)
			}
			env.mustPublicKey(t, "a", keyA())
			env.mustFail(t, "b", accesstoken.ErrUnknownKey)
			env.mustFail(t, "c", accesstoken.ErrUnknownKey)
			env.mustPublicKey(t, "a", keyA())
			if !env.cache.Ready() {
				t.Errorf("Ready() = false while the last good set is fresh, want true")
			}

			if logs := env.logs.String(); !strings.Contains(logs, "outcome="+tt.outcome) {
				t.Errorf("logs lack a line with outcome=%s:\n%s", tt.outcome, logs)
			}
			if got := env.metricValue(t, "todo_jwks_fetches_total", tt.outcome); got != 2 {
				t.Errorf("fetches{outcome=%s} = %v, want 2 (one scheduled, one unknown kid)", tt.outcome, got)
			}
			if got := env.metricValue(t, "todo_jwks_fetches_total", outcomeOK); got != 1 {
				t.Errorf("fetches{outcome=ok} = %v, want 1", got)
			}
			if got := env.metricValue(t, "todo_jwks_unknown_kid_refetches_suppressed_total", ""); got != 1 {
				t.Errorf("refetches suppressed = %v, want 1", got)
			}
			wantRequests := tt.requests
			if wantRequests == 0 {
				wantRequests = 3
			}
			env.wantFetches(t, wantRequests)
		})
	}
}

func TestCacheBodyCapBoundary(t *testing.T) {
	const limit = 4096
	tests := []struct {
		name    string
		size    int
		chunked bool
		want    string
	}{
		{"at cap", limit, false, outcomeOK},
		{"at cap chunked", limit, true, outcomeOK},
		{"one over cap", limit + 1, false, outcomeTooLarge},
		{"one over cap chunked", limit + 1, true, outcomeTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := newTestEnv(t, func(cfg *Config) { cfg.MaxBodyBytes = limit })
			body := oversizedKeySet(t, tt.size)
			env.server.serve(func(w http.ResponseWriter, r *http.Request) {
				if !tt.chunked {
					w.Header().Set("Content-Length", strconv.Itoa(len(body)))
				}
				_, _ = w.Write(body[:10])
				w.(http.Flusher).Flush()
				_, _ = w.Write(body[10:])
			})

			env.start(t)

			if got := env.metricValue(t, "todo_jwks_fetches_total", tt.want); got != 1 {
				t.Errorf("fetches{outcome=%s} = %v, want 1", tt.want, got)
			}
			if got, want := env.cache.Ready(), tt.want == outcomeOK; got != want {
				t.Errorf("Ready() = %v, want %v", got, want)
			}
		})
	}
}

func TestCacheFollowsSameOriginRedirect(t *testing.T) {
	env := newTestEnv(t, nil)
	body := jwksBody(t, publicJWK("a", keyA()))
	env.server.serve(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/moved/jwks.json" {
			http.Redirect(w, r, "/moved/jwks.json", http.StatusMovedPermanently)
			return
		}
		_, _ = w.Write(body)
	})

	env.start(t)

	env.mustPublicKey(t, "a", keyA())
	env.wantFetches(t, 2) // the redirect and the key set
}

func TestCacheKeepsCallerClientRedirectRule(t *testing.T) {
	callerClient := &http.Client{}
	env := newTestEnv(t, func(cfg *Config) { cfg.HTTPClient = callerClient })
	other := newFakeJWKS(t)
	other.serveBody("", jwksBody(t, publicJWK("a", keyA())))
	env.server.serve(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, other.URL(), http.StatusFound)
	})

	env.start(t)

	if got := env.metricValue(t, "todo_jwks_fetches_total", outcomeRedirectRejected); got != 1 {
		t.Errorf("fetches{outcome=redirect_rejected} = %v, want 1 with a caller client lacking CheckRedirect", got)
	}
	if other.fetches() != 0 {
		t.Errorf("other origin received %d requests, want 0", other.fetches())
	}
	if callerClient.CheckRedirect != nil {
		t.Errorf("New changed the caller's http.Client; want it left as it was")
	}
}

func TestCacheRefreshHonoursMaxAge(t *testing.T) {
	tests := []struct {
		cacheControl string
		want         time.Duration
	}{
		{"max-age=120", 2 * time.Minute},
		{"public, max-age=300, must-revalidate", 5 * time.Minute},
		{`max-age="90"`, 90 * time.Second},
		{"max-age=5", time.Minute},
		{"max-age=0", time.Minute},
		{"max-age=86400", 10 * time.Minute},
		{"max-age=99999999999999999999", 10 * time.Minute},
		{"max-age=300, max-age=120", 2 * time.Minute},
		{"no-store", time.Minute},
		{"no-cache", time.Minute},
		{"", 10 * time.Minute},
		{"public", 10 * time.Minute},
		{"max-age=abc", 10 * time.Minute},
		{"max-age=-5", 10 * time.Minute},
	}
	for _, tt := range tests {
		t.Run(tt.cacheControl, func(t *testing.T) {
			env := newTestEnv(t, nil)
			env.server.serveBody(tt.cacheControl, jwksBody(t, publicJWK("a", keyA())))

			if got := env.start(t); got != tt.want {
				t.Errorf("refresh delay with Cache-Control %q = %s, want %s", tt.cacheControl, got, tt.want)
			}
		})
	}
}

func TestCacheRetryBackoff(t *testing.T) {
	t.Run("with a usable set", func(t *testing.T) {
		env := newTestEnv(t, nil)
		env.server.serveBody("max-age=120", jwksBody(t, publicJWK("a", keyA())))
		env.start(t)
		env.server.serve(func(w http.ResponseWriter, r *http.Request) {
			http.Error(w, "down", http.StatusServiceUnavailable)
		})

		want := []time.Duration{time.Minute, 2 * time.Minute, 4 * time.Minute, 8 * time.Minute, 10 * time.Minute, 10 * time.Minute}
		for i, w := range want {
			if got := env.timer.fire(t); got != w {
				t.Errorf("delay after failure %d = %s, want %s", i+1, got, w)
			}
		}

		env.server.serveBody("max-age=120", jwksBody(t, publicJWK("a", keyA())))
		if got := env.timer.fire(t); got != 2*time.Minute {
			t.Errorf("delay after recovery = %s, want the max-age 2m", got)
		}
	})

	t.Run("without a set", func(t *testing.T) {
		env := newTestEnv(t, nil)
		env.server.serve(func(w http.ResponseWriter, r *http.Request) {
			http.Error(w, "down", http.StatusServiceUnavailable)
		})

		want := []time.Duration{
			time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second,
			16 * time.Second, 32 * time.Second, time.Minute, time.Minute,
		}
		if got := env.start(t); got != want[0] {
			t.Errorf("delay after failure 1 = %s, want %s", got, want[0])
		}
		for i, w := range want[1:] {
			if got := env.timer.fire(t); got != w {
				t.Errorf("delay after failure %d = %s, want %s", i+2, got, w)
			}
		}

		env.server.serveBody("", jwksBody(t, publicJWK("a", keyA())))
		if got := env.timer.fire(t); got != 10*time.Minute {
			t.Errorf("delay after the first success = %s, want the max refresh interval 10m", got)
		}
		env.mustPublicKey(t, "a", keyA())
	})
}

func TestParseMaxAge(t *testing.T) {
	tests := []struct {
		values []string
		want   time.Duration
		wantOK bool
	}{
		{nil, 0, false},
		{[]string{"max-age=60"}, time.Minute, true},
		{[]string{"MAX-AGE=60"}, time.Minute, true},
		{[]string{"public", "max-age=60"}, time.Minute, true},
		{[]string{"max-age=60", "max-age=30"}, 30 * time.Second, true},
		{[]string{"s-maxage=60"}, 0, false},
		{[]string{"max-age="}, 0, false},
		{[]string{"max-age=1.5"}, 0, false},
		{[]string{"no-store, max-age=60"}, time.Minute, true},
		{[]string{"no-cache"}, 0, true},
	}
	for _, tt := range tests {
		got, ok := parseMaxAge(tt.values)
		if got != tt.want || ok != tt.wantOK {
			t.Errorf("parseMaxAge(%q) = %s, %v; want %s, %v", tt.values, got, ok, tt.want, tt.wantOK)
		}
	}
}

func TestCheckSameOriginRedirect(t *testing.T) {
	tests := []struct {
		from, to string
		wantOK   bool
	}{
		{"http://127.0.0.1:8081/a", "http://127.0.0.1:8081/b", true},
		{"http://127.0.0.1/a", "http://127.0.0.1:80/b", true},
		{"https://Auth.Example/a", "https://auth.example:443/b", true},
		{"http://[::1]:8081/a", "http://[::1]:8081/b", true},
		{"http://127.0.0.1:8081/a", "http://127.0.0.1:8082/a", false},
		{"http://127.0.0.1:8081/a", "http://localhost:8081/a", false},
		{"http://127.0.0.1:8081/a", "https://127.0.0.1:8081/a", false},
		{"https://127.0.0.1/a", "http://127.0.0.1:443/a", false},
		{"http://[::1]:8081/a", "http://127.0.0.1:8081/a", false},
	}
	for _, tt := range tests {
		from, _ := http.NewRequest(http.MethodGet, tt.from, nil)
		to, _ := http.NewRequest(http.MethodGet, tt.to, nil)

		err := checkSameOriginRedirect(to, []*http.Request{from})
		if (err == nil) != tt.wantOK {
			t.Errorf("checkSameOriginRedirect(%s -> %s) error = %v, want ok = %v", tt.from, tt.to, err, tt.wantOK)
		}
	}
}
