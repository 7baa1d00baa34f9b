package gateway

import (
	"bytes"
	"testing"

	"github.com/courier-im/courier/protos/courierpb"
)

func TestPackEntriesRespectsCountAndSize(t *testing.T) {
	entries := func(n, size int) []*courierpb.InboxEntry {
		out := make([]*courierpb.InboxEntry, n)
		for i := range out {
			out[i] = &courierpb.InboxEntry{InboxSeq: uint64(i + 1), Ciphertext: bytes.Repeat([]byte{1}, size)}
		}
		return out
	}
	cases := []struct {
		name      string
		in        []*courierpb.InboxEntry
		wantSizes []int
	}{
		{"empty", nil, nil},
		{"one", entries(1, 10), []int{1}},
		{"count limit", entries(maxPackedEntries+5, 10), []int{maxPackedEntries, 5}},
		{"size limit", entries(5, maxPackedBytes/2), []int{2, 2, 1}},
		{"one entry over the size limit still goes", entries(2, maxPackedBytes+1), []int{1, 1}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := packEntries(tc.in)
			if len(got) != len(tc.wantSizes) {
				t.Fatalf("%d batches, want %d", len(got), len(tc.wantSizes))
			}
			var seq uint64
			for i, b := range got {
				if len(b) != tc.wantSizes[i] {
					t.Fatalf("batch %d has %d entries, want %d", i, len(b), tc.wantSizes[i])
				}
				for _, e := range b {
					if e.InboxSeq != seq+1 {
						t.Fatalf("entry %d after %d: order broken", e.InboxSeq, seq)
					}
					seq = e.InboxSeq
				}
			}
		})
	}
}
