package e2ee

import (
	"bytes"
	"context"
	"errors"
	"fmt"

	"go.mau.fi/libsignal/protocol"
	"go.mau.fi/libsignal/session"

	"github.com/courier-im/courier/protos/courierpb"
)

// sessionReady reports whether st holds a usable session with a: a record
// whose current state can send. (A record can exist without one only if it
// was written by a foreign tool; we never store such a record.)
func sessionReady(tx *txn, a address) (bool, error) {
	if _, ok := tx.st.sessions[a]; !ok {
		return false, nil
	}
	rec, err := tx.LoadSession(context.Background(), protocol.NewSignalAddress(a.user, a.device))
	if err != nil {
		return false, err
	}
	return rec.SessionState().HasSenderChain(), nil
}

// HasSession reports whether this device has a session with the given
// remote device, i.e. whether Encrypt can be called without a bundle.
func (d *Device) HasSession(userID string, deviceID uint32) bool {
	var ok bool
	_ = d.view(func(st *state) error {
		return protect(func() (err error) {
			ok, err = sessionReady(newTxn(st), address{userID, deviceID})
			return err
		})
	})
	return ok
}

// ResetSession forgets the session with a remote device, e.g. after it
// re-registered; the next Encrypt to it needs a fresh bundle. The device's
// stored identity key is kept, so a re-registration with a new identity is
// still reported to the identity change handler.
func (d *Device) ResetSession(userID string, deviceID uint32) error {
	err := d.update(func(tx *txn) error {
		a := address{userID, deviceID}
		if _, ok := tx.st.sessions[a]; ok {
			delete(tx.st.sessions, a)
			tx.dirty = true
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("e2ee: reset session with %s.%d: %w", userID, deviceID, err)
	}
	return nil
}

func (d *Device) peer(userID string, deviceID uint32) (*protocol.SignalAddress, error) {
	if userID == d.userID && deviceID == d.deviceID {
		return nil, ErrOwnAddress
	}
	if userID == "" {
		return nil, fmt.Errorf("empty user id")
	}
	return protocol.NewSignalAddress(userID, deviceID), nil
}

// Encrypt encrypts plaintext for one remote device. With no session yet,
// bundle (from the key directory) must be given: it is verified like
// VerifyBundle and a session is built with X3DH; until the peer answers,
// every message is a prekey message that lets the peer build the same
// session. With a session, bundle is ignored (call ResetSession first to
// start over from a new bundle).
//
// The result starts with a type byte (see doc.go) and is opaque to the
// server.
func (d *Device) Encrypt(userID string, deviceID uint32, bundle *courierpb.DeviceBundle, plaintext []byte) ([]byte, error) {
	var out []byte
	err := d.update(func(tx *txn) error {
		addr, err := d.peer(userID, deviceID)
		if err != nil {
			return err
		}
		ctx := context.Background()
		builder := session.NewBuilderFromSignal(tx, addr, serializer)
		ready, err := sessionReady(tx, addrOf(addr))
		if err != nil {
			return err
		}
		if !ready {
			if bundle == nil {
				return ErrNoSession
			}
			b, err := parseBundle(bundle)
			if err != nil {
				return err
			}
			if b.DeviceID() != 0 && b.DeviceID() != deviceID {
				return fmt.Errorf("%w: bundle is for device %d", ErrInvalidBundle, b.DeviceID())
			}
			if err := builder.ProcessBundle(ctx, b); err != nil {
				return fmt.Errorf("x3dh: %w", err)
			}
		}
		msg, err := session.NewCipher(builder, addr).Encrypt(ctx, plaintext)
		if err != nil {
			return err
		}
		switch msg.(type) {
		case *protocol.PreKeySignalMessage:
			out = frame(typePreKey, msg.Serialize())
		case *protocol.SignalMessage:
			out = frame(typeSignal, msg.Serialize())
		default:
			return fmt.Errorf("unexpected libsignal message %T", msg)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("e2ee: encrypt for %s.%d: %w", userID, deviceID, err)
	}
	return out, nil
}

// Decrypt decrypts a message from a remote device. A prekey message builds
// the session (consuming the one-time prekey it names, which is deleted);
// a normal message needs an existing session (ErrNoSession otherwise).
// Anything that does not authenticate fails with ErrInvalidMessage and
// leaves the stored state untouched.
func (d *Device) Decrypt(fromUserID string, fromDeviceID uint32, ciphertext []byte) ([]byte, error) {
	var plaintext []byte
	err := d.update(func(tx *txn) error {
		addr, err := d.peer(fromUserID, fromDeviceID)
		if err != nil {
			return err
		}
		t, body, err := unframe(ciphertext, typeSignal, typePreKey)
		if err != nil {
			return err
		}
		if t == typeSignal {
			if _, ok := tx.st.sessions[addrOf(addr)]; !ok {
				return ErrNoSession
			}
		}
		// Everything below parses and authenticates attacker-controlled
		// bytes: any failure, panics included, is an invalid message.
		err = protect(func() (err error) {
			plaintext, err = decryptFramed(tx, addr, t, body)
			return err
		})
		if err != nil {
			return fmt.Errorf("%w: %w", ErrInvalidMessage, err)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("e2ee: decrypt from %s.%d: %w", fromUserID, fromDeviceID, err)
	}
	return plaintext, nil
}

func decryptFramed(tx *txn, addr *protocol.SignalAddress, t byte, body []byte) ([]byte, error) {
	ctx := context.Background()
	builder := session.NewBuilderFromSignal(tx, addr, serializer)
	cipher := session.NewCipher(builder, addr)
	if t == typePreKey {
		msg, err := protocol.NewPreKeySignalMessageFromBytes(body, serializer.PreKeySignalMessage, serializer.SignalMessage)
		if err != nil {
			return nil, err
		}
		if err := checkCanonicalPreKey(msg, body); err != nil {
			return nil, err
		}
		return cipher.DecryptMessage(ctx, msg)
	}
	msg, err := protocol.NewSignalMessageFromBytes(body, serializer.SignalMessage)
	if err != nil {
		return nil, err
	}
	if !bytes.Equal(msg.Serialize(), body) {
		return nil, errNotCanonical
	}
	return cipher.Decrypt(ctx, msg)
}

// errNotCanonical: libsignal v0.2.0 computes a message's MAC (or
// signature) over its own re-serialization of the parsed fields instead of
// over the received bytes, so differently encoded bytes with the same
// fields (a changed low nibble of the version byte, a non-minimal protobuf
// varint, an unknown field) would still verify. Requiring the received
// bytes to be exactly what libsignal would produce closes that gap: a
// modified message never decrypts.
var errNotCanonical = errors.New("message is not canonically encoded")

// checkCanonicalPreKey applies the canonical-encoding check to a prekey
// message and to the normal message embedded in it.
func checkCanonicalPreKey(msg *protocol.PreKeySignalMessage, body []byte) error {
	if !bytes.Equal(msg.Serialize(), body) {
		return errNotCanonical
	}
	outer, err := serializer.PreKeySignalMessage.Deserialize(body)
	if err != nil {
		return err
	}
	if !bytes.Equal(msg.WhisperMessage().Serialize(), outer.Message) {
		return errNotCanonical
	}
	return nil
}
