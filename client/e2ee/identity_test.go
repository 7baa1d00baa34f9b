package e2ee

import (
	"bytes"
	"errors"
	"testing"
)

// TestIdentityChange: bob re-installs (new identity key for the same
// address). The change is reported to the handler in both directions; an
// accepting handler (or none) lets the new identity replace the old one, a
// rejecting handler rolls the operation back.
func TestIdentityChange(t *testing.T) {
	errRejected := errors.New("user said no")
	cases := []struct {
		name     string
		handler  bool
		reject   bool
		outgoing bool // alice starts the new session instead of new bob
	}{
		{"incoming, accepted", true, false, false},
		{"incoming, rejected", true, true, false},
		{"incoming, no handler", false, false, false},
		{"outgoing after reset, accepted", true, false, true},
		{"outgoing after reset, rejected", true, true, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			keys, dir := newDirectory(), t.TempDir()
			alice := newPublishedDevice(t, keys, dir, "alice", 1)
			oldBob := newPublishedDevice(t, keys, dir, "bob", 1)
			mustDecrypt(t, oldBob, alice, send(t, keys, alice, oldBob, []byte("hi")), []byte("hi"))
			mustDecrypt(t, alice, oldBob, send(t, keys, oldBob, alice, []byte("yo")), []byte("yo"))
			oldKey := oldBob.IdentityKey()

			var changes []IdentityChange
			if tc.handler {
				alice.SetIdentityChangeHandler(func(c IdentityChange) error {
					changes = append(changes, c)
					if tc.reject {
						return errRejected
					}
					return nil
				})
			}

			newBob := newPublishedDevice(t, keys, t.TempDir(), "bob", 1) // re-install
			keys.replace(t, newBob, 2)
			newKey := newBob.IdentityKey()

			var err error
			if tc.outgoing {
				if err := alice.ResetSession("bob", 1); err != nil {
					t.Fatal(err)
				}
				var ct []byte
				ct, err = alice.Encrypt("bob", 1, keys.bundle(t, newBob), []byte("new"))
				if err == nil {
					mustDecrypt(t, newBob, alice, ct, []byte("new"))
				}
			} else {
				ct := send(t, keys, newBob, alice, []byte("new"))
				var got []byte
				got, err = alice.Decrypt("bob", 1, ct)
				if err == nil && string(got) != "new" {
					t.Fatalf("decrypted %q", got)
				}
			}

			if tc.handler {
				if len(changes) != 1 || changes[0].UserID != "bob" || changes[0].DeviceID != 1 ||
					!bytes.Equal(changes[0].Old, oldKey) || !bytes.Equal(changes[0].New, newKey) {
					t.Fatalf("handler saw %+v, want one change of bob.1 from old to new key", changes)
				}
			}
			stored, _ := alice.RemoteIdentity("bob", 1)
			if tc.reject {
				var ice *IdentityChangedError
				if !errors.As(err, &ice) || !errors.Is(err, errRejected) || ice.Change.UserID != "bob" {
					t.Fatalf("rejected change: err %v, want *IdentityChangedError wrapping the handler's error", err)
				}
				if !bytes.Equal(stored, oldKey) {
					t.Fatal("rejected identity was stored")
				}
				if !tc.outgoing {
					// The old session is untouched.
					mustDecrypt(t, alice, oldBob, send(t, keys, oldBob, alice, []byte("old")), []byte("old"))
				} else if alice.HasSession("bob", 1) {
					t.Fatal("rejected Encrypt created a session")
				}
				return
			}
			if err != nil {
				t.Fatalf("accepted change: %v", err)
			}
			if !bytes.Equal(stored, newKey) {
				t.Fatal("new identity not stored")
			}
			mustDecrypt(t, newBob, alice, send(t, keys, alice, newBob, []byte("ack")), []byte("ack"))
			mustDecrypt(t, alice, newBob, send(t, keys, newBob, alice, []byte("ok")), []byte("ok"))
		})
	}
}
