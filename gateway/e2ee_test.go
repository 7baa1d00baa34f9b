package gateway

import (
	"bytes"
	"testing"

	"github.com/courier-im/courier/protos/courierpb"
)

func signalMsg(typ byte) []byte {
	return append([]byte{typ, 0x33}, bytes.Repeat([]byte{0xab}, 40)...)
}

func TestRequireE2EERefusesWhatIsNotASignalMessage(t *testing.T) {
	plain := []byte("hello, this is plaintext")
	tests := []struct {
		name    string
		send    *courierpb.Send
		refused bool
	}{
		{"per-device prekey and whisper messages", &courierpb.Send{PerDevice: []*courierpb.DeviceCiphertext{{DeviceId: 1, Ciphertext: signalMsg(3)}, {DeviceId: 2, Ciphertext: signalMsg(2)}},
			SenderDevices: []*courierpb.DeviceCiphertext{{DeviceId: 2, Ciphertext: signalMsg(2)}}}, false},
		{"a plain ciphertext", &courierpb.Send{Ciphertext: signalMsg(2)}, true},
		{"plaintext per device", &courierpb.Send{PerDevice: []*courierpb.DeviceCiphertext{{DeviceId: 1, Ciphertext: plain}}}, true},
		{"a sender-key message to one device", &courierpb.Send{PerDevice: []*courierpb.DeviceCiphertext{{DeviceId: 1, Ciphertext: signalMsg(4)}}}, true},
		{"a wrong version byte", &courierpb.Send{PerDevice: []*courierpb.DeviceCiphertext{{DeviceId: 1, Ciphertext: append([]byte{2, 0x23}, make([]byte, 40)...)}}}, true},
		{"too short to be a message", &courierpb.Send{PerDevice: []*courierpb.DeviceCiphertext{{DeviceId: 1, Ciphertext: []byte{2, 0x33, 1}}}}, true},
		{"a plaintext transcript", &courierpb.Send{PerDevice: []*courierpb.DeviceCiphertext{{DeviceId: 1, Ciphertext: signalMsg(2)}},
			SenderDevices: []*courierpb.DeviceCiphertext{{DeviceId: 2, Ciphertext: plain}}}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			why := e2eeRefusal(tt.send)
			if (why != "") != tt.refused {
				t.Fatalf("refusal %q, want refused=%v", why, tt.refused)
			}
			if bytes.Contains([]byte(why), plain) {
				t.Fatalf("the refusal quotes the client's bytes: %q", why)
			}
		})
	}

	groups := []struct {
		name    string
		send    *courierpb.GroupSend
		refused bool
	}{
		{"a sender-key message", &courierpb.GroupSend{Ciphertext: signalMsg(4)}, false},
		{"a sender-key message and a per-device one", &courierpb.GroupSend{Ciphertext: signalMsg(4),
			PerDevice: []*courierpb.GroupDeviceCiphertext{{UserId: "u", DeviceId: 1, Ciphertext: signalMsg(2)}}}, false},
		{"plaintext", &courierpb.GroupSend{Ciphertext: plain}, true},
		{"a pairwise message as the group ciphertext", &courierpb.GroupSend{Ciphertext: signalMsg(2)}, true},
		{"plaintext for one device", &courierpb.GroupSend{Ciphertext: signalMsg(4),
			PerDevice: []*courierpb.GroupDeviceCiphertext{{UserId: "u", DeviceId: 1, Ciphertext: plain}}}, true},
	}
	for _, tt := range groups {
		t.Run("group/"+tt.name, func(t *testing.T) {
			if why := groupE2EERefusal(tt.send); (why != "") != tt.refused {
				t.Fatalf("refusal %q, want refused=%v", why, tt.refused)
			}
		})
	}
}
