package jwks

import (
	"context"
	"time"
)

// firstRetryDelay is the first retry delay while no usable key set is
// loaded. It is short so that a todo service started before the auth
// service becomes ready soon after the auth service does.
const firstRetryDelay = time.Second

// run fetches the key set at once and then again after each delay that
// nextDelay returns, until ctx is done.
func (c *Cache) run(ctx context.Context) {
	defer c.wg.Done()

	failures := 0
	for {
		call := c.startFetch()
		select {
		case <-call.done:
		case <-ctx.Done():
			return
		}

		result := call.result
		if result.err == nil {
			failures = 0
		} else {
			failures++
		}
		delay := c.nextDelay(result, failures)
		if failures > 0 {
			c.logger.Info("retrying key set fetch", "in", delay, "consecutive_failures", failures)
		} else {
			c.logger.Debug("next key set fetch scheduled", "in", delay)
		}

		if !c.wait(ctx, delay) {
			return
		}
	}
}

// nextDelay returns the time until the next scheduled fetch after result,
// given the number of consecutive failed fetches including this one.
//
// After a success it is the response's Cache-Control max-age clamped to
// [MinRefreshInterval, MaxRefreshInterval], or MaxRefreshInterval without
// max-age. After a failure it doubles with each consecutive failure: from
// MinRefreshInterval up to MaxRefreshInterval while a usable set is loaded,
// and from one second (or MinRefreshInterval if smaller) up to
// MinRefreshInterval while none is.
func (c *Cache) nextDelay(result fetchResult, failures int) time.Duration {
	if result.err == nil {
		if !result.hasMaxAge {
			return c.cfg.MaxRefreshInterval
		}
		return min(max(result.maxAge, c.cfg.MinRefreshInterval), c.cfg.MaxRefreshInterval)
	}

	first, limit := c.cfg.MinRefreshInterval, c.cfg.MaxRefreshInterval
	if _, err := c.usableSet(); err != nil {
		first, limit = min(firstRetryDelay, c.cfg.MinRefreshInterval), c.cfg.MinRefreshInterval
	}
	delay := first
	for i := 1; i < failures && delay < limit; i++ {
		delay *= 2
	}
	return min(delay, limit)
}
