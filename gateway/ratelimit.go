package gateway

import "time"

// tokenBucket limits one session's frame rate (owned by the session's
// reader goroutine, so it needs no lock) or one key of a keyedLimiter
// (under the limiter's lock).
type tokenBucket struct {
	rate   float64
	burst  float64
	tokens float64
	last   time.Time
	// limited: the last request was refused. A keyed limiter logs when a
	// key starts being refused, not every refusal of a flood.
	limited bool
}

func newTokenBucket(perSec float64, burst int) tokenBucket {
	return tokenBucket{rate: perSec, burst: float64(burst), tokens: float64(burst)}
}

func (b *tokenBucket) allow(now time.Time) bool { return b.allowN(now, 1) }

// allowN takes n tokens at once (a request that costs n: a contact list
// of n users, n members added to a group), or none.
func (b *tokenBucket) allowN(now time.Time, n int) bool {
	if !b.last.IsZero() {
		b.tokens = min(b.burst, b.tokens+now.Sub(b.last).Seconds()*b.rate)
	}
	b.last = now
	if b.tokens < float64(n) {
		return false
	}
	b.tokens -= float64(n)
	return true
}

// retryAfter is how long until allow would next succeed.
func (b *tokenBucket) retryAfter(now time.Time) time.Duration { return b.retryAfterN(now, 1) }

// retryAfterN is how long until allowN(n) would next succeed; n must not
// exceed the burst.
func (b *tokenBucket) retryAfterN(now time.Time, n int) time.Duration {
	tokens := b.tokens
	if !b.last.IsZero() {
		tokens = min(b.burst, tokens+now.Sub(b.last).Seconds()*b.rate)
	}
	if tokens >= float64(n) || b.rate <= 0 {
		return 0
	}
	return time.Duration((float64(n) - tokens) / b.rate * float64(time.Second))
}

// full reports whether the bucket has refilled to its burst by now: then it
// is indistinguishable from a fresh one and a keyed limiter may forget it.
func (b *tokenBucket) full(now time.Time) bool {
	return b.last.IsZero() || b.tokens+now.Sub(b.last).Seconds()*b.rate >= b.burst
}
