package embedded

import (
	"encoding/binary"
	"errors"
	"math"
	"time"

	"github.com/courier-im/courier/persistence"
)

// Key layout
//
// Every key starts with one prefix byte naming the record type. Variable-length
// strings are written as str(s) = uvarint(len(s)) || s, so the encoded form of
// one string is never a prefix of another's: "u1" is 02 'u' '1' and "u10" is
// 03 'u' '1' '0', and a range scan over one user's prefix cannot reach into
// another user's keys. Integers are fixed-width big-endian so that byte order
// equals numeric order and range scans come out sorted.
//
//	0x01 user      str(userID)                              -> user value
//	0x02 handle    str(HandleKey(handle)), or str(handle) before folding -> userID
//	0x03 device    str(userID) u32(deviceID)                -> device value
//	0x04 inbox     str(userID) u32(deviceID) u64(inboxSeq)  -> courierpb.StoredEntry
//	0x05 dedupe    str(recipient) str(sender) str(clientMsgID) -> i64(storedAtMs) i64(expiresAtMs)
//	0x06 sequence  str(counter)                             -> u64(last number leased)
//	0x07 secret    str(name)                                -> raw bytes
//	0x08 expiry    u64(expiresAtMs) <full key of the expiring record>  -> empty
//	0x0A profile   str(userID)                              -> raw bytes (courierpb.UserProfile)
//	0x0B devkeys   str(userID) u32(deviceID)                -> courierpb.KeyUpload (no one-time prekeys)
//	0x0C prekey    str(userID) u32(deviceID) u32(prekeyID)  -> public key
//
// The expiry index (0x08) lets the sweeper find due records by scanning a
// prefix of the keyspace ordered by time instead of reading every inbox. An
// index key may outlive its record (DeleteRange, or an Append that replaced
// the record with a later expiry); the sweeper re-checks the record's own
// expiry before deleting it, and drops orphaned index keys when they come due.
const (
	prefixUser     byte = 0x01
	prefixHandle   byte = 0x02
	prefixDevice   byte = 0x03
	prefixInbox    byte = 0x04
	prefixDedupe   byte = 0x05
	prefixSequence byte = 0x06
	prefixSecret   byte = 0x07
	prefixExpiry   byte = 0x08
	prefixProfile  byte = 0x0A
	prefixDevKeys  byte = 0x0B
	prefixPrekey   byte = 0x0C
)

func appendStr(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func userKey(userID string) []byte {
	return appendStr([]byte{prefixUser}, userID)
}

// handleKey is where a handle is claimed: under its folded form
// (persistence.HandleKey), so look-alike spellings are one handle
// (handles.go).
func handleKey(handle string) []byte {
	return appendStr([]byte{prefixHandle}, persistence.HandleKey(handle))
}

// devicePrefix covers every device of one user.
func devicePrefix(userID string) []byte {
	return appendStr([]byte{prefixDevice}, userID)
}

func deviceKey(userID string, deviceID uint32) []byte {
	return binary.BigEndian.AppendUint32(devicePrefix(userID), deviceID)
}

// inboxPrefix covers every entry of one device inbox.
func inboxPrefix(userID string, deviceID uint32) []byte {
	// Room for the seq too, so inboxKey does not reallocate.
	return appendInboxPrefix(make([]byte, 0, 1+binary.MaxVarintLen64+len(userID)+4+8), userID, deviceID)
}

// inboxExpiryStep is the width of an inbox's expiry buckets. An inbox gets
// one expiry index key per bucket its entries expire in, not one per entry:
// an index key outlives its entry (an ack deletes the entry, not the key,
// whose time it does not know), so per-entry keys left one 30-day key per
// message and per group delivery for flushes and compactions to carry.
// Reads hide an expired entry at once; the sweeper reclaims it within a
// step of its expiry.
const inboxExpiryStep = 10 * 60 * 1000 // ms

// inboxExpiryBucket rounds an expiry up to its bucket's end, so that a due
// bucket finds every entry it indexes expired.
func inboxExpiryBucket(expiresAtMs int64) int64 {
	if expiresAtMs <= 0 {
		return 0
	}
	return (expiresAtMs + inboxExpiryStep - 1) / inboxExpiryStep * inboxExpiryStep
}

// isInboxPrefix reports whether key is a whole inbox's prefix (an expiry
// bucket's target) rather than one entry's key.
func isInboxPrefix(key []byte) bool {
	if len(key) == 0 || key[0] != prefixInbox {
		return false
	}
	n, w := binary.Uvarint(key[1:])
	return w > 0 && uint64(len(key)) == 1+uint64(w)+n+4
}

func appendInboxPrefix(b []byte, userID string, deviceID uint32) []byte {
	b = append(b, prefixInbox)
	b = appendStr(b, userID)
	return binary.BigEndian.AppendUint32(b, deviceID)
}

func inboxKey(userID string, deviceID uint32, seq uint64) []byte {
	return binary.BigEndian.AppendUint64(inboxPrefix(userID, deviceID), seq)
}

func dedupeKey(recipientID, senderID, clientMsgID string) []byte {
	b := appendStr([]byte{prefixDedupe}, recipientID)
	b = appendStr(b, senderID)
	return appendStr(b, clientMsgID)
}

func sequenceKey(counter string) []byte {
	return appendStr([]byte{prefixSequence}, counter)
}

func devKeysKey(userID string, deviceID uint32) []byte {
	return binary.BigEndian.AppendUint32(appendStr([]byte{prefixDevKeys}, userID), deviceID)
}

// prekeyPrefix is every one-time prekey of one device.
func prekeyPrefix(userID string, deviceID uint32) []byte {
	return binary.BigEndian.AppendUint32(appendStr([]byte{prefixPrekey}, userID), deviceID)
}

func prekeyKey(userID string, deviceID, prekeyID uint32) []byte {
	return binary.BigEndian.AppendUint32(prekeyPrefix(userID, deviceID), prekeyID)
}

func profileKey(userID string) []byte {
	return appendStr([]byte{prefixProfile}, userID)
}

func secretKey(name string) []byte {
	return appendStr([]byte{prefixSecret}, name)
}

// expiryKey indexes target under its expiry time. Times before the epoch
// clamp to 0 so they sort first (and are swept first) rather than wrapping
// around to the far future.
func expiryKey(expiresAtMs int64, target []byte) []byte {
	return appendExpiryKey(make([]byte, 0, 1+8+len(target)), expiresAtMs, target)
}

// appendExpiryKey appends the expiry index key of target to b; target may
// be a slice of b itself.
func appendExpiryKey(b []byte, expiresAtMs int64, target []byte) []byte {
	b = append(b, prefixExpiry)
	b = binary.BigEndian.AppendUint64(b, clampMs(expiresAtMs))
	return append(b, target...)
}

// expiryUpperBound is the exclusive bound of index keys due at nowMs.
func expiryUpperBound(nowMs int64) []byte {
	b := []byte{prefixExpiry}
	ms := clampMs(nowMs)
	if ms == math.MaxUint64 {
		return prefixEnd(b)
	}
	return binary.BigEndian.AppendUint64(b, ms+1)
}

// expiryTarget returns the key an expiry index key points at.
func expiryTarget(indexKey []byte) ([]byte, bool) {
	if len(indexKey) < 1+8 || indexKey[0] != prefixExpiry {
		return nil, false
	}
	return indexKey[1+8:], true
}

func clampMs(ms int64) uint64 {
	if ms < 0 {
		return 0
	}
	return uint64(ms)
}

// prefixEnd returns the smallest key greater than every key starting with p,
// for use as an exclusive upper bound. Every prefix here starts with a type
// byte below 0xff, so the loop always terminates with a non-empty result.
func prefixEnd(p []byte) []byte {
	end := append([]byte(nil), p...)
	for i := len(end) - 1; i >= 0; i-- {
		if end[i] < 0xff {
			end[i]++
			return end[:i+1]
		}
	}
	return nil
}

// Values. Users and devices start with a format byte so their encoding can
// evolve without a migration of every record.

const valueFormatV1 byte = 1

var errCorrupt = errors.New("embedded: corrupt record")

func appendTime(b []byte, t time.Time) []byte {
	// Seconds and nanoseconds separately: UnixNano overflows outside 1678–2262,
	// and the zero time.Time must round-trip for callers that leave it unset.
	b = binary.BigEndian.AppendUint64(b, uint64(t.Unix()))
	return binary.BigEndian.AppendUint32(b, uint32(t.Nanosecond()))
}

func readTime(b []byte) (time.Time, []byte, error) {
	if len(b) < 12 {
		return time.Time{}, nil, errCorrupt
	}
	sec := int64(binary.BigEndian.Uint64(b))
	nsec := int64(binary.BigEndian.Uint32(b[8:]))
	return time.Unix(sec, nsec).UTC(), b[12:], nil
}

func readStr(b []byte) (string, []byte, error) {
	n, w := binary.Uvarint(b)
	if w <= 0 || uint64(len(b)-w) < n {
		return "", nil, errCorrupt
	}
	return string(b[w : w+int(n)]), b[w+int(n):], nil
}

func encodeUser(handle string, createdAt time.Time) []byte {
	b := []byte{valueFormatV1}
	b = appendStr(b, handle)
	return appendTime(b, createdAt)
}

func decodeUser(v []byte) (handle string, createdAt time.Time, err error) {
	if len(v) == 0 || v[0] != valueFormatV1 {
		return "", time.Time{}, errCorrupt
	}
	handle, rest, err := readStr(v[1:])
	if err != nil {
		return "", time.Time{}, err
	}
	createdAt, _, err = readTime(rest)
	return handle, createdAt, err
}

func encodeDevice(secretHash []byte, createdAt time.Time) []byte {
	b := []byte{valueFormatV1}
	b = appendTime(b, createdAt)
	return append(b, secretHash...)
}

func decodeDevice(v []byte) (secretHash []byte, createdAt time.Time, err error) {
	if len(v) == 0 || v[0] != valueFormatV1 {
		return nil, time.Time{}, errCorrupt
	}
	createdAt, rest, err := readTime(v[1:])
	if err != nil {
		return nil, time.Time{}, err
	}
	return append([]byte{}, rest...), createdAt, nil
}

func encodeDedupe(storedAtMs, expiresAtMs int64) []byte {
	b := make([]byte, 0, 16)
	b = binary.BigEndian.AppendUint64(b, uint64(storedAtMs))
	return binary.BigEndian.AppendUint64(b, uint64(expiresAtMs))
}

func decodeDedupe(v []byte) (storedAtMs, expiresAtMs int64, err error) {
	if len(v) != 16 {
		return 0, 0, errCorrupt
	}
	return int64(binary.BigEndian.Uint64(v)), int64(binary.BigEndian.Uint64(v[8:])), nil
}
