package e2ee

import (
	"fmt"

	"go.mau.fi/libsignal/protocol"
)

// Every byte string this package hands out starts with one type byte so the
// receiver knows how to parse the rest without any out-of-band hint. The
// values are libsignal's own CiphertextMessage types, so a trace shows the
// same numbers as Signal's documentation.
const (
	typeSignal       byte = protocol.WHISPER_TYPE                // 2: Double Ratchet message on an existing session
	typePreKey       byte = protocol.PREKEY_TYPE                 // 3: X3DH prekey message, creates the session
	typeSenderKey    byte = protocol.SENDERKEY_TYPE              // 4: group message under a sender key
	typeDistribution byte = protocol.SENDERKEY_DISTRIBUTION_TYPE // 5: SenderKeyDistributionMessage
)

// frame prepends the type byte to a serialized libsignal message.
func frame(t byte, body []byte) []byte {
	out := make([]byte, 0, 1+len(body))
	out = append(out, t)
	return append(out, body...)
}

// unframe splits a framed message and checks its type against want.
func unframe(b []byte, want ...byte) (byte, []byte, error) {
	if len(b) < 2 {
		return 0, nil, fmt.Errorf("%w: %d bytes is too short", ErrInvalidMessage, len(b))
	}
	for _, w := range want {
		if b[0] == w {
			return b[0], b[1:], nil
		}
	}
	return 0, nil, fmt.Errorf("%w: unexpected message type %d (want %v)", ErrInvalidMessage, b[0], want)
}
