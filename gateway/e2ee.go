package gateway

import (
	"fmt"

	"github.com/courier-im/courier/protos/courierpb"
)

// What --require-e2ee checks. The server cannot decrypt, but it can tell a
// Signal message from plaintext by its framing: the SDK's ciphertexts start
// with libsignal's message type byte (client/e2ee/wire.go), then libsignal's
// version byte, whose high nibble is the protocol version (3). A client that
// sends anything else through a deployment that promises end-to-end
// encryption is refused, whether misconfigured or malicious.
const (
	signalWhisper      byte = 2 // Double Ratchet message on a session
	signalPreKey       byte = 3 // X3DH prekey message
	signalSenderKey    byte = 4 // group message under a sender key
	signalVersion      byte = 3
	minSignalMessageSz      = 2 + 8 // type, version, at least a MAC's worth
)

// checkSignal reports whether b is framed as a Signal message of one of the
// allowed types.
func checkSignal(b []byte, allowed ...byte) bool {
	if len(b) < minSignalMessageSz || b[1]>>4 != signalVersion {
		return false
	}
	for _, t := range allowed {
		if b[0] == t {
			return true
		}
	}
	return false
}

// e2eeRefusal says why a 1:1 send is not end-to-end encrypted, or "".
func e2eeRefusal(m *courierpb.Send) string {
	if len(m.Ciphertext) > 0 || len(m.PerDevice) == 0 {
		return "this server requires end-to-end encryption: send per-device Signal messages (per_device), not a plain ciphertext"
	}
	for _, d := range m.PerDevice {
		if !checkSignal(d.Ciphertext, signalWhisper, signalPreKey) {
			return fmt.Sprintf("this server requires end-to-end encryption: per_device for device %d is not a Signal message", d.DeviceId)
		}
	}
	for _, d := range m.SenderDevices {
		if !checkSignal(d.Ciphertext, signalWhisper, signalPreKey) {
			return fmt.Sprintf("this server requires end-to-end encryption: sender_devices for device %d is not a Signal message", d.DeviceId)
		}
	}
	return ""
}

// groupE2EERefusal says why a group send is not end-to-end encrypted, or "".
func groupE2EERefusal(m *courierpb.GroupSend) string {
	if len(m.Ciphertext) > 0 && !checkSignal(m.Ciphertext, signalSenderKey) {
		return "this server requires end-to-end encryption: a group message is a Signal sender-key message"
	}
	for _, d := range m.PerDevice {
		if !checkSignal(d.Ciphertext, signalWhisper, signalPreKey, signalSenderKey) {
			return fmt.Sprintf("this server requires end-to-end encryption: per_device for %s/%d is not a Signal message", d.UserId, d.DeviceId)
		}
	}
	return ""
}
