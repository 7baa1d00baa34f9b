package e2ee

import (
	"errors"
	"fmt"
	"testing"
)

type envelope struct {
	from  *Device
	ct    []byte
	plain []byte
}

// TestConversationTwoUsersTwoDevices: alice and bob with two devices each;
// every message is fanned out to the three other devices (the peer's
// devices and the sender's sibling, as a multi-device client does) and
// every device must decrypt every message addressed to it, whatever the
// delivery order.
func TestConversationTwoUsersTwoDevices(t *testing.T) {
	cases := []struct {
		name string
		// order returns the batch in delivery order and the envelopes
		// held back until the end of the conversation.
		order func(batch []envelope) (now, later []envelope)
	}{
		{"in order", func(b []envelope) ([]envelope, []envelope) { return b, nil }},
		{"reversed", func(b []envelope) ([]envelope, []envelope) {
			r := make([]envelope, len(b))
			for i := range b {
				r[len(b)-1-i] = b[i]
			}
			return r, nil
		}},
		{"first held back past replies", func(b []envelope) ([]envelope, []envelope) {
			if len(b) < 2 {
				return b, nil
			}
			return b[1:], b[:1]
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			keys, dir := newDirectory(), t.TempDir()
			a1 := newPublishedDevice(t, keys, dir, "alice", 1)
			a2 := newPublishedDevice(t, keys, dir, "alice", 2)
			b1 := newPublishedDevice(t, keys, dir, "bob", 1)
			b2 := newPublishedDevice(t, keys, dir, "bob", 2)
			all := []*Device{a1, a2, b1, b2}
			// Several messages before any reply, then replies from
			// every device in turn.
			rounds := []struct {
				from  *Device
				count int
			}{{a1, 3}, {b2, 2}, {a1, 2}, {b1, 3}, {a2, 1}, {b2, 1}, {a2, 2}, {b1, 1}}

			var held []struct {
				to *Device
				e  envelope
			}
			delivered := map[*Device]int{}
			seq := 0
			for _, r := range rounds {
				for _, to := range all {
					if to == r.from {
						continue
					}
					var batch []envelope
					for range r.count {
						seq++
						plain := fmt.Appendf(nil, "msg %d from %s to %s", seq, name(r.from), name(to))
						batch = append(batch, envelope{r.from, send(t, keys, r.from, to, plain), plain})
					}
					now, later := tc.order(batch)
					for _, e := range now {
						mustDecrypt(t, to, e.from, e.ct, e.plain)
						delivered[to]++
					}
					for _, e := range later {
						held = append(held, struct {
							to *Device
							e  envelope
						}{to, e})
					}
				}
			}
			for _, h := range held {
				mustDecrypt(t, h.to, h.e.from, h.e.ct, h.e.plain)
				delivered[h.to]++
			}
			// After all that, every pair still talks both ways.
			for _, from := range all {
				for _, to := range all {
					if from != to {
						plain := fmt.Appendf(nil, "final %s to %s", name(from), name(to))
						mustDecrypt(t, to, from, send(t, keys, from, to, plain), plain)
						delivered[to]++
					}
				}
			}
			total := 0
			for _, n := range delivered {
				total += n
			}
			if want := 3*(3+2+2+3+1+1+2+1) + 12; total != want {
				t.Fatalf("delivered %d messages, want %d", total, want)
			}
		})
	}
}

// TestMessageTypeByte: messages carry their type; the initiator sends
// prekey messages until the first reply, then normal ones.
func TestMessageTypeByte(t *testing.T) {
	keys, dir := newDirectory(), t.TempDir()
	alice := newPublishedDevice(t, keys, dir, "alice", 1)
	bob := newPublishedDevice(t, keys, dir, "bob", 1)

	steps := []struct {
		from, to *Device
		want     byte
	}{
		{alice, bob, typePreKey},
		{alice, bob, typePreKey}, // still unacknowledged
		{bob, alice, typeSignal}, // bob's session came from alice's prekey message
		{alice, bob, typeSignal}, // acknowledged by bob's reply
	}
	for i, s := range steps {
		plain := fmt.Appendf(nil, "step %d", i)
		ct := send(t, keys, s.from, s.to, plain)
		if ct[0] != s.want {
			t.Fatalf("step %d: type byte %d, want %d", i, ct[0], s.want)
		}
		mustDecrypt(t, s.to, s.from, ct, plain)
	}
}

func TestEncryptWithoutSessionOrBundle(t *testing.T) {
	keys, dir := newDirectory(), t.TempDir()
	alice := newPublishedDevice(t, keys, dir, "alice", 1)
	bob := newPublishedDevice(t, keys, dir, "bob", 1)
	if _, err := alice.Encrypt("bob", 1, nil, []byte("hi")); !errors.Is(err, ErrNoSession) {
		t.Fatalf("Encrypt without session and bundle: %v, want ErrNoSession", err)
	}
	if _, err := alice.Encrypt("alice", 1, keys.bundle(t, alice), []byte("hi")); !errors.Is(err, ErrOwnAddress) {
		t.Fatalf("Encrypt to self: %v, want ErrOwnAddress", err)
	}
	if _, err := alice.Encrypt("bob", 2, keys.bundle(t, bob), []byte("hi")); !errors.Is(err, ErrInvalidBundle) {
		t.Fatalf("Encrypt to device 2 with device 1's bundle: %v, want ErrInvalidBundle", err)
	}
	// A normal message from someone we have no session with.
	ct := send(t, keys, alice, bob, []byte("one"))
	mustDecrypt(t, bob, alice, ct, []byte("one"))
	reply := send(t, keys, bob, alice, []byte("two"))
	carol := newPublishedDevice(t, keys, dir, "carol", 1)
	if _, err := carol.Decrypt("bob", 1, reply); !errors.Is(err, ErrNoSession) {
		t.Fatalf("Decrypt normal message without session: %v, want ErrNoSession", err)
	}
}

// TestResetSession: after a reset the next Encrypt needs a bundle and
// starts a new X3DH the peer accepts.
func TestResetSession(t *testing.T) {
	keys, dir := newDirectory(), t.TempDir()
	alice := newPublishedDevice(t, keys, dir, "alice", 1)
	bob := newPublishedDevice(t, keys, dir, "bob", 1)
	mustDecrypt(t, bob, alice, send(t, keys, alice, bob, []byte("a")), []byte("a"))
	mustDecrypt(t, alice, bob, send(t, keys, bob, alice, []byte("b")), []byte("b"))

	if err := alice.ResetSession("bob", 1); err != nil {
		t.Fatal(err)
	}
	if alice.HasSession("bob", 1) {
		t.Fatal("HasSession after ResetSession")
	}
	if _, err := alice.Encrypt("bob", 1, nil, []byte("x")); !errors.Is(err, ErrNoSession) {
		t.Fatalf("Encrypt after reset without bundle: %v, want ErrNoSession", err)
	}
	ct := send(t, keys, alice, bob, []byte("again"))
	if ct[0] != typePreKey {
		t.Fatalf("first message after reset has type %d, want prekey", ct[0])
	}
	mustDecrypt(t, bob, alice, ct, []byte("again"))
	mustDecrypt(t, alice, bob, send(t, keys, bob, alice, []byte("ok")), []byte("ok"))
}
