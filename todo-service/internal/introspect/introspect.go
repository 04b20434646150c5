package introspect

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"example.com/todoapp/proto/accesstoken"
	authv1 "example.com/todoapp/proto/gen/auth/v1"
)

// Defaults applied by New to zero Config fields. The last three equal the
// defaults of accesstoken.NewVerifier, so both token check modes accept
// the same tokens when configured with the same flags.
const (
	DefaultTimeout       = 2 * time.Second
	DefaultClockSkew     = 30 * time.Second
	DefaultMaxLifetime   = time.Hour
	DefaultMaxTokenBytes = 8 << 10
)

// Client is the part of authv1.AuthServiceClient that Verifier calls.
type Client interface {
	IntrospectToken(ctx context.Context, in *authv1.IntrospectTokenRequest, opts ...grpc.CallOption) (*authv1.IntrospectTokenResponse, error)
}

// Config configures a Verifier. Zero durations and sizes select the
// defaults.
type Config struct {
	Issuer        string        // compared exactly with iss
	Audiences     []string      // aud must contain at least one of these
	Timeout       time.Duration // per IntrospectToken call, default DefaultTimeout
	ClockSkew     time.Duration // default DefaultClockSkew
	MaxLifetime   time.Duration // upper bound of exp-iat, default DefaultMaxLifetime
	MaxTokenBytes int           // longer tokens are rejected without a call, default DefaultMaxTokenBytes
	Now           func() time.Time
}

// Verifier checks each token with one IntrospectToken call. It is safe for
// concurrent use.
type Verifier struct {
	client        Client
	issuer        string
	audiences     []string
	timeout       time.Duration
	clockSkew     time.Duration
	maxLifetime   time.Duration
	maxTokenBytes int
	now           func() time.Time
	metrics       *metrics
}

// New returns a Verifier that calls client. The request counter and
// latency histogram are registered with reg, which may be nil. New returns
// an error when client is nil, the issuer or an audience is empty, a
// duration or size is negative, or the metrics cannot be registered.
func New(client Client, cfg Config, reg prometheus.Registerer) (*Verifier, error) {
	if client == nil {
		return nil, errors.New("introspect: client is nil")
	}
	if cfg.Issuer == "" {
		return nil, errors.New("introspect: issuer is empty")
	}
	if len(cfg.Audiences) == 0 {
		return nil, errors.New("introspect: no audience configured")
	}
	for i, aud := range cfg.Audiences {
		if aud == "" {
			return nil, fmt.Errorf("introspect: audience %d is empty", i)
		}
	}
	switch {
	case cfg.Timeout < 0:
		return nil, fmt.Errorf("introspect: timeout %v is negative", cfg.Timeout)
	case cfg.ClockSkew < 0:
		return nil, fmt.Errorf("introspect: clock skew %v is negative", cfg.ClockSkew)
	case cfg.MaxLifetime < 0:
		return nil, fmt.Errorf("introspect: max lifetime %v is negative", cfg.MaxLifetime)
	case cfg.MaxTokenBytes < 0:
		return nil, fmt.Errorf("introspect: max token bytes %d is negative", cfg.MaxTokenBytes)
	}

	v := &Verifier{
		client:        client,
		issuer:        cfg.Issuer,
		audiences:     slices.Clone(cfg.Audiences),
		timeout:       cmp.Or(cfg.Timeout, DefaultTimeout),
		clockSkew:     cmp.Or(cfg.ClockSkew, DefaultClockSkew),
		maxLifetime:   cmp.Or(cfg.MaxLifetime, DefaultMaxLifetime),
		maxTokenBytes: cmp.Or(cfg.MaxTokenBytes, DefaultMaxTokenBytes),
		now:           cfg.Now,
		metrics:       newMetrics(),
	}
	if v.now == nil {
		v.now = time.Now
	}
	if reg != nil {
		if err := v.metrics.register(reg); err != nil {
			return nil, err
		}
	}
	return v, nil
}

// Verify sends token to the auth service's IntrospectToken and checks the
// claims of an active token against the configuration and the clock.
//
// An empty or oversized token, an inactive token and one that fails a
// local check yield an error wrapping accesstoken.ErrInvalidToken. A call
// that fails or times out, and an active response that lacks a required
// claim, yield an error wrapping accesstoken.ErrKeysUnavailable. The
// errors built here never include the token, but a failed call's error
// wraps the auth service's gRPC status with its message as sent.
func (v *Verifier) Verify(ctx context.Context, token string) (*accesstoken.Claims, error) {
	if token == "" {
		v.metrics.requests.WithLabelValues(resultRejected).Inc()
		return nil, fmt.Errorf("%w: token is empty", accesstoken.ErrInvalidToken)
	}
	if len(token) > v.maxTokenBytes {
		v.metrics.requests.WithLabelValues(resultRejected).Inc()
		return nil, fmt.Errorf("%w: token is too large (%d bytes, maximum %d)", accesstoken.ErrInvalidToken, len(token), v.maxTokenBytes)
	}

	resp, err := v.call(ctx, token)
	if err != nil {
		v.metrics.requests.WithLabelValues(resultError).Inc()
		return nil, err
	}
	if !resp.GetActive() {
		v.metrics.requests.WithLabelValues(resultInactive).Inc()
		return nil, fmt.Errorf("%w: the auth service reports the token as inactive", accesstoken.ErrInvalidToken)
	}

	claims, err := v.checkClaims(resp)
	switch {
	case errors.Is(err, accesstoken.ErrKeysUnavailable):
		v.metrics.requests.WithLabelValues(resultError).Inc()
		return nil, err
	case err != nil:
		v.metrics.requests.WithLabelValues(resultRejected).Inc()
		return nil, err
	}
	v.metrics.requests.WithLabelValues(resultActive).Inc()
	return claims, nil
}

// call sends one IntrospectToken request bounded by the configured
// timeout. Every failure, whatever its gRPC code, wraps
// accesstoken.ErrKeysUnavailable, because it leaves the token's state
// undecided.
func (v *Verifier) call(ctx context.Context, token string) (*authv1.IntrospectTokenResponse, error) {
	ctx, cancel := context.WithTimeout(ctx, v.timeout)
	defer cancel()

	start := time.Now()
	resp, err := v.client.IntrospectToken(ctx, &authv1.IntrospectTokenRequest{Token: token})
	v.metrics.duration.Observe(time.Since(start).Seconds())
	if err != nil {
		return nil, fmt.Errorf("%w: IntrospectToken call failed with code %s: %w",
			accesstoken.ErrKeysUnavailable, status.Code(err), err)
	}
	return resp, nil
}

// checkClaims converts the claims of an active response and applies the
// checks that the offline verifier applies on top of the signature.
func (v *Verifier) checkClaims(resp *authv1.IntrospectTokenResponse) (*accesstoken.Claims, error) {
	if resp.GetIss() != v.issuer {
		return nil, fmt.Errorf("%w: iss does not match the configured issuer", accesstoken.ErrInvalidToken)
	}
	if !v.audienceMatches(resp.GetAud()) {
		return nil, fmt.Errorf("%w: aud contains none of the configured audiences", accesstoken.ErrInvalidToken)
	}

	sub := resp.GetSub()
	if len(sub) != 36 || uuid.Validate(sub) != nil {
		return nil, malformed("sub is missing or not a UUID")
	}
	if resp.GetJti() == "" {
		return nil, malformed("jti is missing")
	}
	if resp.GetSid() == "" {
		return nil, malformed("sid is missing")
	}
	exp, err := requiredTime("exp", resp.GetExp())
	if err != nil {
		return nil, err
	}
	iat, err := requiredTime("iat", resp.GetIat())
	if err != nil {
		return nil, err
	}
	var nbf time.Time
	if resp.GetNbf() != nil {
		if nbf, err = requiredTime("nbf", resp.GetNbf()); err != nil {
			return nil, err
		}
	}

	if !exp.After(iat) {
		return nil, fmt.Errorf("%w: exp is not after iat", accesstoken.ErrInvalidToken)
	}
	if lifetime := exp.Sub(iat); lifetime > v.maxLifetime {
		return nil, fmt.Errorf("%w: exp-iat is %v, more than the maximum %v", accesstoken.ErrInvalidToken, lifetime, v.maxLifetime)
	}
	now := v.now()
	if !now.Before(exp.Add(v.clockSkew)) {
		return nil, fmt.Errorf("%w: token has expired", accesstoken.ErrInvalidToken)
	}
	if iat.After(now.Add(v.clockSkew)) {
		return nil, fmt.Errorf("%w: iat is in the future", accesstoken.ErrInvalidToken)
	}
	if !nbf.IsZero() && nbf.After(now.Add(v.clockSkew)) {
		return nil, fmt.Errorf("%w: nbf is in the future", accesstoken.ErrInvalidToken)
	}

	return &accesstoken.Claims{
		Issuer:    resp.GetIss(),
		Subject:   sub,
		Audience:  slices.Clone(resp.GetAud()),
		Expiry:    exp,
		IssuedAt:  iat,
		NotBefore: nbf,
		ID:        resp.GetJti(),
		SessionID: resp.GetSid(),
		Email:     resp.GetEmail(),
	}, nil
}

func (v *Verifier) audienceMatches(audiences []string) bool {
	for _, aud := range audiences {
		if slices.Contains(v.audiences, aud) {
			return true
		}
	}
	return false
}

// malformed returns the error for an active response that lacks a claim
// every access token carries. It points at the auth service, not the
// token, so it wraps accesstoken.ErrKeysUnavailable.
func malformed(reason string) error {
	return fmt.Errorf("%w: malformed IntrospectToken response: %s", accesstoken.ErrKeysUnavailable, reason)
}

// requiredTime converts a timestamp claim that must be present and valid.
func requiredTime(claim string, ts *timestamppb.Timestamp) (time.Time, error) {
	if ts == nil {
		return time.Time{}, malformed(claim + " is missing")
	}
	if err := ts.CheckValid(); err != nil {
		return time.Time{}, malformed(fmt.Sprintf("%s is invalid: %v", claim, err))
	}
	t := ts.AsTime()
	if t.Unix() <= 0 {
		return time.Time{}, malformed(claim + " is not after 1970")
	}
	return t, nil
}
