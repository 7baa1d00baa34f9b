package bench

import (
	"context"
	"iter"
	"time"
)

// tally is the correctness outcome of a run.
type tally struct {
	expected, delivered, lost, dups, reordered, foreign int64
}

// account compares what the senders got acknowledged with what every
// receiver of each stream observed. receivers lists a stream's receivers.
func account(streams iter.Seq2[streamKey, *sentStream], receivers func(streamKey) []int, inboxes []*inbox) tally {
	var t tally
	for k, s := range streams {
		n := s.acked.count()
		for _, r := range receivers(k) {
			t.expected += n
			var got bitset
			if a := inboxes[r].streams[k]; a != nil {
				got = a.got
			}
			t.lost += missing(s.acked, got)
		}
	}
	for _, in := range inboxes {
		if in == nil {
			continue
		}
		t.delivered += in.distinct.Load()
		t.dups += in.dups
		t.reordered += in.reordered
		t.foreign += in.foreign
	}
	return t
}

// expectedPer is how many distinct messages each receiver should end with.
func expectedPer(streams iter.Seq2[streamKey, *sentStream], receivers func(streamKey) []int, users int) []int64 {
	need := make([]int64, users)
	for k, s := range streams {
		n := s.acked.count()
		for _, r := range receivers(k) {
			need[r] += n
		}
	}
	return need
}

// waitCaughtUp waits until every receiver has what it should. It gives up
// (false) when ctx ends or when no receiver got anything for stall.
func waitCaughtUp(ctx context.Context, inboxes []*inbox, need []int64, stall time.Duration) bool {
	t := time.NewTicker(5 * time.Millisecond)
	defer t.Stop()
	next := 0
	seen, movedAt := sumDistinct(inboxes), time.Now()
	for {
		for next < len(inboxes) && (inboxes[next] == nil || inboxes[next].distinct.Load() >= need[next]) {
			next++
		}
		if next == len(inboxes) {
			return true
		}
		select {
		case now := <-t.C:
			if n := sumDistinct(inboxes); n != seen {
				seen, movedAt = n, now
			} else if stall > 0 && now.Sub(movedAt) > stall {
				return false
			}
		case <-ctx.Done():
			return false
		}
	}
}

// lastArrival is the time of the latest fresh message of any inbox.
func lastArrival(inboxes []*inbox) time.Time {
	var last int64
	for _, in := range inboxes {
		if in != nil {
			last = max(last, in.lastAt.Load())
		}
	}
	if last == 0 {
		return time.Time{}
	}
	return time.Unix(0, last)
}

// allStreams walks the streams of every acker.
func allStreams(ackers []*acker) iter.Seq2[streamKey, *sentStream] {
	return func(yield func(streamKey, *sentStream) bool) {
		for _, a := range ackers {
			for k, s := range a.streams {
				if !yield(k, s) {
					return
				}
			}
		}
	}
}

func sumDistinct(inboxes []*inbox) int64 {
	var n int64
	for _, in := range inboxes {
		if in != nil {
			n += in.distinct.Load()
		}
	}
	return n
}
