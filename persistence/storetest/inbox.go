package storetest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/courier-im/courier/persistence"
	"github.com/courier-im/courier/protos/courierpb"
)

// entry builds a distinguishable inbox entry; tag varies the payload so a
// replaced or misrouted entry is caught by content, not only by seq.
func entry(seq uint64, tag string) *courierpb.InboxEntry {
	return &courierpb.InboxEntry{
		InboxSeq:     seq,
		Kind:         courierpb.EntryKind_ENTRY_KIND_MESSAGE,
		FromUserId:   "sender-" + tag,
		FromDeviceId: 2,
		ToUserId:     "peer-" + tag,
		ClientMsgId:  fmt.Sprintf("cm-%s-%d", tag, seq),
		Ciphertext:   fmt.Appendf(nil, "ciphertext %s %d \x00\xff", tag, seq),
		ContentType:  "text/plain",
		SentAtMs:     1_700_000_000_000 + int64(seq),
		ReceiptFor:   []string{"r-" + tag},
	}
}

// appendSeqs appends one entry per seq to (user, device), all in one call.
func appendSeqs(t *testing.T, s persistence.Store, userID string, deviceID uint32, tag string, seqs ...uint64) {
	t.Helper()
	as := make([]persistence.InboxAppend, len(seqs))
	for i, seq := range seqs {
		as[i] = persistence.InboxAppend{UserID: userID, DeviceID: deviceID, Entry: entry(seq, tag)}
	}
	if err := s.Append(ctx(t), as, nil); err != nil {
		t.Fatalf("Append(%q/%d, %v): %v", userID, deviceID, seqs, err)
	}
}

// rangeAll pages through a whole device inbox with a small limit, so paging
// itself is exercised by every test that reads an inbox.
func rangeAll(t *testing.T, s persistence.Store, userID string, deviceID uint32) []*courierpb.InboxEntry {
	t.Helper()
	var all []*courierpb.InboxEntry
	after := uint64(0)
	for {
		page, err := s.Range(ctx(t), userID, deviceID, after, 3)
		if err != nil {
			t.Fatalf("Range(%q/%d, after %d): %v", userID, deviceID, after, err)
		}
		if len(page) > 3 {
			t.Fatalf("Range with limit 3 returned %d entries", len(page))
		}
		all = append(all, page...)
		if len(page) < 3 {
			return all
		}
		after = page[len(page)-1].GetInboxSeq()
	}
}

func seqsOf(es []*courierpb.InboxEntry) []uint64 {
	out := make([]uint64, len(es))
	for i, e := range es {
		out[i] = e.GetInboxSeq()
	}
	return out
}

// checkEntries asserts es are exactly entry(seq, tag) for want, in order.
func checkEntries(t *testing.T, what string, es []*courierpb.InboxEntry, tag string, want ...uint64) {
	t.Helper()
	if got := seqsOf(es); !slices.Equal(got, want) {
		t.Fatalf("%s: seqs %v, want %v", what, got, want)
	}
	for _, e := range es {
		if w := entry(e.GetInboxSeq(), tag); !proto.Equal(e, w) {
			t.Fatalf("%s: entry %d = %v, want %v", what, e.GetInboxSeq(), e, w)
		}
	}
}

func testInbox(t *testing.T, factory Factory) {
	t.Run("OrderAcrossOutOfOrderAppends", func(t *testing.T) {
		f := newFixture(t, factory, Options{})
		uid := f.id("u")
		appendSeqs(t, f.s, uid, 1, "x", 5)
		appendSeqs(t, f.s, uid, 1, "x", 1)
		appendSeqs(t, f.s, uid, 1, "x", 3)
		appendSeqs(t, f.s, uid, 1, "x", 4, 2)
		got, err := f.s.Range(ctx(t), uid, 1, 0, 100)
		if err != nil {
			t.Fatal(err)
		}
		checkEntries(t, "Range", got, "x", 1, 2, 3, 4, 5)
	})

	t.Run("Paging", func(t *testing.T) {
		f := newFixture(t, factory, Options{})
		uid := f.id("u")
		// Sparse, with a large seq, so "after" often falls between entries.
		stored := []uint64{1, 2, 3, 5, 8, 13, 21, 1000, 1 << 40}
		appendSeqs(t, f.s, uid, 1, "p", stored...)
		cases := []struct {
			after uint64
			limit int
			want  []uint64
		}{
			{0, 100, stored},
			{0, 3, []uint64{1, 2, 3}},
			{3, 3, []uint64{5, 8, 13}},
			{4, 1, []uint64{5}},
			{6, 2, []uint64{8, 13}},
			{21, 10, []uint64{1000, 1 << 40}},
			{1000, 1, []uint64{1 << 40}},
			{1 << 40, 5, nil},
			{1<<40 + 1, 5, nil},
		}
		for _, tc := range cases {
			t.Run(fmt.Sprintf("after=%d,limit=%d", tc.after, tc.limit), func(t *testing.T) {
				got, err := f.s.Range(ctx(t), uid, 1, tc.after, tc.limit)
				if err != nil {
					t.Fatal(err)
				}
				checkEntries(t, "Range", got, "p", tc.want...)
			})
		}
		checkEntries(t, "paged Range", rangeAll(t, f.s, uid, 1), "p", stored...)
	})

	t.Run("ReplaceSameSeq", func(t *testing.T) {
		f := newFixture(t, factory, Options{})
		uid := f.id("u")
		appendSeqs(t, f.s, uid, 1, "old", 1, 2)
		appendSeqs(t, f.s, uid, 1, "new", 2)
		got := rangeAll(t, f.s, uid, 1)
		if !slices.Equal(seqsOf(got), []uint64{1, 2}) {
			t.Fatalf("seqs after replace = %v, want [1 2]", seqsOf(got))
		}
		if !proto.Equal(got[0], entry(1, "old")) || !proto.Equal(got[1], entry(2, "new")) {
			t.Fatalf("after replace got %v", got)
		}
	})

	t.Run("ManyEntriesOneAppend", func(t *testing.T) {
		f := newFixture(t, factory, Options{})
		uid := f.id("u")
		var as []persistence.InboxAppend
		var want1, want2 []uint64
		for seq := uint64(1); seq <= 20; seq++ {
			as = append(as,
				persistence.InboxAppend{UserID: uid, DeviceID: 1, Entry: entry(seq, "m")},
				persistence.InboxAppend{UserID: uid, DeviceID: 2, Entry: entry(seq+100, "m")})
			want1 = append(want1, seq)
			want2 = append(want2, seq+100)
		}
		if err := f.s.Append(ctx(t), as, nil); err != nil {
			t.Fatal(err)
		}
		checkEntries(t, "device 1", rangeAll(t, f.s, uid, 1), "m", want1...)
		checkEntries(t, "device 2", rangeAll(t, f.s, uid, 2), "m", want2...)
	})

	t.Run("EmptyAppend", func(t *testing.T) {
		f := newFixture(t, factory, Options{})
		if err := f.s.Append(ctx(t), nil, nil); err != nil {
			t.Fatalf("Append(nil, nil) = %v, want nil", err)
		}
	})

	t.Run("EmptyInbox", func(t *testing.T) {
		f := newFixture(t, factory, Options{})
		got, err := f.s.Range(ctx(t), f.id("nobody"), 1, 0, 10)
		if err != nil || len(got) != 0 {
			t.Fatalf("Range(empty inbox) = (%v, %v), want empty and nil", got, err)
		}
	})

	t.Run("IsolationBetweenDevices", func(t *testing.T) {
		f := newFixture(t, factory, Options{})
		uid := f.id("u")
		appendSeqs(t, f.s, uid, 1, "d1", 1, 2, 3)
		appendSeqs(t, f.s, uid, 2, "d2", 2, 4)
		appendSeqs(t, f.s, uid, 256, "d256", 1)
		checkEntries(t, "device 1", rangeAll(t, f.s, uid, 1), "d1", 1, 2, 3)
		checkEntries(t, "device 2", rangeAll(t, f.s, uid, 2), "d2", 2, 4)
		checkEntries(t, "device 256", rangeAll(t, f.s, uid, 256), "d256", 1)
		checkEntries(t, "device 3", rangeAll(t, f.s, uid, 3), "")
	})

	t.Run("IsolationBetweenPrefixUsers", func(t *testing.T) {
		f := newFixture(t, factory, Options{})
		u, u1, u10 := f.id("u"), f.id("u1"), f.id("u10")
		appendSeqs(t, f.s, u, 1, "u", 7)
		appendSeqs(t, f.s, u1, 1, "u1", 1, 2)
		appendSeqs(t, f.s, u10, 1, "u10", 1, 3)
		appendSeqs(t, f.s, u1, 0, "u1d0", 5)
		checkEntries(t, "u", rangeAll(t, f.s, u, 1), "u", 7)
		checkEntries(t, "u1", rangeAll(t, f.s, u1, 1), "u1", 1, 2)
		checkEntries(t, "u10", rangeAll(t, f.s, u10, 1), "u10", 1, 3)
		checkEntries(t, "u1 device 0", rangeAll(t, f.s, u1, 0), "u1d0", 5)
	})
}

func testDeleteRange(t *testing.T, factory Factory) {
	cases := []struct {
		after, upTo uint64
		want        []uint64
	}{
		{0, 0, []uint64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}},
		{0, 1, []uint64{2, 3, 4, 5, 6, 7, 8, 9, 10}},
		{0, 4, []uint64{5, 6, 7, 8, 9, 10}},
		{0, 9, []uint64{10}},
		{0, 10, nil},
		{0, 1 << 40, nil},
		{3, 6, []uint64{1, 2, 3, 7, 8, 9, 10}},
		{9, 10, []uint64{1, 2, 3, 4, 5, 6, 7, 8, 9}},
		{2, 1 << 20, []uint64{1, 2}}, // wider than any store deletes blindly
		{5, 5, []uint64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}},
		{7, 2, []uint64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}},
	}
	for _, tc := range cases {
		t.Run(fmt.Sprintf("after=%d,upTo=%d", tc.after, tc.upTo), func(t *testing.T) {
			f := newFixture(t, factory, Options{})
			uid, u10 := f.id("u1"), f.id("u10")
			all := []uint64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}
			appendSeqs(t, f.s, uid, 1, "a", all...)
			appendSeqs(t, f.s, uid, 2, "b", all...)
			appendSeqs(t, f.s, u10, 1, "c", all...)
			if err := f.s.DeleteRange(ctx(t), uid, 1, tc.after, tc.upTo); err != nil {
				t.Fatal(err)
			}
			checkEntries(t, "acked device", rangeAll(t, f.s, uid, 1), "a", tc.want...)
			checkEntries(t, "other device", rangeAll(t, f.s, uid, 2), "b", all...)
			checkEntries(t, "prefix user", rangeAll(t, f.s, u10, 1), "c", all...)

			// The inbox keeps working after an ack.
			appendSeqs(t, f.s, uid, 1, "a", 11)
			checkEntries(t, "after new append", rangeAll(t, f.s, uid, 1), "a", append(slices.Clone(tc.want), 11)...)
		})
	}
	t.Run("Repeated", func(t *testing.T) {
		f := newFixture(t, factory, Options{})
		uid := f.id("u")
		appendSeqs(t, f.s, uid, 1, "a", 1, 2, 3, 4)
		for _, upTo := range []uint64{2, 2, 1, 3} {
			if err := f.s.DeleteRange(ctx(t), uid, 1, 0, upTo); err != nil {
				t.Fatalf("DeleteRange(%d): %v", upTo, err)
			}
		}
		checkEntries(t, "after repeated acks", rangeAll(t, f.s, uid, 1), "a", 4)
	})
}

func testDeleteInbox(t *testing.T, factory Factory) {
	f := newFixture(t, factory, Options{})
	uid, u10 := f.id("u1"), f.id("u10")
	appendSeqs(t, f.s, uid, 1, "a", 1, 2, 3)
	appendSeqs(t, f.s, uid, 2, "b", 1, 2)
	appendSeqs(t, f.s, u10, 1, "c", 1)
	if err := f.s.DeleteInbox(ctx(t), uid, 1); err != nil {
		t.Fatal(err)
	}
	checkEntries(t, "deleted inbox", rangeAll(t, f.s, uid, 1), "a")
	checkEntries(t, "other device", rangeAll(t, f.s, uid, 2), "b", 1, 2)
	checkEntries(t, "prefix user", rangeAll(t, f.s, u10, 1), "c", 1)
	if err := f.s.DeleteInbox(ctx(t), f.id("nobody"), 1); err != nil {
		t.Fatalf("DeleteInbox(empty inbox) = %v, want nil", err)
	}
	appendSeqs(t, f.s, uid, 1, "a", 4)
	checkEntries(t, "after new append", rangeAll(t, f.s, uid, 1), "a", 4)
}

func testDedupe(t *testing.T, factory Factory) {
	f := newFixture(t, factory, Options{})
	c := ctx(t)
	rec := func(r, s, m string, storedAt int64) persistence.DedupeRecord {
		return persistence.DedupeRecord{RecipientID: f.id(r), SenderID: f.id(s), ClientMsgID: m, StoredAtMs: storedAt}
	}
	withEntry := rec("ab", "c", "x", 1_700_000_000_001)
	dedupeOnly := rec("r", "s", "only", 1_700_000_000_002)
	twoDevices := rec("two", "c", "x", 1_700_000_000_003)
	if err := f.s.Append(c, []persistence.InboxAppend{{UserID: withEntry.RecipientID, DeviceID: 1, Entry: entry(1, "d")}},
		[]persistence.DedupeRecord{withEntry}); err != nil {
		t.Fatal(err)
	}
	if err := f.s.Append(c, nil, []persistence.DedupeRecord{dedupeOnly}); err != nil {
		t.Fatal(err)
	}
	if err := f.s.Append(c, []persistence.InboxAppend{
		{UserID: twoDevices.RecipientID, DeviceID: 1, Entry: entry(1, "d")},
		{UserID: twoDevices.RecipientID, DeviceID: 2, Entry: entry(1, "d")},
	}, []persistence.DedupeRecord{twoDevices}); err != nil {
		t.Fatal(err)
	}
	checkEntries(t, "entry stored with its dedupe record", rangeAll(t, f.s, withEntry.RecipientID, 1), "d", 1)
	checkEntries(t, "two devices, device 2", rangeAll(t, f.s, twoDevices.RecipientID, 2), "d", 1)

	hits := []struct {
		name    string
		rec     persistence.DedupeRecord
		devices []uint32
	}{
		{"with its entry", withEntry, []uint32{1}},
		{"with its entry, a device added since", withEntry, []uint32{1, 7}},
		{"without entries", dedupeOnly, nil},
		{"without entries, with devices", dedupeOnly, []uint32{1, 2}},
		{"on two devices", twoDevices, []uint32{1, 2}},
		{"on two devices, asked in another order", twoDevices, []uint32{2, 1}},
		{"on two devices, one of them removed since", twoDevices, []uint32{2}},
	}
	for _, tc := range hits {
		t.Run("Found/"+tc.name, func(t *testing.T) {
			got, err := f.s.GetDedupe(ctx(t), tc.rec.RecipientID, tc.devices, tc.rec.SenderID, tc.rec.ClientMsgID)
			if err != nil {
				t.Fatalf("GetDedupe(%+v, devices %v): %v", tc.rec, tc.devices, err)
			}
			if got != tc.rec {
				t.Errorf("GetDedupe = %+v, want %+v", got, tc.rec)
			}
		})
	}

	// Each miss differs from a stored record in one component, or splits
	// the same characters differently between components.
	misses := []struct {
		name    string
		r, s, m string
	}{
		{"other recipient", f.id("zz"), f.id("c"), "x"},
		{"other sender", f.id("ab"), f.id("zz"), "x"},
		{"other client msg id", f.id("ab"), f.id("c"), "y"},
		{"recipient/sender boundary moved", f.id("a"), f.id("bc"), "x"},
		{"sender/msg boundary moved", f.id("ab"), f.id("cx"), ""},
		{"recipient and sender swapped", f.id("c"), f.id("ab"), "x"},
	}
	for _, tc := range misses {
		t.Run("NotFound/"+tc.name, func(t *testing.T) {
			if got, err := f.s.GetDedupe(ctx(t), tc.r, []uint32{1, 2}, tc.s, tc.m); !errors.Is(err, persistence.ErrNotFound) {
				t.Fatalf("GetDedupe = (%+v, %v), want ErrNotFound", got, err)
			}
		})
	}
}

// testDedupeOutlivesItsEntries: the record of a message stays after the
// recipient acknowledged (deleted) the entries it was stored with, and
// after one of two devices was removed, so a late retry is still answered
// as a duplicate; and no record ever shows up among a device's entries.
func testDedupeOutlivesItsEntries(t *testing.T, factory Factory) {
	f := newFixture(t, factory, Options{})
	c := ctx(t)
	uid := f.id("u")
	recs := []persistence.DedupeRecord{
		{RecipientID: uid, SenderID: f.id("s"), ClientMsgID: "m1", StoredAtMs: 11},
		{RecipientID: uid, SenderID: f.id("s"), ClientMsgID: "m2", StoredAtMs: 12},
	}
	var entries []persistence.InboxAppend
	for _, dev := range []uint32{1, 2} {
		for seq := uint64(1); seq <= 2; seq++ {
			entries = append(entries, persistence.InboxAppend{UserID: uid, DeviceID: dev, Entry: entry(seq, "o")})
		}
	}
	if err := f.s.Append(c, entries, recs); err != nil {
		t.Fatal(err)
	}
	checkEntries(t, "device 1 before the ack", rangeAll(t, f.s, uid, 1), "o", 1, 2)
	checkEntries(t, "device 2 before the ack", rangeAll(t, f.s, uid, 2), "o", 1, 2)
	if err := f.s.DeleteRange(c, uid, 1, 0, 2); err != nil {
		t.Fatal(err)
	}
	if err := f.s.DeleteInbox(c, uid, 2); err != nil {
		t.Fatal(err)
	}
	checkEntries(t, "device 1 after the ack", rangeAll(t, f.s, uid, 1), "o")
	checkEntries(t, "device 2 after its removal", rangeAll(t, f.s, uid, 2), "o")
	for _, want := range recs {
		got, err := f.s.GetDedupe(c, uid, []uint32{1}, want.SenderID, want.ClientMsgID)
		if err != nil || got != want {
			t.Fatalf("GetDedupe(%s) after the ack = (%+v, %v), want %+v", want.ClientMsgID, got, err, want)
		}
	}
	appendSeqs(t, f.s, uid, 1, "o", 3)
	checkEntries(t, "device 1 after a new append", rangeAll(t, f.s, uid, 1), "o", 3)
}

func testTTL(t *testing.T, factory Factory) {
	// Long enough that a loaded machine (a CQL node busy with other test
	// packages) reads the entries back before they expire.
	const ttl = 3 * time.Second
	// Well past the TTL even for a store with second-granularity expiry.
	const wait = ttl + 1500*time.Millisecond

	f := newFixture(t, factory, Options{InboxTTL: ttl})
	written := time.Now()
	uid := f.id("u")
	// rec is stored with entries, alone is not: both expire.
	rec := persistence.DedupeRecord{RecipientID: uid, SenderID: f.id("s"), ClientMsgID: "m1", StoredAtMs: 1}
	alone := persistence.DedupeRecord{RecipientID: f.id("v"), SenderID: f.id("s"), ClientMsgID: "m2", StoredAtMs: 2}
	err := f.s.Append(ctx(t), []persistence.InboxAppend{
		{UserID: uid, DeviceID: 1, Entry: entry(1, "t")},
		{UserID: uid, DeviceID: 1, Entry: entry(2, "t")},
	}, []persistence.DedupeRecord{rec, alone})
	if err != nil {
		t.Fatal(err)
	}
	before := rangeAll(t, f.s, uid, 1)
	if took := time.Since(written); took >= ttl {
		t.Fatalf("writing and reading back took %v, longer than the %v TTL: the machine is too loaded for this test to mean anything", took, ttl)
	}
	checkEntries(t, "before expiry", before, "t", 1, 2)
	for _, r := range []persistence.DedupeRecord{rec, alone} {
		if _, err := f.s.GetDedupe(ctx(t), r.RecipientID, []uint32{1}, r.SenderID, r.ClientMsgID); err != nil {
			t.Fatalf("GetDedupe(%s) before expiry: %v", r.ClientMsgID, err)
		}
	}

	sleep(t, time.Until(written.Add(wait)))

	checkEntries(t, "after expiry", rangeAll(t, f.s, uid, 1), "t")
	for _, r := range []persistence.DedupeRecord{rec, alone} {
		if got, err := f.s.GetDedupe(ctx(t), r.RecipientID, []uint32{1}, r.SenderID, r.ClientMsgID); !errors.Is(err, persistence.ErrNotFound) {
			t.Fatalf("GetDedupe(%s) after expiry = (%+v, %v), want ErrNotFound", r.ClientMsgID, got, err)
		}
	}
	// Expiry is per append, not a wipe: a fresh entry is visible again.
	appendSeqs(t, f.s, uid, 1, "t", 3)
	checkEntries(t, "fresh append after expiry", rangeAll(t, f.s, uid, 1), "t", 3)
}

func sleep(t *testing.T, d time.Duration) {
	t.Helper()
	select {
	case <-time.After(d):
	case <-t.Context().Done():
		t.Fatal(context.Cause(t.Context()))
	}
}
