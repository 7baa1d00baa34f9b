package bench

import (
	"sync/atomic"
	"time"

	"github.com/courier-im/courier/client"
)

// inbox is what one receiving user observed. Its receive goroutine owns
// streams and the plain counters until the run joins it; the atomics are
// read by progress and the wait for delivery.
type inbox struct {
	streams   map[streamKey]*arrivals
	dups      int64
	reordered int64
	foreign   int64
	distinct  atomic.Int64
	lastAt    atomic.Int64 // unix ns of the last fresh arrival
}

type arrivals struct {
	got bitset
	max int
}

func newInbox() *inbox { return &inbox{streams: make(map[streamKey]*arrivals)} }

// observe notes message seq of stream k and reports whether it is new.
func (in *inbox) observe(k streamKey, seq int, at time.Time) bool {
	a := in.streams[k]
	if a == nil {
		a = &arrivals{max: -1}
		in.streams[k] = a
	}
	if a.got.set(seq) {
		in.dups++
		return false
	}
	if seq < a.max {
		in.reordered++
	} else {
		a.max = seq
	}
	in.distinct.Add(1)
	in.lastAt.Store(at.UnixNano())
	return true
}

// classifier places a received message in its stream (ok false: the
// message is not one this receiver should get: foreign).
type classifier func(e client.Entry, h header) (k streamKey, ok bool)

// receive checks every message a client gets until it closes, and calls
// fresh for each one seen for the first time; other entries (receipts,
// group events) go to other when it is set.
func receive(c *client.Client, in *inbox, classify classifier, fresh func(now time.Time, h header, e client.Entry), other func(client.Entry)) {
	for e := range c.Entries() {
		if !e.IsMessage() && !e.IsGroupMessage() {
			if other != nil {
				other(e)
			}
			continue
		}
		now := time.Now()
		payload := e.Ciphertext
		if e.Plaintext != nil || e.DecryptErr != nil {
			payload = e.Plaintext // end-to-end encrypted clients
		}
		h, ok := readHeader(payload)
		var k streamKey
		if ok {
			k, ok = classify(e, h)
		}
		if !ok {
			in.foreign++
			continue
		}
		if in.observe(k, int(h.seq), now) && fresh != nil {
			fresh(now, h, e)
		}
	}
}

// latencyTo records a fresh message's latency (from its header) in rec.
func latencyTo(rec *recorder, shard int) func(now time.Time, h header, e client.Entry) {
	return func(now time.Time, h header, _ client.Entry) { rec.record(shard, now, h.latency(now)) }
}
