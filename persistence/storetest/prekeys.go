package storetest

import (
	"bytes"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/courier-im/courier/persistence"
)

func testKeys(t *testing.T, factory Factory) {
	t.Run("DeviceKeys", func(t *testing.T) {
		f := newFixture(t, factory, Options{})
		uid := f.id("u")
		if _, err := f.s.GetDeviceKeys(ctx(t), uid, 1); !errors.Is(err, persistence.ErrNotFound) {
			t.Fatalf("GetDeviceKeys before any upload: err = %v, want ErrNotFound", err)
		}
		k1 := persistence.DeviceKeys{RegistrationID: 7, IdentityKey: []byte("identity-1"), SignedPrekeyID: 1, SignedPrekey: []byte("spk-1"), SignedPrekeySignature: []byte("sig-1")}
		prev, err := f.s.PutDeviceKeys(ctx(t), uid, 1, k1)
		if err != nil || prev != nil {
			t.Fatalf("first PutDeviceKeys = (%q, %v), want no previous identity", prev, err)
		}
		k2 := k1
		k2.IdentityKey, k2.SignedPrekeyID, k2.SignedPrekey = []byte("identity-2"), 2, []byte("spk-2")
		prev, err = f.s.PutDeviceKeys(ctx(t), uid, 1, k2)
		if err != nil || !bytes.Equal(prev, k1.IdentityKey) {
			t.Fatalf("second PutDeviceKeys = (%q, %v), want previous %q", prev, err, k1.IdentityKey)
		}
		got, err := f.s.GetDeviceKeys(ctx(t), uid, 1)
		if err != nil || got.RegistrationID != 7 || got.SignedPrekeyID != 2 || !bytes.Equal(got.IdentityKey, k2.IdentityKey) ||
			!bytes.Equal(got.SignedPrekey, k2.SignedPrekey) || !bytes.Equal(got.SignedPrekeySignature, k2.SignedPrekeySignature) {
			t.Fatalf("GetDeviceKeys = (%+v, %v), want %+v", got, err, k2)
		}
		if _, err := f.s.GetDeviceKeys(ctx(t), uid, 2); !errors.Is(err, persistence.ErrNotFound) {
			t.Fatalf("another device's keys: err = %v, want ErrNotFound", err)
		}
		if err := f.s.AddOneTimePrekeys(ctx(t), uid, 1, prekeys(1, 3)); err != nil {
			t.Fatal(err)
		}
		if err := f.s.DeleteDeviceKeys(ctx(t), uid, 1); err != nil {
			t.Fatal(err)
		}
		if _, err := f.s.GetDeviceKeys(ctx(t), uid, 1); !errors.Is(err, persistence.ErrNotFound) {
			t.Fatalf("keys after DeleteDeviceKeys: err = %v, want ErrNotFound", err)
		}
		if n, err := f.s.CountOneTimePrekeys(ctx(t), uid, 1); err != nil || n != 0 {
			t.Fatalf("pool after DeleteDeviceKeys: %d (%v), want 0", n, err)
		}
	})

	t.Run("PoolIsPerDeviceAndEachKeyIsTakenOnce", func(t *testing.T) {
		f := newFixture(t, factory, Options{})
		uid := f.id("u")
		if err := f.s.AddOneTimePrekeys(ctx(t), uid, 1, prekeys(1, 5)); err != nil {
			t.Fatal(err)
		}
		if err := f.s.AddOneTimePrekeys(ctx(t), uid, 2, prekeys(100, 2)); err != nil {
			t.Fatal(err)
		}
		if n, err := f.s.CountOneTimePrekeys(ctx(t), uid, 1); err != nil || n != 5 {
			t.Fatalf("count = %d (%v), want 5", n, err)
		}
		seen := map[uint32]bool{}
		for i := range 5 {
			k, ok, err := f.s.TakeOneTimePrekey(ctx(t), uid, 1)
			if err != nil || !ok {
				t.Fatalf("take %d: ok=%v err=%v", i, ok, err)
			}
			if seen[k.ID] || k.ID < 1 || k.ID > 5 || !bytes.Equal(k.PublicKey, prekeyPub(k.ID)) {
				t.Fatalf("take %d returned %d %q", i, k.ID, k.PublicKey)
			}
			seen[k.ID] = true
		}
		if _, ok, err := f.s.TakeOneTimePrekey(ctx(t), uid, 1); ok || err != nil {
			t.Fatalf("take from an empty pool: ok=%v err=%v, want ok=false and no error", ok, err)
		}
		if n, err := f.s.CountOneTimePrekeys(ctx(t), uid, 2); err != nil || n != 2 {
			t.Fatalf("the other device's pool = %d (%v), want 2 untouched", n, err)
		}
	})

	t.Run("ConcurrentTakesNeverShareAKey", func(t *testing.T) {
		f := newFixture(t, factory, Options{})
		uid := f.id("u")
		const keys, takers = 60, 8
		if err := f.s.AddOneTimePrekeys(ctx(t), uid, 1, prekeys(1, keys)); err != nil {
			t.Fatal(err)
		}
		var mu sync.Mutex
		owner := map[uint32]int{}
		var wg sync.WaitGroup
		errs := make(chan error, takers)
		for w := range takers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					k, ok, err := f.s.TakeOneTimePrekey(ctx(t), uid, 1)
					if err != nil {
						errs <- err
						return
					}
					if !ok {
						return
					}
					mu.Lock()
					if prev, dup := owner[k.ID]; dup {
						errs <- fmt.Errorf("prekey %d handed to taker %d and taker %d", k.ID, prev, w)
					}
					owner[k.ID] = w
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		if len(owner) != keys {
			t.Fatalf("%d distinct prekeys taken, want all %d", len(owner), keys)
		}
	})

	t.Run("DeleteDevice", func(t *testing.T) {
		f := newFixture(t, factory, Options{})
		uid := f.id("u")
		for _, id := range []uint32{1, 2} {
			if err := f.s.PutDevice(ctx(t), persistence.Device{UserID: uid, DeviceID: id, SecretHash: []byte("h"), CreatedAt: at(0)}); err != nil {
				t.Fatal(err)
			}
		}
		if err := f.s.DeleteDevice(ctx(t), uid, 2); err != nil {
			t.Fatal(err)
		}
		if err := f.s.DeleteDevice(ctx(t), uid, 9); err != nil {
			t.Fatalf("deleting a missing device: %v", err)
		}
		devs, err := f.s.ListDevices(ctx(t), uid)
		if err != nil || len(devs) != 1 || devs[0].DeviceID != 1 {
			t.Fatalf("devices after delete = %+v (%v), want only device 1", devs, err)
		}
		if _, err := f.s.GetDevice(ctx(t), uid, 2); !errors.Is(err, persistence.ErrNotFound) {
			t.Fatalf("GetDevice of the deleted device: err = %v, want ErrNotFound", err)
		}
	})
}

func prekeyPub(id uint32) []byte { return []byte(fmt.Sprintf("pub-%05d", id)) }

func prekeys(first uint32, n int) []persistence.OneTimePrekey {
	out := make([]persistence.OneTimePrekey, n)
	for i := range out {
		id := first + uint32(i)
		out[i] = persistence.OneTimePrekey{ID: id, PublicKey: prekeyPub(id)}
	}
	return out
}
