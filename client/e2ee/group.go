package e2ee

import (
	"bytes"
	"context"
	"fmt"
	"slices"

	"go.mau.fi/libsignal/groups"
	"go.mau.fi/libsignal/protocol"
)

// MaxEpochsPerGroup is how many epochs of a group (the newest ones this
// device has sender keys for) keep their sender keys, so messages sent just
// before an epoch change still decrypt. Older epochs' keys are deleted.
const MaxEpochsPerGroup = 3

func checkGroup(groupID string) error {
	if groupID == "" {
		return fmt.Errorf("empty group id")
	}
	return nil
}

// GroupEncrypt encrypts plaintext once for all members of a group epoch
// with this device's sender key for (groupID, epoch). When the device has no
// sender key for that epoch yet it creates one and also returns its
// distribution message: send that to every member device of the epoch over
// the pairwise sessions (Encrypt), before or together with the ciphertext.
// Otherwise distribution is nil.
func (d *Device) GroupEncrypt(groupID string, epoch uint64, plaintext []byte) (ciphertext, distribution []byte, err error) {
	err = d.update(func(tx *txn) error {
		if err := checkGroup(groupID); err != nil {
			return err
		}
		ctx := context.Background()
		name := senderKeyName(groupID, epoch, tx.st.self())
		builder := groups.NewGroupSessionBuilder(tx, serializer)
		if _, ok := tx.st.senderKeys[senderKeyID{groupID, epoch, tx.st.self()}]; !ok {
			skdm, err := builder.Create(ctx, name)
			if err != nil {
				return fmt.Errorf("create sender key: %w", err)
			}
			distribution = frame(typeDistribution, skdm.Serialize())
			if err := pruneEpochs(tx.st, groupID, epoch); err != nil {
				return err
			}
		}
		msg, err := groups.NewGroupCipher(builder, name, tx).Encrypt(ctx, plaintext)
		if err != nil {
			return err
		}
		ciphertext = frame(typeSenderKey, msg.SignedSerialize()) // Serialize() omits the signature
		return nil
	})
	if err != nil {
		return nil, nil, fmt.Errorf("e2ee: group encrypt %s/%d: %w", groupID, epoch, err)
	}
	return ciphertext, distribution, nil
}

// GroupDistribution returns this device's sender key distribution message
// for (groupID, epoch) at its current chain position, e.g. for a device
// that joins mid-epoch or re-registered; it can decrypt messages sent from
// now on. It fails with ErrNoSenderKey if GroupEncrypt was never called for
// that epoch.
func (d *Device) GroupDistribution(groupID string, epoch uint64) ([]byte, error) {
	var out []byte
	err := d.update(func(tx *txn) error {
		self := tx.st.self()
		if _, ok := tx.st.senderKeys[senderKeyID{groupID, epoch, self}]; !ok {
			return ErrNoSenderKey
		}
		// Create returns the existing key's distribution without storing.
		skdm, err := groups.NewGroupSessionBuilder(tx, serializer).
			Create(context.Background(), senderKeyName(groupID, epoch, self))
		if err != nil {
			return err
		}
		out = frame(typeDistribution, skdm.Serialize())
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("e2ee: group distribution %s/%d: %w", groupID, epoch, err)
	}
	return out, nil
}

// ProcessDistribution stores the sender key another member device sent for
// (groupID, epoch). The caller must have received distribution over the
// pairwise session with fromUserID/fromDeviceID (Decrypt): that session is
// what authenticates the sender key. Processing the same distribution
// twice is a no-op.
func (d *Device) ProcessDistribution(groupID string, epoch uint64, fromUserID string, fromDeviceID uint32, distribution []byte) error {
	err := d.update(func(tx *txn) error {
		if err := checkGroup(groupID); err != nil {
			return err
		}
		addr, err := d.peer(fromUserID, fromDeviceID)
		if err != nil {
			return err
		}
		_, body, err := unframe(distribution, typeDistribution)
		if err != nil {
			return err
		}
		var skdm *protocol.SenderKeyDistributionMessage
		err = protect(func() (err error) {
			skdm, err = protocol.NewSenderKeyDistributionMessageFromBytes(body, serializer.SenderKeyDistributionMessage)
			return err
		})
		if err != nil {
			return fmt.Errorf("%w: %w", ErrInvalidMessage, err)
		}
		ctx := context.Background()
		name := senderKeyName(groupID, epoch, addrOf(addr))
		rec, err := tx.LoadSenderKey(ctx, name)
		if err != nil {
			return err
		}
		// libsignal would prepend a second state with the same key id,
		// rewinding the chain to the distribution's iteration and letting
		// already-read messages decrypt again; skip exact repeats instead.
		if have, err := rec.GetSenderKeyStateByID(skdm.ID()); err == nil {
			if !bytes.Equal(have.SigningKey().PublicKey().Serialize(), skdm.SignatureKey().Serialize()) {
				return fmt.Errorf("%w: sender key id %d already known with another signing key", ErrInvalidMessage, skdm.ID())
			}
			return nil
		}
		if err := groups.NewGroupSessionBuilder(tx, serializer).Process(ctx, name, skdm); err != nil {
			return err
		}
		return pruneEpochs(tx.st, groupID, epoch)
	})
	if err != nil {
		return fmt.Errorf("e2ee: process distribution %s/%d from %s.%d: %w", groupID, epoch, fromUserID, fromDeviceID, err)
	}
	return nil
}

// GroupDecrypt decrypts a group message that fromUserID/fromDeviceID sent
// in (groupID, epoch). It fails with ErrNoSenderKey when this device holds
// no sender key of that sender for that epoch (never distributed to it, or
// pruned), and with ErrInvalidMessage when the message does not verify.
func (d *Device) GroupDecrypt(groupID string, epoch uint64, fromUserID string, fromDeviceID uint32, ciphertext []byte) ([]byte, error) {
	var plaintext []byte
	err := d.update(func(tx *txn) error {
		addr, err := d.peer(fromUserID, fromDeviceID)
		if err != nil {
			return err
		}
		_, body, err := unframe(ciphertext, typeSenderKey)
		if err != nil {
			return err
		}
		if _, ok := tx.st.senderKeys[senderKeyID{groupID, epoch, addrOf(addr)}]; !ok {
			return ErrNoSenderKey
		}
		err = protect(func() error {
			msg, err := protocol.NewSenderKeyMessageFromBytes(body, serializer.SenderKeyMessage)
			if err != nil {
				return err
			}
			// The signature covers libsignal's re-serialization, not
			// the received bytes; see errNotCanonical.
			if !bytes.Equal(msg.SignedSerialize(), body) {
				return errNotCanonical
			}
			name := senderKeyName(groupID, epoch, addrOf(addr))
			builder := groups.NewGroupSessionBuilder(tx, serializer)
			plaintext, err = groups.NewGroupCipher(builder, name, tx).Decrypt(context.Background(), msg)
			return err
		})
		if err != nil {
			return fmt.Errorf("%w: %w", ErrInvalidMessage, err)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("e2ee: group decrypt %s/%d from %s.%d: %w", groupID, epoch, fromUserID, fromDeviceID, err)
	}
	return plaintext, nil
}

// pruneEpochs deletes the sender keys of groupID outside its newest
// MaxEpochsPerGroup epochs, and fails with ErrEpochTooOld if that would
// delete the key of epoch just added.
func pruneEpochs(st *state, groupID string, epoch uint64) error {
	var epochs []uint64
	for k := range st.senderKeys {
		if k.group == groupID && !slices.Contains(epochs, k.epoch) {
			epochs = append(epochs, k.epoch)
		}
	}
	if len(epochs) <= MaxEpochsPerGroup {
		return nil
	}
	slices.Sort(epochs)
	oldestKept := epochs[len(epochs)-MaxEpochsPerGroup]
	if epoch < oldestKept {
		return fmt.Errorf("%w: epoch %d, keeping %d and newer", ErrEpochTooOld, epoch, oldestKept)
	}
	for k := range st.senderKeys {
		if k.group == groupID && k.epoch < oldestKept {
			delete(st.senderKeys, k)
		}
	}
	return nil
}
