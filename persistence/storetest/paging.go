package storetest

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/courier-im/courier/persistence"
	"github.com/courier-im/courier/protos/courierpb"
)

// testLargeInbox reads an inbox larger than several pages of any store
// (CQL pages hold 5,000 rows by default), with a deleted stretch in the
// middle so a store's pages come back short: a store that takes a short page
// for the last one fails here.
func testLargeInbox(t *testing.T, factory Factory) {
	f := newFixture(t, factory, Options{})
	c, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	uid := f.id("pager")
	const total, chunk = 12_345, 500
	for from := uint64(1); from <= total; from += chunk {
		var as []persistence.InboxAppend
		for seq := from; seq < from+chunk && seq <= total; seq++ {
			as = append(as, persistence.InboxAppend{UserID: uid, DeviceID: 1, Entry: &courierpb.InboxEntry{
				InboxSeq: seq, Kind: courierpb.EntryKind_ENTRY_KIND_MESSAGE, FromUserId: "sender",
				ClientMsgId: fmt.Sprintf("m%d", seq), Ciphertext: fmt.Appendf(nil, "payload %d", seq),
			}})
		}
		if err := f.s.Append(c, as, nil); err != nil {
			t.Fatal(err)
		}
	}
	seqs := func(ranges ...[2]uint64) []uint64 {
		var out []uint64
		for _, r := range ranges {
			for s := r[0]; s <= r[1]; s++ {
				out = append(out, s)
			}
		}
		return out
	}
	cases := []struct {
		name         string
		deleteAfter  uint64 // DeleteRange(deleteAfter, deleteTo] before reading; 0,0 = none
		deleteTo     uint64
		after, limit uint64
		want         []uint64
	}{
		{"whole inbox", 0, 0, 0, 20_000, seqs([2]uint64{1, total})},
		{"a limit off any page boundary", 0, 0, 777, 10_001, seqs([2]uint64{778, 10_778})},
		{"across a deleted stretch", 100, 11_000, 0, 20_000, seqs([2]uint64{1, 100}, [2]uint64{11_001, total})},
	}
	for _, tc := range cases {
		if tc.deleteTo > 0 {
			if err := f.s.DeleteRange(c, uid, 1, tc.deleteAfter, tc.deleteTo); err != nil {
				t.Fatal(err)
			}
		}
		got, err := f.s.Range(c, uid, 1, tc.after, int(tc.limit))
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if len(got) != len(tc.want) {
			t.Fatalf("%s: %d entries, want %d", tc.name, len(got), len(tc.want))
		}
		for i, e := range got {
			if e.GetInboxSeq() != tc.want[i] || e.GetClientMsgId() != fmt.Sprintf("m%d", tc.want[i]) {
				t.Fatalf("%s: entry %d is seq %d (%s), want %d", tc.name, i, e.GetInboxSeq(), e.GetClientMsgId(), tc.want[i])
			}
		}
	}
}
