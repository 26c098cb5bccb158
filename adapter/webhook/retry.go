package webhook

import (
	"math/rand/v2"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/cenkalti/backoff/v5"
)

// fullJitter turns backoff's capped exponential into "full jitter" (a
// uniform wait in [0, ceiling]), which spreads the retries of many
// messages to a recovering endpoint instead of sending them in waves.
type fullJitter struct{ exp *backoff.ExponentialBackOff }

func newFullJitter(c RetryConfig) *fullJitter {
	return &fullJitter{exp: &backoff.ExponentialBackOff{
		InitialInterval:     c.InitialInterval,
		RandomizationFactor: 0, // the ceiling itself; jitter is applied below
		Multiplier:          c.Multiplier,
		MaxInterval:         c.MaxInterval,
	}}
}

func (j *fullJitter) Reset() { j.exp.Reset() }

func (j *fullJitter) NextBackOff() time.Duration {
	ceiling := j.exp.NextBackOff()
	if ceiling <= 0 {
		return 0
	}
	return time.Duration(rand.Int64N(int64(ceiling) + 1))
}

// retryable reports whether a response status is worth another attempt.
func retryable(status int, extra []int) bool {
	switch {
	case status >= 500:
		return true
	case status == http.StatusRequestTimeout, status == http.StatusTooEarly, status == http.StatusTooManyRequests:
		return true
	default:
		return slices.Contains(extra, status)
	}
}

// parseRetryAfter reads a Retry-After value, either delay-seconds or an
// HTTP-date. ok is false when the header is absent or malformed.
func parseRetryAfter(v string, now time.Time) (d time.Duration, ok bool) {
	if v == "" {
		return 0, false
	}
	if s, err := strconv.ParseInt(v, 10, 64); err == nil {
		if s < 0 {
			return 0, false
		}
		// Clamp so the multiplication cannot overflow; a wait this long is
		// beyond any retry budget anyway.
		s = min(s, int64(365*24*time.Hour/time.Second))
		return time.Duration(s) * time.Second, true
	}
	t, err := http.ParseTime(v)
	if err != nil {
		return 0, false
	}
	return max(t.Sub(now), 0), true
}
