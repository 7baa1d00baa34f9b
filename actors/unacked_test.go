package actors

import (
	"slices"
	"testing"
)

func TestUnackedIndexThrough(t *testing.T) {
	ix := &unackedIndex{from: 10}
	for _, s := range []uint64{11, 12, 15, 20} {
		ix.items = append(ix.items, unackedMessage{seq: s, clientMsgID: "m"})
	}
	seqs := func(ms []unackedMessage) []uint64 {
		var out []uint64
		for _, m := range ms {
			out = append(out, m.seq)
		}
		return out
	}
	steps := []struct {
		from, to     uint64
		want         []uint64
		wantComplete bool
	}{
		{from: 5, to: 11, want: []uint64{11}, wantComplete: false}, // below the index: read the store
		{from: 11, to: 15, want: []uint64{12, 15}, wantComplete: true},
		{from: 15, to: 16, want: nil, wantComplete: true},
		{from: 16, to: 30, want: []uint64{20}, wantComplete: true},
	}
	for _, st := range steps {
		got, complete := ix.through(st.from, st.to)
		if !slices.Equal(seqs(got), st.want) || complete != st.wantComplete {
			t.Fatalf("through(%d, %d) = %v, %v; want %v, %v", st.from, st.to, seqs(got), complete, st.want, st.wantComplete)
		}
	}
	if len(ix.items) != 0 {
		t.Fatalf("index keeps %d acked items", len(ix.items))
	}
	var nilIx *unackedIndex
	if _, complete := nilIx.through(0, 5); complete {
		t.Fatal("a missing index claims to be complete")
	}
}
