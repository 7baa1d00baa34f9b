package bench

import (
	"context"
	"time"
)

// pacer decides when the k-th send of a sender goes: at once (closed loop,
// the window is the only limit) or on a fixed schedule (open loop). In
// open loop the scheduled time, not the actual one, goes into the payload,
// so a sender that falls behind shows the queueing in its latencies
// instead of hiding it (coordinated omission).
type pacer struct {
	start    time.Time
	interval time.Duration // 0: closed loop
}

func (p pacer) wait(ctx context.Context, k int) (time.Time, bool) {
	if p.interval <= 0 {
		return time.Now(), ctx.Err() == nil
	}
	at := p.start.Add(time.Duration(k) * p.interval)
	if d := time.Until(at); d > 0 {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
			return at, false
		}
	}
	return at, ctx.Err() == nil
}

// openLoop makes the pacer of sender i of n when the whole run sends rate
// messages a second (rate 0: closed loop). Senders are phased evenly over
// one interval so their sends do not bunch.
func openLoop(start time.Time, rate float64, i, n int) pacer {
	if rate <= 0 {
		return pacer{}
	}
	iv := time.Duration(float64(n) / rate * float64(time.Second))
	return pacer{start: start.Add(iv * time.Duration(i) / time.Duration(max(n, 1))), interval: max(iv, time.Nanosecond)}
}
