package storetest

import (
	"bytes"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/courier-im/courier/persistence"
)

func testReopen(t *testing.T, factory Factory) {
	f := newFixture(t, factory, Options{})
	if f.reopen == nil {
		t.Skip("implementation cannot reopen")
	}
	c := ctx(t)
	user := persistence.User{ID: f.id("u"), Handle: f.id("h"), CreatedAt: at(1)}
	device := persistence.Device{UserID: user.ID, DeviceID: 4, SecretHash: []byte("secret-hash"), CreatedAt: at(2)}
	rec := persistence.DedupeRecord{RecipientID: user.ID, SenderID: f.id("s"), ClientMsgID: "m", StoredAtMs: 42}
	withEntry := persistence.DedupeRecord{RecipientID: user.ID, SenderID: f.id("s"), ClientMsgID: "n", StoredAtMs: 43}
	counter, secret, deleted := f.id("counter"), f.id("secret"), f.id("deleted")

	if err := f.s.CreateUser(c, user); err != nil {
		t.Fatal(err)
	}
	if err := f.s.PutDevice(c, device); err != nil {
		t.Fatal(err)
	}
	appendSeqs(t, f.s, user.ID, 4, "r", 1, 2, 3)
	if err := f.s.Append(c, []persistence.InboxAppend{{UserID: user.ID, DeviceID: 5, Entry: entry(9, "r")}},
		[]persistence.DedupeRecord{withEntry}); err != nil {
		t.Fatal(err)
	}
	if err := f.s.Append(c, nil, []persistence.DedupeRecord{rec}); err != nil {
		t.Fatal(err)
	}
	if err := f.s.DeleteRange(c, user.ID, 4, 0, 1); err != nil {
		t.Fatal(err)
	}
	if first, last, err := f.s.LeaseBlock(c, counter, 10); err != nil || first != 1 || last != 10 {
		t.Fatalf("LeaseBlock = (%d, %d, %v), want (1, 10, nil)", first, last, err)
	}
	if _, err := f.s.LoadOrStoreSecret(c, secret, []byte("original")); err != nil {
		t.Fatal(err)
	}
	if _, err := f.s.LoadOrStoreSecret(c, deleted, []byte("gone")); err != nil {
		t.Fatal(err)
	}
	if err := f.s.DeleteSecret(c, deleted); err != nil {
		t.Fatal(err)
	}
	if err := f.s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}

	s := f.reopen(t)
	if s == nil {
		t.Fatal("Reopen returned a nil store")
	}
	if got, err := s.GetUser(c, user.ID); err != nil {
		t.Fatalf("GetUser after reopen: %v", err)
	} else {
		checkUser(t, "GetUser after reopen", got, user)
	}
	if got, err := s.GetUserByHandle(c, user.Handle); err != nil {
		t.Fatalf("GetUserByHandle after reopen: %v", err)
	} else {
		checkUser(t, "GetUserByHandle after reopen", got, user)
	}
	err := s.CreateUser(c, persistence.User{ID: f.id("other"), Handle: user.Handle, CreatedAt: at(3)})
	if !errors.Is(err, persistence.ErrHandleTaken) {
		t.Fatalf("claiming a persisted handle after reopen: got %v, want ErrHandleTaken", err)
	}
	if got, err := s.GetDevice(c, user.ID, device.DeviceID); err != nil {
		t.Fatalf("GetDevice after reopen: %v", err)
	} else {
		checkDevice(t, got, device)
	}
	checkEntries(t, "device 4 after reopen", rangeAll(t, s, user.ID, 4), "r", 2, 3)
	checkEntries(t, "device 5 after reopen", rangeAll(t, s, user.ID, 5), "r", 9)
	for _, want := range []persistence.DedupeRecord{rec, withEntry} {
		if got, err := s.GetDedupe(c, want.RecipientID, []uint32{4, 5}, want.SenderID, want.ClientMsgID); err != nil || got != want {
			t.Fatalf("GetDedupe(%s) after reopen = (%+v, %v), want %+v", want.ClientMsgID, got, err, want)
		}
	}
	// The counter continues; restarting at 1 would reissue numbers.
	if got, err := s.LastLeased(c, counter); err != nil || got != 10 {
		t.Fatalf("LastLeased after reopen = (%d, %v), want (10, nil)", got, err)
	}
	if first, last, err := s.LeaseBlock(c, counter, 10); err != nil || first != 11 || last != 20 {
		t.Fatalf("LeaseBlock after reopen = (%d, %d, %v), want (11, 20, nil)", first, last, err)
	}
	if got, err := s.LoadOrStoreSecret(c, secret, []byte("replacement")); err != nil || !bytes.Equal(got, []byte("original")) {
		t.Fatalf("LoadOrStoreSecret after reopen = (%q, %v), want %q", got, err, "original")
	}
	if got, err := s.LoadSecret(c, deleted); !errors.Is(err, persistence.ErrNotFound) {
		t.Fatalf("a deleted secret after reopen = (%q, %v), want ErrNotFound", got, err)
	}
}

func testClosed(t *testing.T, factory Factory) {
	t.Run("MethodsFail", func(t *testing.T) {
		f := newFixture(t, factory, Options{})
		c := ctx(t)
		uid := f.id("u")
		if err := f.s.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
		calls := []struct {
			name string
			call func() error
		}{
			{"CreateUser", func() error {
				return f.s.CreateUser(c, persistence.User{ID: uid, Handle: f.id("h"), CreatedAt: at(0)})
			}},
			{"GetUser", func() error { _, err := f.s.GetUser(c, uid); return err }},
			{"GetUserByHandle", func() error { _, err := f.s.GetUserByHandle(c, f.id("h")); return err }},
			{"PutDevice", func() error {
				return f.s.PutDevice(c, persistence.Device{UserID: uid, DeviceID: 1, SecretHash: []byte("x"), CreatedAt: at(0)})
			}},
			{"GetDevice", func() error { _, err := f.s.GetDevice(c, uid, 1); return err }},
			{"ListDevices", func() error { _, err := f.s.ListDevices(c, uid); return err }},
			{"Append", func() error {
				return f.s.Append(c, []persistence.InboxAppend{{UserID: uid, DeviceID: 1, Entry: entry(1, "c")}}, nil)
			}},
			{"Range", func() error { _, err := f.s.Range(c, uid, 1, 0, 10); return err }},
			{"DeleteRange", func() error { return f.s.DeleteRange(c, uid, 1, 0, 1) }},
			{"DeleteInbox", func() error { return f.s.DeleteInbox(c, uid, 1) }},
			{"GetDedupe", func() error { _, err := f.s.GetDedupe(c, uid, []uint32{1}, uid, "m"); return err }},
			{"LeaseBlock", func() error { _, _, err := f.s.LeaseBlock(c, f.id("c"), 1); return err }},
			{"LastLeased", func() error { _, err := f.s.LastLeased(c, f.id("c")); return err }},
			{"LoadOrStoreSecret", func() error { _, err := f.s.LoadOrStoreSecret(c, f.id("s"), []byte("v")); return err }},
			{"LoadSecret", func() error { _, err := f.s.LoadSecret(c, f.id("s")); return err }},
			{"DeleteSecret", func() error { return f.s.DeleteSecret(c, f.id("s")) }},
			{"GetProfile", func() error { _, err := f.s.GetProfile(c, uid); return err }},
			{"TakeOneTimePrekey", func() error { _, _, err := f.s.TakeOneTimePrekey(c, uid, 1); return err }},
			{"DeleteDevice", func() error { return f.s.DeleteDevice(c, uid, 1) }},
			{"PutProfile", func() error { return f.s.PutProfile(c, uid, []byte("p")) }},
			{"Close", func() error { return f.s.Close() }},
		}
		for _, tc := range calls {
			t.Run(tc.name, func(t *testing.T) {
				if err := tc.call(); !errors.Is(err, persistence.ErrClosed) {
					t.Fatalf("got %v, want ErrClosed", err)
				}
			})
		}
	})

	// Callers racing Close must see success or ErrClosed, never a panic or
	// another error.
	t.Run("RacingClose", func(t *testing.T) {
		f := newFixture(t, factory, Options{})
		c := ctx(t)
		const workers = 8
		errs := make(chan error, workers)
		warm := sync.WaitGroup{}
		warm.Add(workers)
		var wg sync.WaitGroup
		for w := range workers {
			wg.Go(func() {
				uid := f.id(fmt.Sprintf("racer%d", w))
				warmed := false
				for i := uint64(1); ; i++ {
					var err error
					switch i % 4 {
					case 0:
						err = f.s.Append(c, []persistence.InboxAppend{{UserID: uid, DeviceID: 1, Entry: entry(i, "rc")}}, nil)
					case 1:
						_, err = f.s.Range(c, uid, 1, 0, 10)
					case 2:
						_, err = f.s.GetUser(c, uid)
						if errors.Is(err, persistence.ErrNotFound) {
							err = nil
						}
					case 3:
						_, _, err = f.s.LeaseBlock(c, uid, 1)
					}
					if !warmed && i >= 4 {
						warmed = true
						warm.Done()
					}
					if errors.Is(err, persistence.ErrClosed) {
						if !warmed {
							warm.Done()
						}
						return
					}
					if err != nil {
						errs <- fmt.Errorf("worker %d op %d: %w", w, i, err)
						if !warmed {
							warm.Done()
						}
						return
					}
				}
			})
		}
		warm.Wait()
		if err := f.s.Close(); err != nil {
			t.Errorf("Close while in use: %v", err)
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
	})
}
