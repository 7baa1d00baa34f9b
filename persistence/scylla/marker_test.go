package scylla

import (
	"errors"
	"slices"
	"testing"

	"github.com/courier-im/courier/persistence"
)

func TestMarkerRoundTrips(t *testing.T) {
	cases := []struct {
		name    string
		rec     persistence.DedupeRecord
		devices []uint32
	}{
		{"one device", persistence.DedupeRecord{SenderID: "alice", ClientMsgID: "m-1", StoredAtMs: 1_700_000_000_000}, []uint32{1}},
		{"devices past 2^31", persistence.DedupeRecord{SenderID: "\x00group/g", ClientMsgID: "42", StoredAtMs: 1}, []uint32{1, 1 << 31, 1<<32 - 1}},
		{"empty ids", persistence.DedupeRecord{}, []uint32{0}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m, err := decodeMarker(encodeMarker(tc.rec, tc.devices))
			if err != nil {
				t.Fatal(err)
			}
			if m.senderID != tc.rec.SenderID || m.clientMsgID != tc.rec.ClientMsgID || m.storedAtMs != tc.rec.StoredAtMs || !slices.Equal(m.devices, tc.devices) {
				t.Fatalf("decoded %+v, want %+v on devices %v", m, tc.rec, tc.devices)
			}
		})
	}
}

func TestMarkerThatDoesNotDecodeIsAnError(t *testing.T) {
	good := encodeMarker(persistence.DedupeRecord{SenderID: "s", ClientMsgID: "c", StoredAtMs: 5}, []uint32{1, 2})
	for name, b := range map[string][]byte{
		"truncated":           good[:len(good)-1],
		"bad tag":             {0xff},
		"device above 2^32":   append(slices.Clone(good[:len(good)-4]), 0x22, 0x05, 0x80, 0x80, 0x80, 0x80, 0x10),
		"string past the end": {0x0a, 0x09, 's'},
	} {
		t.Run(name, func(t *testing.T) {
			if m, err := decodeMarker(b); !errors.Is(err, errBadMarker) {
				t.Fatalf("decodeMarker = (%+v, %v), want errBadMarker", m, err)
			}
		})
	}
}

func TestMarkerSeqIsNegativeAndKeepsComponentsApart(t *testing.T) {
	pairs := [][2]string{{"ab", "c"}, {"a", "bc"}, {"abc", ""}, {"", "abc"}, {"c", "ab"}}
	seen := make(map[int64][2]string)
	for _, p := range pairs {
		seq := markerSeq(p[0], p[1])
		if seq >= 0 {
			t.Fatalf("markerSeq(%q, %q) = %d, want < 0 (entries are numbered from 1)", p[0], p[1], seq)
		}
		if other, dup := seen[seq]; dup {
			t.Fatalf("markerSeq(%q, %q) = markerSeq(%q, %q)", p[0], p[1], other[0], other[1])
		}
		seen[seq] = p
	}
}

func TestMarkedRecordNeedsEveryListedDeviceItAsksAbout(t *testing.T) {
	at := func(devs ...uint32) marker { return marker{storedAtMs: 7, devices: devs} }
	cases := []struct {
		name  string
		asked []uint32
		found map[uint32]marker
		want  bool
	}{
		{"none found", []uint32{1, 2}, nil, false},
		{"one device, found", []uint32{1}, map[uint32]marker{1: at(1)}, true},
		{"two devices, both found", []uint32{1, 2}, map[uint32]marker{1: at(1, 2), 2: at(1, 2)}, true},
		{"two devices, half written", []uint32{1, 2}, map[uint32]marker{1: at(1, 2)}, false},
		{"two devices, the missing one removed since", []uint32{1}, map[uint32]marker{1: at(1, 2)}, true},
		{"a device added since", []uint32{1, 3}, map[uint32]marker{1: at(1)}, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			storedAt, ok := markedRecord(tc.asked, tc.found)
			if ok != tc.want || (ok && storedAt != 7) {
				t.Fatalf("markedRecord = (%d, %v), want (7, %v)", storedAt, ok, tc.want)
			}
		})
	}
}

// TestMarkersShareAMutationOnlyWhenEachPartitionIsOne decides whether an
// Append may send markers with its entries: only if no partition's rows
// are split over requests, or a marker could land without its entries.
func TestMarkersShareAMutationOnlyWhenEachPartitionIsOne(t *testing.T) {
	row := func(p string, bytes int) write { return write{partition: p, bytes: bytes} }
	small := []write{row("a", 100), row("a", 50), row("b", 100), row("b", 50)}
	overBatch := []write{row("a", 20<<10), row("a", 20<<10), row("b", 10)}
	coalesced := &Store{mode: AppendCoalesced, coal: newCoalescer(nil, 0)}
	cases := []struct {
		name  string
		store *Store
		rows  []write
		want  bool
	}{
		{"coalesced, fits one shared batch", coalesced, small, true},
		{"coalesced, too big to share: one batch per partition", coalesced, []write{row("a", 20<<10), row("b", 20<<10)}, true},
		{"coalesced, a partition over one batch", coalesced, overBatch, false},
		{"batched, one batch per partition", &Store{mode: AppendBatched}, small, true},
		{"batched, a partition over one batch", &Store{mode: AppendBatched}, overBatch, false},
		{"batched, a partition over the row limit", &Store{mode: AppendBatched}, make150("a"), false},
		{"concurrent: every row alone", &Store{mode: AppendConcurrent}, []write{row("a", 10), row("a", 10)}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.store.oneMutationPerPartition(tc.rows); got != tc.want {
				t.Fatalf("oneMutationPerPartition = %v, want %v", got, tc.want)
			}
		})
	}
}
