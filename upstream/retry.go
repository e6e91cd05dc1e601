package upstream

import (
	"context"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// backoff is the wait before attempt+1 after attempt failed: the upstream's
// Retry-After when it gave one (capped at MaxRetryAfter, because a CDN can
// ask for minutes that no caller will wait), otherwise exponential backoff
// with full jitter, uniform in [0, min(BackoffMax, BackoffBase·2^(attempt-1))).
// Full jitter spreads the replicas that were throttled together, which is
// what a shared per-key limit needs most.
func (c *Client) backoff(attempt int, err *APIError) time.Duration {
	if err != nil && err.RetryAfter > 0 {
		return err.RetryAfter
	}
	ceiling := c.cfg.BackoffMax
	if attempt < 32 { // beyond that the shift overflows; the ceiling applies anyway
		if d := c.cfg.BackoffBase << (attempt - 1); d > 0 && d < ceiling {
			ceiling = d
		}
	}
	d := c.cfg.Jitter(ceiling)
	return min(max(d, 0), ceiling)
}

// parseRetryAfter reads Retry-After as delta-seconds or an HTTP date
// (RFC 9110 §10.2.3), relative to now, capped at limit. Absent, unparsable
// or past values give 0.
func parseRetryAfter(h string, now time.Time, limit time.Duration) time.Duration {
	h = strings.TrimSpace(h)
	if h == "" {
		return 0
	}
	var d time.Duration
	if secs, err := strconv.ParseInt(h, 10, 64); err == nil {
		if secs <= 0 {
			return 0
		}
		if secs > int64(limit/time.Second)+1 {
			return limit
		}
		d = time.Duration(secs) * time.Second
	} else if t, err := http.ParseTime(h); err == nil {
		d = t.Sub(now)
	}
	return min(max(d, 0), limit)
}

// uniformJitter is the default Config.Jitter: uniform in [0, d).
func uniformJitter(d time.Duration) time.Duration {
	if d <= 0 {
		return 0
	}
	return time.Duration(rand.Int64N(int64(d)))
}

// pastDeadline reports whether waiting d from now would end after ctx's
// deadline: such a wait is pointless, the caller would get nothing from it.
func pastDeadline(ctx context.Context, now time.Time, d time.Duration) bool {
	deadline, ok := ctx.Deadline()
	return ok && now.Add(d).After(deadline)
}
