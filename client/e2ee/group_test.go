package e2ee

import (
	"errors"
	"fmt"
	"testing"

	"go.mau.fi/libsignal/ecc"
	"go.mau.fi/libsignal/protocol"
)

// distribute sends sender's distribution message to each member over the
// pairwise session, and the member processes what it decrypted.
func distribute(t *testing.T, keys *directory, group string, epoch uint64, sender *Device, members []*Device, dist []byte) {
	t.Helper()
	for _, m := range members {
		if m == sender {
			continue
		}
		ct := send(t, keys, sender, m, dist)
		plain, err := m.Decrypt(sender.UserID(), sender.DeviceID(), ct)
		if err != nil {
			t.Fatalf("%s decrypting distribution from %s: %v", name(m), name(sender), err)
		}
		if err := m.ProcessDistribution(group, epoch, sender.UserID(), sender.DeviceID(), plain); err != nil {
			t.Fatalf("%s processing distribution from %s: %v", name(m), name(sender), err)
		}
	}
}

type groupMsg struct {
	from  *Device
	ct    []byte
	plain []byte
}

// broadcast has every member send n messages in epoch, distributing its
// sender key to members when GroupEncrypt creates one.
func broadcast(t *testing.T, keys *directory, group string, epoch uint64, members []*Device, n int) []groupMsg {
	t.Helper()
	var out []groupMsg
	for _, s := range members {
		for i := range n {
			plain := fmt.Appendf(nil, "%s epoch %d #%d", name(s), epoch, i)
			ct, dist, err := s.GroupEncrypt(group, epoch, plain)
			if err != nil {
				t.Fatalf("GroupEncrypt by %s: %v", name(s), err)
			}
			if (dist != nil) != (i == 0) {
				t.Fatalf("GroupEncrypt #%d by %s: distribution present=%v", i, name(s), dist != nil)
			}
			if dist != nil {
				distribute(t, keys, group, epoch, s, members, dist)
			}
			out = append(out, groupMsg{s, ct, plain})
		}
	}
	return out
}

// receiveAll has every member except the sender decrypt msgs, last first
// (out of order).
func receiveAll(t *testing.T, group string, epoch uint64, members []*Device, msgs []groupMsg) {
	t.Helper()
	for _, m := range members {
		for i := len(msgs) - 1; i >= 0; i-- {
			g := msgs[i]
			if g.from == m {
				continue
			}
			got, err := m.GroupDecrypt(group, epoch, g.from.UserID(), g.from.DeviceID(), g.ct)
			if err != nil {
				t.Fatalf("%s decrypting %q: %v", name(m), g.plain, err)
			}
			if string(got) != string(g.plain) {
				t.Fatalf("%s decrypted %q, want %q", name(m), got, g.plain)
			}
		}
	}
}

func TestGroupFiveDevicesAndEpochChange(t *testing.T) {
	keys, dir := newDirectory(), t.TempDir()
	a1 := newPublishedDevice(t, keys, dir, "alice", 1)
	a2 := newPublishedDevice(t, keys, dir, "alice", 2)
	bob := newPublishedDevice(t, keys, dir, "bob", 1)
	carol := newPublishedDevice(t, keys, dir, "carol", 1)
	dave := newPublishedDevice(t, keys, dir, "dave", 1)
	const group = "team"
	all := []*Device{a1, a2, bob, carol, dave}

	epoch1 := broadcast(t, keys, group, 1, all, 3)
	receiveAll(t, group, 1, all, epoch1)

	// A message of epoch 1 still in flight when dave is removed.
	lateCt, _, err := a1.GroupEncrypt(group, 1, []byte("late epoch 1"))
	if err != nil {
		t.Fatal(err)
	}

	remaining := []*Device{a1, a2, bob, carol}
	epoch2 := broadcast(t, keys, group, 2, remaining, 2)
	receiveAll(t, group, 2, remaining, epoch2)

	for _, g := range epoch2 {
		if _, err := dave.GroupDecrypt(group, 2, g.from.UserID(), g.from.DeviceID(), g.ct); !errors.Is(err, ErrNoSenderKey) {
			t.Fatalf("removed member decrypting epoch 2 message of %s: %v, want ErrNoSenderKey", name(g.from), err)
		}
		// Nor does claiming it is an epoch 1 message help.
		if _, err := dave.GroupDecrypt(group, 1, g.from.UserID(), g.from.DeviceID(), g.ct); err == nil {
			t.Fatalf("removed member decrypted an epoch 2 message of %s with its epoch 1 key", name(g.from))
		}
	}
	// Old epochs' keys are kept for late messages.
	if got, err := bob.GroupDecrypt(group, 1, "alice", 1, lateCt); err != nil || string(got) != "late epoch 1" {
		t.Fatalf("late epoch 1 message: %q, %v", got, err)
	}
}

func TestGroupDistributionEdgeCases(t *testing.T) {
	keys, dir := newDirectory(), t.TempDir()
	alice := newPublishedDevice(t, keys, dir, "alice", 1)
	bob := newPublishedDevice(t, keys, dir, "bob", 1)
	const group = "g"

	ct1, dist, err := alice.GroupEncrypt(group, 1, []byte("one"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bob.GroupDecrypt(group, 1, "alice", 1, ct1); !errors.Is(err, ErrNoSenderKey) {
		t.Fatalf("GroupDecrypt before distribution: %v, want ErrNoSenderKey", err)
	}
	for range 2 { // processing twice is a no-op
		if err := bob.ProcessDistribution(group, 1, "alice", 1, dist); err != nil {
			t.Fatal(err)
		}
	}
	if got, err := bob.GroupDecrypt(group, 1, "alice", 1, ct1); err != nil || string(got) != "one" {
		t.Fatalf("GroupDecrypt: %q, %v", got, err)
	}
	if err := bob.ProcessDistribution(group, 1, "alice", 1, dist); err != nil {
		t.Fatal(err)
	}
	if _, err := bob.GroupDecrypt(group, 1, "alice", 1, ct1); !errors.Is(err, ErrInvalidMessage) {
		t.Fatalf("replayed group message after re-processing the distribution: %v, want ErrInvalidMessage", err)
	}
	// The wrong sender, group or epoch does not decrypt.
	for _, c := range []struct {
		group string
		epoch uint64
		user  string
	}{{group, 2, "alice"}, {"other", 1, "alice"}, {group, 1, "carol"}} {
		if _, err := bob.GroupDecrypt(c.group, c.epoch, c.user, 1, ct1); !errors.Is(err, ErrNoSenderKey) {
			t.Fatalf("GroupDecrypt as %+v: %v, want ErrNoSenderKey", c, err)
		}
	}
	// A distribution claiming to come from the device itself is refused.
	if err := alice.ProcessDistribution(group, 1, "alice", 1, dist); !errors.Is(err, ErrOwnAddress) {
		t.Fatalf("own distribution: %v, want ErrOwnAddress", err)
	}
	// A conflicting distribution (same key id, other signing key) is refused.
	orig, err := protocol.NewSenderKeyDistributionMessageFromBytes(dist[1:], serializer.SenderKeyDistributionMessage)
	if err != nil {
		t.Fatal(err)
	}
	otherKey, err := ecc.GenerateKeyPair()
	if err != nil {
		t.Fatal(err)
	}
	conflicting := frame(typeDistribution, protocol.NewSenderKeyDistributionMessage(orig.ID(), 0,
		orig.ChainKey(), otherKey.PublicKey(), serializer.SenderKeyDistributionMessage).Serialize())
	if err := bob.ProcessDistribution(group, 1, "alice", 1, conflicting); !errors.Is(err, ErrInvalidMessage) {
		t.Fatalf("conflicting distribution: %v, want ErrInvalidMessage", err)
	}
	if _, err := bob.GroupDistribution(group, 1); !errors.Is(err, ErrNoSenderKey) {
		t.Fatalf("GroupDistribution without own sender key: %v, want ErrNoSenderKey", err)
	}

	// A device that joins mid-epoch gets the current chain position.
	carol := newPublishedDevice(t, keys, dir, "carol", 1)
	ct2, _, err := alice.GroupEncrypt(group, 1, []byte("two"))
	if err != nil {
		t.Fatal(err)
	}
	now, err := alice.GroupDistribution(group, 1)
	if err != nil {
		t.Fatal(err)
	}
	ct3, _, err := alice.GroupEncrypt(group, 1, []byte("three"))
	if err != nil {
		t.Fatal(err)
	}
	if err := carol.ProcessDistribution(group, 1, "alice", 1, now); err != nil {
		t.Fatal(err)
	}
	if got, err := carol.GroupDecrypt(group, 1, "alice", 1, ct3); err != nil || string(got) != "three" {
		t.Fatalf("joiner decrypting a later message: %q, %v", got, err)
	}
	if _, err := carol.GroupDecrypt(group, 1, "alice", 1, ct2); !errors.Is(err, ErrInvalidMessage) {
		t.Fatalf("joiner decrypting an earlier message: %v, want ErrInvalidMessage", err)
	}
}

// TestGroupEpochRetention: only the newest MaxEpochsPerGroup epochs keep
// their sender keys.
func TestGroupEpochRetention(t *testing.T) {
	keys, dir := newDirectory(), t.TempDir()
	alice := newPublishedDevice(t, keys, dir, "alice", 1)
	bob := newPublishedDevice(t, keys, dir, "bob", 1)
	const group = "g"
	const epochs = MaxEpochsPerGroup + 2
	cts := map[uint64][]byte{}
	for e := uint64(1); e <= epochs; e++ {
		ct, dist, err := alice.GroupEncrypt(group, e, fmt.Appendf(nil, "epoch %d", e))
		if err != nil {
			t.Fatal(err)
		}
		if err := bob.ProcessDistribution(group, e, "alice", 1, dist); err != nil {
			t.Fatal(err)
		}
		cts[e] = ct
	}
	// Another group is not affected.
	otherCt, otherDist, err := alice.GroupEncrypt("other", 1, []byte("x"))
	if err != nil {
		t.Fatal(err)
	}
	if err := bob.ProcessDistribution("other", 1, "alice", 1, otherDist); err != nil {
		t.Fatal(err)
	}
	for e := uint64(1); e <= epochs; e++ {
		_, err := bob.GroupDecrypt(group, e, "alice", 1, cts[e])
		kept := e > epochs-MaxEpochsPerGroup
		if kept && err != nil {
			t.Fatalf("epoch %d: %v", e, err)
		}
		if !kept && !errors.Is(err, ErrNoSenderKey) {
			t.Fatalf("epoch %d should be pruned: %v", e, err)
		}
	}
	if _, err := bob.GroupDecrypt("other", 1, "alice", 1, otherCt); err != nil {
		t.Fatalf("other group: %v", err)
	}
	if _, _, err := alice.GroupEncrypt(group, 1, []byte("x")); !errors.Is(err, ErrEpochTooOld) {
		t.Fatalf("GroupEncrypt in a pruned epoch: %v, want ErrEpochTooOld", err)
	}
	_, oldDist, err := newPublishedDevice(t, keys, dir, "carol", 1).GroupEncrypt(group, 1, []byte("x"))
	if err != nil {
		t.Fatal(err)
	}
	if err := bob.ProcessDistribution(group, 1, "carol", 1, oldDist); !errors.Is(err, ErrEpochTooOld) {
		t.Fatalf("distribution for a pruned epoch: %v, want ErrEpochTooOld", err)
	}
}
