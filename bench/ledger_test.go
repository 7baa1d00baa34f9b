package bench

import (
	"context"
	"testing"
	"time"
)

func TestInboxObserve(t *testing.T) {
	k := streamKey{from: 1, conv: directConv(2)}
	tests := []struct {
		name            string
		seqs            []int
		distinct        int64
		dups, reordered int64
	}{
		{"in order", []int{0, 1, 2, 3}, 4, 0, 0},
		{"duplicate", []int{0, 1, 1, 2}, 3, 1, 0},
		{"late one", []int{0, 2, 1, 3}, 4, 0, 1},
		{"gap then dup of old", []int{5, 0, 5}, 2, 1, 1},
		{"big seq", []int{0, 200, 199}, 3, 0, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := newInbox()
			for _, s := range tt.seqs {
				in.observe(k, s, time.Now())
			}
			if in.distinct.Load() != tt.distinct || in.dups != tt.dups || in.reordered != tt.reordered {
				t.Fatalf("distinct %d dups %d reordered %d, want %d %d %d", in.distinct.Load(), in.dups, in.reordered, tt.distinct, tt.dups, tt.reordered)
			}
		})
	}
}

// TestAccount checks the ledger: what was acknowledged against what each
// receiver of the stream got, for 1:1 and group streams.
func TestAccount(t *testing.T) {
	set := func(seqs ...int) bitset {
		var b bitset
		for _, s := range seqs {
			b.set(s)
		}
		return b
	}
	direct := streamKey{from: 0, conv: directConv(1)}
	group := streamKey{from: 1, conv: groupConv(0)}
	a := &acker{streams: map[streamKey]*sentStream{
		direct: {acked: set(0, 1, 2, 3)},
		group:  {acked: set(0, 1, 2)},
	}}
	receivers := func(k streamKey) []int {
		if k == group {
			return []int{0, 2, 3}
		}
		return []int{int(k.conv)}
	}
	inboxes := []*inbox{newInbox(), newInbox(), newInbox(), newInbox()}
	for _, s := range []int{0, 1, 2, 3} {
		inboxes[1].observe(direct, s, time.Now())
	}
	for _, r := range []int{0, 2, 3} {
		for _, s := range []int{0, 1, 2} {
			if r == 3 && s == 1 {
				continue // lost
			}
			inboxes[r].observe(group, s, time.Now())
		}
	}
	inboxes[2].observe(group, 2, time.Now()) // duplicate
	got := account(allStreams([]*acker{a}), receivers, inboxes)
	want := tally{expected: 4 + 3*3, delivered: 4 + 8, lost: 1, dups: 1}
	if got != want {
		t.Fatalf("tally %+v, want %+v", got, want)
	}
	need := expectedPer(allStreams([]*acker{a}), receivers, 4)
	if need[0] != 3 || need[1] != 4 || need[2] != 3 || need[3] != 3 {
		t.Fatalf("need %v", need)
	}
}

func TestBitset(t *testing.T) {
	var a, b bitset
	for _, i := range []int{0, 63, 64, 130} {
		if a.set(i) {
			t.Fatalf("%d was set already", i)
		}
	}
	if !a.set(64) || !a.has(130) || a.has(129) || a.count() != 4 {
		t.Fatalf("bitset %v", a)
	}
	b.set(63)
	if missing(a, b) != 3 || missing(b, a) != 0 || missing(a, nil) != 4 {
		t.Fatalf("missing: %d %d %d", missing(a, b), missing(b, a), missing(a, nil))
	}
}

// TestOpenLoopPacer: the schedule, not the send, decides the time stamped
// into a message, so a sender that falls behind does not reset its clock.
func TestOpenLoopPacer(t *testing.T) {
	start := time.Now()
	p := openLoop(start, 100, 1, 4) // 4 senders at 100/s in all: 40ms apart, phase 10ms
	if p.interval != 40*time.Millisecond || !p.start.Equal(start.Add(10*time.Millisecond)) {
		t.Fatalf("pacer %+v", p)
	}
	time.Sleep(100 * time.Millisecond) // fall behind
	at, ok := p.wait(context.Background(), 0)
	if !ok || !at.Equal(start.Add(10*time.Millisecond)) {
		t.Fatalf("a late send is stamped %v after start, want its scheduled 10ms", at.Sub(start))
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, ok := p.wait(ctx, 1000); ok {
		t.Fatal("a cancelled wait went on")
	}
	if closed := openLoop(start, 0, 0, 1); closed.interval != 0 {
		t.Fatal("rate 0 is closed loop")
	}
}

func TestPayloadHeader(t *testing.T) {
	at := time.Unix(1_700_000_000, 123)
	b := newPayload(64, at, 7, 9)
	h, ok := readHeader(b)
	if !ok || len(b) != 64 || h.seq != 7 || h.stream != 9 || h.at != at.UnixNano() {
		t.Fatalf("header %+v", h)
	}
	if _, ok := readHeader(b[:15]); ok {
		t.Fatal("a short payload parsed")
	}
}
