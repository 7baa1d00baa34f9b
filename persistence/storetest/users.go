package storetest

import (
	"bytes"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/courier-im/courier/persistence"
)

func testUsers(t *testing.T, factory Factory) {
	t.Run("CreateAndGet", func(t *testing.T) {
		f := newFixture(t, factory, Options{})
		c := ctx(t)
		users := []persistence.User{
			{ID: f.id("alice"), Handle: f.id("alice-h"), CreatedAt: at(1)},
			{ID: f.id("bob"), Handle: f.id("bob-h"), CreatedAt: at(2)},
		}
		for _, u := range users {
			if err := f.s.CreateUser(c, u); err != nil {
				t.Fatalf("CreateUser(%+v): %v", u, err)
			}
		}
		for _, want := range users {
			got, err := f.s.GetUser(c, want.ID)
			if err != nil {
				t.Fatalf("GetUser(%q): %v", want.ID, err)
			}
			checkUser(t, "GetUser", got, want)
			got, err = f.s.GetUserByHandle(c, want.Handle)
			if err != nil {
				t.Fatalf("GetUserByHandle(%q): %v", want.Handle, err)
			}
			checkUser(t, "GetUserByHandle", got, want)
		}
	})

	t.Run("NotFound", func(t *testing.T) {
		f := newFixture(t, factory, Options{})
		c := ctx(t)
		if err := f.s.CreateUser(c, persistence.User{ID: f.id("u10"), Handle: f.id("h10"), CreatedAt: at(0)}); err != nil {
			t.Fatal(err)
		}
		cases := []struct {
			name string
			get  func() (persistence.User, error)
		}{
			{"GetUser/missing", func() (persistence.User, error) { return f.s.GetUser(c, f.id("nobody")) }},
			{"GetUser/prefix of existing id", func() (persistence.User, error) { return f.s.GetUser(c, f.id("u1")) }},
			{"GetUserByHandle/missing", func() (persistence.User, error) { return f.s.GetUserByHandle(c, f.id("no-handle")) }},
			{"GetUserByHandle/prefix of existing handle", func() (persistence.User, error) { return f.s.GetUserByHandle(c, f.id("h1")) }},
			{"GetUserByHandle/id is not a handle", func() (persistence.User, error) { return f.s.GetUserByHandle(c, f.id("u10")) }},
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				if u, err := tc.get(); !errors.Is(err, persistence.ErrNotFound) {
					t.Fatalf("got (%+v, %v), want ErrNotFound", u, err)
				}
			})
		}
	})

	t.Run("HandleTaken", func(t *testing.T) {
		f := newFixture(t, factory, Options{})
		c := ctx(t)
		first := persistence.User{ID: f.id("first"), Handle: f.id("shared"), CreatedAt: at(0)}
		second := persistence.User{ID: f.id("second"), Handle: f.id("shared"), CreatedAt: at(1)}
		if err := f.s.CreateUser(c, first); err != nil {
			t.Fatal(err)
		}
		if err := f.s.CreateUser(c, second); !errors.Is(err, persistence.ErrHandleTaken) {
			t.Fatalf("second CreateUser with a taken handle: got %v, want ErrHandleTaken", err)
		}
		// "Stores nothing": the loser must not exist under its own id either.
		if u, err := f.s.GetUser(c, second.ID); !errors.Is(err, persistence.ErrNotFound) {
			t.Fatalf("GetUser(loser) = (%+v, %v), want ErrNotFound", u, err)
		}
		got, err := f.s.GetUserByHandle(c, first.Handle)
		if err != nil {
			t.Fatal(err)
		}
		checkUser(t, "GetUserByHandle after lost claim", got, first)
	})

	t.Run("HandlesDifferingInCaseOrLookAlikesAreOne", func(t *testing.T) {
		f := newFixture(t, factory, Options{})
		c := ctx(t)
		casey := persistence.User{ID: f.id("casey"), Handle: f.id("Casey-10"), CreatedAt: at(0)}
		if err := f.s.CreateUser(c, casey); err != nil {
			t.Fatal(err)
		}
		for _, h := range []string{f.id("casey-10"), f.id("CASEY-10"), f.id("casey-lO"), f.id("casey-Io")} {
			err := f.s.CreateUser(c, persistence.User{ID: f.id("copy-" + h), Handle: h, CreatedAt: at(1)})
			if !errors.Is(err, persistence.ErrHandleTaken) {
				t.Errorf("CreateUser(%q) beside %q: got %v, want ErrHandleTaken", h, casey.Handle, err)
			}
			got, err := f.s.GetUserByHandle(c, h)
			if err != nil {
				t.Fatalf("GetUserByHandle(%q): %v", h, err)
			}
			// The user keeps the spelling it registered with.
			checkUser(t, "GetUserByHandle("+h+")", got, casey)
		}
	})

	t.Run("ConcurrentSameHandle", func(t *testing.T) {
		f := newFixture(t, factory, Options{})
		c := ctx(t)
		const racers = 16
		handle := f.id("contested")
		errs := make([]error, racers)
		start := make(chan struct{})
		var wg sync.WaitGroup
		for i := range racers {
			wg.Go(func() {
				<-start
				errs[i] = f.s.CreateUser(c, persistence.User{ID: f.id(fmt.Sprintf("racer%d", i)), Handle: handle, CreatedAt: at(int64(i))})
			})
		}
		close(start)
		wg.Wait()

		winner := -1
		for i, err := range errs {
			switch {
			case err == nil:
				if winner >= 0 {
					t.Fatalf("racers %d and %d both claimed handle %q", winner, i, handle)
				}
				winner = i
			case !errors.Is(err, persistence.ErrHandleTaken):
				t.Errorf("racer %d: got %v, want nil or ErrHandleTaken", i, err)
			}
		}
		if winner < 0 {
			t.Fatal("no racer claimed the handle")
		}
		got, err := f.s.GetUserByHandle(c, handle)
		if err != nil {
			t.Fatal(err)
		}
		if want := f.id(fmt.Sprintf("racer%d", winner)); got.ID != want {
			t.Fatalf("handle belongs to %q, but the winner was %q", got.ID, want)
		}
		for i := range racers {
			if i == winner {
				continue
			}
			if _, err := f.s.GetUser(c, f.id(fmt.Sprintf("racer%d", i))); !errors.Is(err, persistence.ErrNotFound) {
				t.Errorf("losing racer %d was stored: GetUser err = %v", i, err)
			}
		}
	})
}

func testDevices(t *testing.T, factory Factory) {
	t.Run("PutGetList", func(t *testing.T) {
		f := newFixture(t, factory, Options{})
		c := ctx(t)
		uid := f.id("u")
		// Put out of order, and include ids at and above 2^31 so a store that
		// keeps DeviceID in a signed 32-bit column fails the ordering check.
		ids := []uint32{3, 0xFFFFFFFF, 1, 0x80000001, 2}
		for i, id := range ids {
			d := persistence.Device{UserID: uid, DeviceID: id, SecretHash: hashFor(uid, id), CreatedAt: at(int64(i))}
			if err := f.s.PutDevice(c, d); err != nil {
				t.Fatalf("PutDevice(%d): %v", id, err)
			}
		}
		for i, id := range ids {
			got, err := f.s.GetDevice(c, uid, id)
			if err != nil {
				t.Fatalf("GetDevice(%d): %v", id, err)
			}
			checkDevice(t, got, persistence.Device{UserID: uid, DeviceID: id, SecretHash: hashFor(uid, id), CreatedAt: at(int64(i))})
		}
		list, err := f.s.ListDevices(c, uid)
		if err != nil {
			t.Fatal(err)
		}
		wantOrder := []uint32{1, 2, 3, 0x80000001, 0xFFFFFFFF}
		if got := deviceIDs(list); fmt.Sprint(got) != fmt.Sprint(wantOrder) {
			t.Fatalf("ListDevices order = %v, want %v", got, wantOrder)
		}
		for _, d := range list {
			if d.UserID != uid || !bytes.Equal(d.SecretHash, hashFor(uid, d.DeviceID)) {
				t.Errorf("ListDevices returned %+v", d)
			}
		}
	})

	t.Run("Replace", func(t *testing.T) {
		f := newFixture(t, factory, Options{})
		c := ctx(t)
		uid := f.id("u")
		old := persistence.Device{UserID: uid, DeviceID: 1, SecretHash: []byte("old-hash"), CreatedAt: at(0)}
		repl := persistence.Device{UserID: uid, DeviceID: 1, SecretHash: []byte("new-hash"), CreatedAt: at(5)}
		for _, d := range []persistence.Device{old, repl} {
			if err := f.s.PutDevice(c, d); err != nil {
				t.Fatal(err)
			}
		}
		got, err := f.s.GetDevice(c, uid, 1)
		if err != nil {
			t.Fatal(err)
		}
		checkDevice(t, got, repl)
		list, err := f.s.ListDevices(c, uid)
		if err != nil {
			t.Fatal(err)
		}
		if len(list) != 1 {
			t.Fatalf("ListDevices after replace has %d devices, want 1: %+v", len(list), list)
		}
		checkDevice(t, list[0], repl)
	})

	t.Run("NotFound", func(t *testing.T) {
		f := newFixture(t, factory, Options{})
		c := ctx(t)
		if err := f.s.PutDevice(c, persistence.Device{UserID: f.id("u10"), DeviceID: 7, SecretHash: []byte("h"), CreatedAt: at(0)}); err != nil {
			t.Fatal(err)
		}
		cases := []struct {
			name   string
			userID string
			device uint32
		}{
			{"unknown user", f.id("nobody"), 7},
			{"unknown device", f.id("u10"), 8},
			{"prefix of existing user", f.id("u1"), 7},
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				if d, err := f.s.GetDevice(c, tc.userID, tc.device); !errors.Is(err, persistence.ErrNotFound) {
					t.Fatalf("GetDevice = (%+v, %v), want ErrNotFound", d, err)
				}
			})
		}
		list, err := f.s.ListDevices(c, f.id("nobody"))
		if err != nil || len(list) != 0 {
			t.Fatalf("ListDevices(unknown user) = (%+v, %v), want empty and nil", list, err)
		}
	})

	t.Run("IsolationBetweenPrefixUsers", func(t *testing.T) {
		f := newFixture(t, factory, Options{})
		c := ctx(t)
		devices := map[string][]uint32{f.id("u1"): {1, 2}, f.id("u10"): {1, 3}, f.id("u"): {9}}
		for uid, ids := range devices {
			for _, id := range ids {
				if err := f.s.PutDevice(c, persistence.Device{UserID: uid, DeviceID: id, SecretHash: hashFor(uid, id), CreatedAt: at(0)}); err != nil {
					t.Fatal(err)
				}
			}
		}
		for uid, want := range devices {
			list, err := f.s.ListDevices(c, uid)
			if err != nil {
				t.Fatal(err)
			}
			if got := deviceIDs(list); fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("ListDevices(%q) = %v, want %v", uid, got, want)
			}
			for _, d := range list {
				if d.UserID != uid || !bytes.Equal(d.SecretHash, hashFor(uid, d.DeviceID)) {
					t.Errorf("ListDevices(%q) returned another user's device %+v", uid, d)
				}
			}
		}
	})
}

func hashFor(userID string, deviceID uint32) []byte {
	return fmt.Appendf(nil, "hash-of-%s/%d", userID, deviceID)
}

func deviceIDs(ds []persistence.Device) []uint32 {
	ids := make([]uint32, len(ds))
	for i, d := range ds {
		ids[i] = d.DeviceID
	}
	return ids
}

func checkUser(t *testing.T, what string, got, want persistence.User) {
	t.Helper()
	if got.ID != want.ID || got.Handle != want.Handle || !got.CreatedAt.Equal(want.CreatedAt) {
		t.Errorf("%s = %+v, want %+v", what, got, want)
	}
}

func checkDevice(t *testing.T, got, want persistence.Device) {
	t.Helper()
	if got.UserID != want.UserID || got.DeviceID != want.DeviceID ||
		!bytes.Equal(got.SecretHash, want.SecretHash) || !got.CreatedAt.Equal(want.CreatedAt) {
		t.Errorf("device = %+v, want %+v", got, want)
	}
}
