package scylla

import (
	"errors"
	"fmt"
	"hash/fnv"
	"slices"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/courier-im/courier/persistence"
)

// Dedupe markers. A dedupe record whose message has entries in the same
// Append is not written to the dedupe table but as a marker row in each of
// the recipient's inbox partitions that the Append writes, in the same
// partition mutation as that partition's entries. A partition mutation is
// applied atomically on every replica (ScyllaDB and Cassandra alike), so a
// marker never exists without the entries written beside it, and the
// record and its entries go out in one request instead of two in a row,
// which costs the database about a third less CPU per message (README,
// "ScyllaDB store").
//
// Markers live at negative inbox_seq: entries are numbered from 1 and every
// inbox read and ack delete starts above 0, so no reader of entries ever
// sees a marker, and an ack never deletes one. Markers carry the inbox TTL,
// like the dedupe table's rows, and go with the device's inbox when it is
// deleted (a removed device).
//
// When an Append fails half way, one partition may hold its marker while
// another does not. So a marker lists every partition it was written to,
// and GetDedupe reports the record only when every listed partition of a
// device the caller still has holds it. Otherwise the message is stored
// again: a device that already had it sees a duplicate, which the client
// drops by (sender, client_msg_id), and no device misses it. That is the
// same promise Append made with its two phases (entries, then the dedupe
// table), in one round trip.

// markerSeq is where the marker of (sender, clientMsgID) lives in an inbox
// partition: a 63-bit hash, negated. Two records of one inbox collide with
// probability about n²/2⁶⁴ (n records in 30 days); a collision overwrites
// the older marker, whose record is then not found and its retry stored
// again: a duplicate, never a loss.
func markerSeq(senderID, clientMsgID string) int64 {
	h := fnv.New64a()
	var n [10]byte // the longest varint
	h.Write(protowire.AppendVarint(n[:0], uint64(len(senderID))))
	h.Write([]byte(senderID))
	h.Write([]byte(clientMsgID))
	return -1 - int64(h.Sum64()>>1)
}

// A marker's fields, protobuf-encoded so later versions can add some.
const (
	markerSender    protowire.Number = 1
	markerClientMsg protowire.Number = 2
	markerStoredAt  protowire.Number = 3
	markerDevices   protowire.Number = 4
)

// marker is one decoded marker row.
type marker struct {
	senderID, clientMsgID string
	storedAtMs            int64
	// devices are the recipient's inbox partitions the marker was written
	// to, in one Append.
	devices []uint32
}

func encodeMarker(d persistence.DedupeRecord, devices []uint32) []byte {
	b := make([]byte, 0, len(d.SenderID)+len(d.ClientMsgID)+16+5*len(devices))
	b = protowire.AppendTag(b, markerSender, protowire.BytesType)
	b = protowire.AppendString(b, d.SenderID)
	b = protowire.AppendTag(b, markerClientMsg, protowire.BytesType)
	b = protowire.AppendString(b, d.ClientMsgID)
	b = protowire.AppendTag(b, markerStoredAt, protowire.VarintType)
	b = protowire.AppendVarint(b, uint64(d.StoredAtMs))
	var packed []byte
	for _, dev := range devices {
		packed = protowire.AppendVarint(packed, uint64(dev))
	}
	b = protowire.AppendTag(b, markerDevices, protowire.BytesType)
	return protowire.AppendBytes(b, packed)
}

var errBadMarker = errors.New("dedupe marker does not decode")

func decodeMarker(b []byte) (marker, error) {
	var m marker
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return marker{}, fmt.Errorf("%w: %v", errBadMarker, protowire.ParseError(n))
		}
		b = b[n:]
		switch {
		case num == markerSender && typ == protowire.BytesType:
			m.senderID, n = protowire.ConsumeString(b)
		case num == markerClientMsg && typ == protowire.BytesType:
			m.clientMsgID, n = protowire.ConsumeString(b)
		case num == markerStoredAt && typ == protowire.VarintType:
			var v uint64
			v, n = protowire.ConsumeVarint(b)
			m.storedAtMs = int64(v)
		case num == markerDevices && typ == protowire.BytesType:
			var packed []byte
			packed, n = protowire.ConsumeBytes(b)
			for len(packed) > 0 && n >= 0 {
				v, k := protowire.ConsumeVarint(packed)
				if k < 0 || v > 1<<32-1 {
					n = -1
					break
				}
				m.devices = append(m.devices, uint32(v))
				packed = packed[k:]
			}
		default:
			n = protowire.ConsumeFieldValue(num, typ, b)
		}
		if n < 0 {
			return marker{}, fmt.Errorf("%w: field %d", errBadMarker, num)
		}
		b = b[n:]
	}
	return m, nil
}

// markedRecord decides, from the markers found in the partitions of the
// devices asked about (by device), whether the record is stored: some
// marker is found, and every partition any marker lists that belongs to an
// asked-about device holds one. Partitions of devices the caller no longer
// has are not asked about and do not count.
func markedRecord(asked []uint32, found map[uint32]marker) (storedAtMs int64, ok bool) {
	if len(found) == 0 {
		return 0, false
	}
	for _, m := range found {
		for _, dev := range m.devices {
			if _, has := found[dev]; !has && slices.Contains(asked, dev) {
				return 0, false
			}
		}
		storedAtMs = m.storedAtMs
	}
	return storedAtMs, true
}
