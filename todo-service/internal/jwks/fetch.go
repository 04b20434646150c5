package jwks

import (
	"context"
	"crypto/rsa"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Fetch outcomes, used as metric label values.
const (
	outcomeOK               = "ok"
	outcomeNetworkError     = "network_error"
	outcomeTimeout          = "timeout"
	outcomeRedirectRejected = "redirect_rejected"
	outcomeStatus           = "status"
	outcomeTooLarge         = "too_large"
	outcomeInvalidBody      = "invalid_body"
	outcomeEmptySet         = "empty_set"
	outcomeNoUsableKey      = "no_usable_key"
	outcomeTooManyKeys      = "too_many_keys"
	outcomeCanceled         = "canceled"
)

var fetchOutcomes = []string{
	outcomeOK, outcomeNetworkError, outcomeTimeout, outcomeRedirectRejected, outcomeStatus,
	outcomeTooLarge, outcomeInvalidBody, outcomeEmptySet, outcomeNoUsableKey, outcomeTooManyKeys, outcomeCanceled,
}

const (
	maxRedirects = 10
	// maxResponseHeaderBytes caps the response headers of the default
	// client, far below the net/http default of 10 MiB (Go 1.26).
	maxResponseHeaderBytes = 64 << 10
)

var (
	errRedirectRejected = errors.New("redirect to another origin rejected")
	errClosed           = errors.New("jwks cache is closed")
)

// fetchResult is the outcome of one fetch.
type fetchResult struct {
	outcome string
	err     error // nil only for outcomeOK
	// maxAge is the Cache-Control lifetime of a successful response. It is
	// valid only when hasMaxAge is true.
	maxAge    time.Duration
	hasMaxAge bool
}

// fetchCall is a fetch that one or more callers wait for. result is written
// before done is closed.
type fetchCall struct {
	done   chan struct{}
	result fetchResult
}

// startFetch returns the fetch in flight or starts a new one.
func (c *Cache) startFetch() *fetchCall {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.startFetchLocked()
}

// startFetchLocked is startFetch for a caller that holds c.mu.
func (c *Cache) startFetchLocked() *fetchCall {
	if c.inflight != nil {
		return c.inflight
	}

	call := &fetchCall{done: make(chan struct{})}
	if c.closed {
		call.result = fetchResult{outcome: outcomeCanceled, err: errClosed}
		close(call.done)
		return call
	}

	c.inflight = call
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		call.result = c.fetch(c.ctx)

		c.mu.Lock()
		c.inflight = nil
		c.mu.Unlock()
		close(call.done)
	}()
	return call
}

// fetch downloads and parses the key set, and on success installs and
// persists it. It logs and counts every outcome.
func (c *Cache) fetch(ctx context.Context) fetchResult {
	result, body := c.download(ctx)
	if result.err != nil {
		return c.recordFailure(result)
	}

	parsed, err := parseKeySet(body)
	c.logRejectedKeys("fetched", parsed.rejected)
	if err != nil {
		result.outcome = outcomeInvalidBody
		switch {
		case errors.Is(err, errEmptySet):
			result.outcome = outcomeEmptySet
		case errors.Is(err, errNoUsableKey):
			result.outcome = outcomeNoUsableKey
		case errors.Is(err, errTooManyKeys):
			result.outcome = outcomeTooManyKeys
		}
		result.err = err
		return c.recordFailure(result)
	}

	fetchedAt := c.now()
	c.install(&keySet{keys: parsed.keys, fetchedAt: fetchedAt})
	c.metrics.fetches.WithLabelValues(outcomeOK).Inc()
	c.logger.Debug("fetched key set", "keys", len(parsed.keys), "max_age", result.maxAge)

	c.persist(parsed.keys, fetchedAt)
	return result
}

func (c *Cache) recordFailure(result fetchResult) fetchResult {
	c.metrics.fetches.WithLabelValues(result.outcome).Inc()
	if result.outcome == outcomeCanceled {
		c.logger.Debug("key set fetch canceled", "err", result.err)
		return result
	}

	attrs := []any{"url", redactedURL(c.cfg.URL), "outcome", result.outcome, "err", result.err}
	if set := c.set.Load(); set != nil {
		attrs = append(attrs, "keeping_set_fetched_at", set.fetchedAt)
	}
	c.logger.Warn("failed to fetch key set", attrs...)
	return result
}

// download performs the HTTP request and returns the body of a 200
// response of at most MaxBodyBytes.
func (c *Cache) download(ctx context.Context) (fetchResult, []byte) {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.FetchTimeout)
	defer cancel()

	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.cfg.URL, nil)
	if err != nil {
		return fetchResult{outcome: outcomeNetworkError, err: err}, nil
	}
	req.Header.Set("Accept", "application/jwk-set+json, application/json")

	resp, err := c.client.Do(req)
	if err != nil {
		// On a rejected redirect, Do also returns the previous response
		// with its body already closed, so resp is not used here.
		return fetchResult{outcome: classifyError(ctx, err), err: err}, nil
	}
	defer resp.Body.Close()

	if resp.StatusCode != http.StatusOK {
		// Read a little so the connection can be reused.
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
		return fetchResult{outcome: outcomeStatus, err: fmt.Errorf("unexpected HTTP status %d", resp.StatusCode)}, nil
	}
	if resp.ContentLength > c.cfg.MaxBodyBytes {
		return fetchResult{outcome: outcomeTooLarge, err: fmt.Errorf("content length %d exceeds the max body size %d bytes",
			resp.ContentLength, c.cfg.MaxBodyBytes)}, nil
	}

	body, err := io.ReadAll(io.LimitReader(resp.Body, c.cfg.MaxBodyBytes+1))
	if err != nil {
		return fetchResult{outcome: classifyError(ctx, err), err: fmt.Errorf("failed to read the body: %w", err)}, nil
	}
	if int64(len(body)) > c.cfg.MaxBodyBytes {
		return fetchResult{outcome: outcomeTooLarge, err: fmt.Errorf("body exceeds the max body size %d bytes",
			c.cfg.MaxBodyBytes)}, nil
	}

	maxAge, ok := parseMaxAge(resp.Header.Values("Cache-Control"))
	return fetchResult{outcome: outcomeOK, maxAge: maxAge, hasMaxAge: ok}, body
}

// classifyError maps an error of an HTTP request made under ctx to an
// outcome.
func classifyError(ctx context.Context, err error) string {
	var netErr net.Error
	switch {
	case errors.Is(err, errRedirectRejected):
		return outcomeRedirectRejected
	case errors.Is(ctx.Err(), context.DeadlineExceeded),
		errors.Is(err, context.DeadlineExceeded),
		errors.As(err, &netErr) && netErr.Timeout():
		return outcomeTimeout
	case errors.Is(err, context.Canceled):
		return outcomeCanceled
	default:
		return outcomeNetworkError
	}
}

// persist saves the accepted keys, re-encoded, with their fetch time. A
// failure is logged and counted, and the key set stays in use.
func (c *Cache) persist(keys map[string]*rsa.PublicKey, fetchedAt time.Time) {
	if c.persister == nil {
		return
	}

	body, err := encodeKeySet(keys)
	if err != nil {
		c.metrics.persistErrors.WithLabelValues("save").Inc()
		c.logger.Error("failed to encode the key set for saving", "err", err)
		return
	}

	ctx, cancel := context.WithTimeout(c.ctx, c.cfg.FetchTimeout)
	defer cancel()
	if err := c.persister.SaveKeySet(ctx, body, fetchedAt); err != nil {
		c.metrics.persistErrors.WithLabelValues("save").Inc()
		c.logger.Warn("failed to save the key set", "err", err)
	}
}

// logRejectedKeys logs the keys that a key set of the given source
// ("fetched" or "persisted") contained but that the cache ignores. It logs
// one line for all of them, listing at most ten.
func (c *Cache) logRejectedKeys(source string, rejected []rejectedKey) {
	if len(rejected) == 0 {
		return
	}

	const (
		maxListed = 10
		// maxEntryBytes bounds one entry, because jwx errors can quote
		// member values that the endpoint chose.
		maxEntryBytes = 200
	)
	listed := make([]string, 0, min(len(rejected), maxListed))
	for _, r := range rejected {
		c.metrics.keysRejected.WithLabelValues(r.reason).Inc()
		if len(listed) < maxListed {
			entry := fmt.Sprintf("keys[%d] kid %q: %v", r.index, r.kid, r.err)
			if len(entry) > maxEntryBytes {
				entry = strings.ToValidUTF8(entry[:maxEntryBytes], "") + "..."
			}
			listed = append(listed, entry)
		}
	}
	c.logger.Warn("ignored keys in the key set", "source", source, "count", len(rejected), "keys", listed)
}

// parseMaxAge returns the max-age of Cache-Control header values. With
// several max-age directives it returns the smallest. Without max-age,
// no-store and no-cache count as a max-age of 0. The second result is false
// when the header gives no lifetime.
func parseMaxAge(values []string) (time.Duration, bool) {
	var (
		maxAge  time.Duration
		found   bool
		noCache bool
	)
	for _, value := range values {
		for _, directive := range strings.Split(value, ",") {
			name, arg, _ := strings.Cut(strings.TrimSpace(directive), "=")
			switch strings.ToLower(strings.TrimSpace(name)) {
			case "max-age":
				seconds, ok := parseDeltaSeconds(arg)
				if !ok {
					continue
				}
				if !found || seconds < maxAge {
					maxAge = seconds
				}
				found = true
			case "no-store", "no-cache":
				noCache = true
			}
		}
	}
	if found {
		return maxAge, true
	}
	if noCache {
		return 0, true
	}
	return 0, false
}

// parseDeltaSeconds parses a non-negative number of seconds (RFC 9111,
// section 1.2.2), quoted or not. Values too large for a time.Duration are
// capped.
func parseDeltaSeconds(arg string) (time.Duration, bool) {
	arg = strings.Trim(strings.TrimSpace(arg), `"`)
	if arg == "" || strings.Trim(arg, "0123456789") != "" {
		return 0, false
	}
	seconds, err := strconv.ParseInt(arg, 10, 64)
	if err != nil || seconds > int64(math.MaxInt64/time.Second) {
		return time.Duration(math.MaxInt64), true
	}
	return time.Duration(seconds) * time.Second, true
}

// newHTTPClient returns cfg.HTTPClient, or a new client with FetchTimeout,
// and makes sure redirects stay on the origin of the request.
func newHTTPClient(cfg Config) *http.Client {
	if cfg.HTTPClient != nil {
		client := *cfg.HTTPClient
		if client.CheckRedirect == nil {
			client.CheckRedirect = checkSameOriginRedirect
		}
		return &client
	}

	var transport http.RoundTripper = http.DefaultTransport
	if t, ok := http.DefaultTransport.(*http.Transport); ok {
		clone := t.Clone()
		clone.MaxResponseHeaderBytes = maxResponseHeaderBytes
		transport = clone
	}
	return &http.Client{
		Transport:     transport,
		Timeout:       cfg.FetchTimeout,
		CheckRedirect: checkSameOriginRedirect,
	}
}

// checkSameOriginRedirect is an http.Client CheckRedirect function that
// follows at most ten redirects and rejects any to another scheme, host or
// port than the first request's.
func checkSameOriginRedirect(req *http.Request, via []*http.Request) error {
	if len(via) >= maxRedirects {
		return fmt.Errorf("stopped after %d redirects", maxRedirects)
	}
	from, to := origin(via[0].URL), origin(req.URL)
	if from != to {
		return fmt.Errorf("%w: from %s to %s", errRedirectRejected, from, to)
	}
	return nil
}

// origin returns scheme://host:port of u, lowercased, with the scheme's
// default port filled in.
func origin(u *url.URL) string {
	scheme := strings.ToLower(u.Scheme)
	port := u.Port()
	if port == "" {
		switch scheme {
		case "http":
			port = "80"
		case "https":
			port = "443"
		}
	}
	return scheme + "://" + net.JoinHostPort(strings.ToLower(u.Hostname()), port)
}
