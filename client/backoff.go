package client

import (
	"math/rand/v2"
	"time"
)

// backoff computes jittered exponential reconnect delays.
type backoff struct {
	min, max time.Duration
	// rnd returns a float in [0, 1); nil uses math/rand/v2.
	rnd func() float64
}

// delay returns how long to wait before attempt number attempt (0-based).
// Attempt 0 waits a uniformly random time below min, so a crowd of clients
// dropped together does not return together; attempt n waits between half
// and all of min*2^n, capped at max.
func (b backoff) delay(attempt int) time.Duration {
	rnd := b.rnd
	if rnd == nil {
		rnd = rand.Float64
	}
	lo, hi := b.min, b.max
	if lo <= 0 {
		lo = time.Millisecond
	}
	if hi < lo {
		hi = lo
	}
	if attempt <= 0 {
		return time.Duration(rnd() * float64(lo))
	}
	d := lo
	for i := 0; i < attempt && d < hi; i++ {
		d *= 2
	}
	d = min(d, hi)
	half := d / 2
	return half + time.Duration(rnd()*float64(d-half))
}
