package bench

import (
	"sync"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// Latencies are recorded in microseconds, from 1 µs to an hour, with three
// significant digits (HdrHistogram's usual precision).
const (
	histLowest  = 1
	histHighest = int64(time.Hour / time.Microsecond)
	histDigits  = 3
)

func newHistogram() *hdrhistogram.Histogram {
	return hdrhistogram.New(histLowest, histHighest, histDigits)
}

// TimelineStep is the resolution events are counted at over time.
const TimelineStep = 100 * time.Millisecond

// recorder collects latencies into a histogram and counts events per
// TimelineStep since start, for the throughput plot. Receivers record
// concurrently: each uses its own shard, so they rarely contend.
type recorder struct {
	start  time.Time
	shards []recShard
}

type recShard struct {
	mu       sync.Mutex
	h        *hdrhistogram.Histogram
	timeline []int64
	_        [40]byte // keep shards on separate cache lines
}

const recShards = 8

func newRecorder(start time.Time) *recorder {
	r := &recorder{start: start, shards: make([]recShard, recShards)}
	for i := range r.shards {
		r.shards[i].h = newHistogram()
	}
	return r
}

// record notes one event at time at with latency lat (lat < 0: count the
// event on the timeline only).
func (r *recorder) record(shard int, at time.Time, lat time.Duration) {
	s := &r.shards[shard%len(r.shards)]
	step := max(int(at.Sub(r.start)/TimelineStep), 0)
	s.mu.Lock()
	defer s.mu.Unlock()
	if lat >= 0 {
		_ = s.h.RecordValue(min(max(lat.Microseconds(), histLowest), histHighest))
	}
	if step >= len(s.timeline) {
		s.timeline = append(s.timeline, make([]int64, step+1-len(s.timeline))...)
	}
	s.timeline[step]++
}

// result merges the shards into one histogram and one timeline.
func (r *recorder) result() (*hdrhistogram.Histogram, []int64) {
	h := newHistogram()
	var tl []int64
	for i := range r.shards {
		s := &r.shards[i]
		s.mu.Lock()
		h.Merge(s.h)
		if len(s.timeline) > len(tl) {
			tl = append(tl, make([]int64, len(s.timeline)-len(tl))...)
		}
		for j, n := range s.timeline {
			tl[j] += n
		}
		s.mu.Unlock()
	}
	return h, tl
}

// quantileMs reads a percentile (0-100) of a microsecond histogram in ms.
func quantileMs(h *hdrhistogram.Histogram, q float64) float64 {
	return float64(h.ValueAtQuantile(q)) / 1000
}
