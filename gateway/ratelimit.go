package gateway

import "time"

// tokenBucket limits one session's frame rate. It is owned by the session's
// reader goroutine, so it needs no lock.
type tokenBucket struct {
	rate   float64
	burst  float64
	tokens float64
	last   time.Time
}

func newTokenBucket(perSec float64, burst int) tokenBucket {
	return tokenBucket{rate: perSec, burst: float64(burst), tokens: float64(burst)}
}

func (b *tokenBucket) allow(now time.Time) bool {
	if !b.last.IsZero() {
		b.tokens = min(b.burst, b.tokens+now.Sub(b.last).Seconds()*b.rate)
	}
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// retryAfter is how long until allow would next succeed.
func (b *tokenBucket) retryAfter(now time.Time) time.Duration {
	tokens := b.tokens
	if !b.last.IsZero() {
		tokens = min(b.burst, tokens+now.Sub(b.last).Seconds()*b.rate)
	}
	if tokens >= 1 || b.rate <= 0 {
		return 0
	}
	return time.Duration((1 - tokens) / b.rate * float64(time.Second))
}

// full reports whether the bucket has refilled to its burst by now: then it
// is indistinguishable from a fresh one and a keyed limiter may forget it.
func (b *tokenBucket) full(now time.Time) bool {
	return b.last.IsZero() || b.tokens+now.Sub(b.last).Seconds()*b.rate >= b.burst
}
