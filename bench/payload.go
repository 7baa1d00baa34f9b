package bench

import (
	"encoding/binary"
	"time"
)

// Every bench message starts with a 16-byte header, little endian: the
// send time (unix ns; in open-loop runs the scheduled time), the sequence
// number within its stream, and the stream (the pair index in direct, the
// sender's user index elsewhere). The rest of the ciphertext is filler.
const payloadHeader = 16

type header struct {
	at     int64 // unix ns
	seq    uint32
	stream uint32
}

func newPayload(size int, at time.Time, seq, stream uint32) []byte {
	buf := make([]byte, max(size, payloadHeader))
	binary.LittleEndian.PutUint64(buf[0:], uint64(at.UnixNano()))
	binary.LittleEndian.PutUint32(buf[8:], seq)
	binary.LittleEndian.PutUint32(buf[12:], stream)
	return buf
}

func readHeader(ct []byte) (header, bool) {
	if len(ct) < payloadHeader {
		return header{}, false
	}
	return header{
		at:     int64(binary.LittleEndian.Uint64(ct[0:])),
		seq:    binary.LittleEndian.Uint32(ct[8:]),
		stream: binary.LittleEndian.Uint32(ct[12:]),
	}, true
}

// latency is how long ago the header's send time was, as seen at now.
func (h header) latency(now time.Time) time.Duration {
	return now.Sub(time.Unix(0, h.at))
}
