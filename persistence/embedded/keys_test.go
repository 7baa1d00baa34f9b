package embedded

import (
	"bytes"
	"math"
	"testing"
	"time"
)

func TestInboxKeysSortBySeq(t *testing.T) {
	seqs := []uint64{0, 1, 2, 255, 256, 1 << 32, math.MaxUint64 - 1, math.MaxUint64}
	for i := 1; i < len(seqs); i++ {
		a, b := inboxKey("u", 1, seqs[i-1]), inboxKey("u", 1, seqs[i])
		if bytes.Compare(a, b) >= 0 {
			t.Errorf("key of seq %d does not sort before key of seq %d", seqs[i-1], seqs[i])
		}
	}
}

// A range scan over one inbox or device list must not reach any other
// user's keys, whatever the ids look like.
func TestPrefixesDoNotOverlap(t *testing.T) {
	ids := []string{"", "u", "u1", "u10", "u1\x00", "u1\xff", "\x00", "\xff\xff"}
	for _, a := range ids {
		lo, hi := inboxPrefix(a, 1), prefixEnd(inboxPrefix(a, 1))
		dlo, dhi := devicePrefix(a), prefixEnd(devicePrefix(a))
		for _, b := range ids {
			if a == b {
				continue
			}
			for _, seq := range []uint64{0, 1, math.MaxUint64} {
				if k := inboxKey(b, 1, seq); bytes.Compare(k, lo) >= 0 && bytes.Compare(k, hi) < 0 {
					t.Errorf("inbox key of %q seq %d falls inside inbox range of %q", b, seq, a)
				}
			}
			for _, dev := range []uint32{0, 1, math.MaxUint32} {
				if k := deviceKey(b, dev); bytes.Compare(k, dlo) >= 0 && bytes.Compare(k, dhi) < 0 {
					t.Errorf("device key of %q/%d falls inside device range of %q", b, dev, a)
				}
			}
		}
	}
}

func TestDedupeKeysAreUnambiguous(t *testing.T) {
	if bytes.Equal(dedupeKey("ab", "c", "x"), dedupeKey("a", "bc", "x")) {
		t.Fatal("dedupe key does not separate recipient from sender")
	}
	if bytes.Equal(dedupeKey("ab", "c", "x"), dedupeKey("ab", "cx", "")) {
		t.Fatal("dedupe key does not separate sender from client msg id")
	}
}

func TestExpiryIndex(t *testing.T) {
	target := inboxKey("u", 1, 7)
	k := expiryKey(1000, target)
	if got, ok := expiryTarget(k); !ok || !bytes.Equal(got, target) {
		t.Fatalf("expiryTarget = %x, %v", got, ok)
	}
	if bytes.Compare(k, expiryUpperBound(999)) < 0 {
		t.Error("record due at 1000 counted as due at 999")
	}
	if bytes.Compare(k, expiryUpperBound(1000)) >= 0 {
		t.Error("record due at 1000 not counted as due at 1000")
	}
	if bytes.Compare(expiryKey(-5, target), expiryKey(0, target)) != 0 {
		t.Error("negative expiry does not clamp to 0")
	}
}

func TestValueRoundTrip(t *testing.T) {
	for _, ts := range []time.Time{{}, time.Unix(1_700_000_000, 123456789).UTC(), time.Unix(-1, 5).UTC()} {
		h, got, err := decodeUser(encodeUser("handle", ts))
		if err != nil || h != "handle" || !got.Equal(ts) {
			t.Errorf("user round trip of %v = (%q, %v, %v)", ts, h, got, err)
		}
		hash, got, err := decodeDevice(encodeDevice([]byte{1, 2, 3}, ts))
		if err != nil || !bytes.Equal(hash, []byte{1, 2, 3}) || !got.Equal(ts) {
			t.Errorf("device round trip of %v = (%x, %v, %v)", ts, hash, got, err)
		}
	}
}
