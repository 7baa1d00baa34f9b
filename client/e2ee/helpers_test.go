package e2ee

import (
	"crypto/rand"
	"fmt"
	"path/filepath"
	"sync"
	"testing"

	"github.com/courier-im/courier/protos/courierpb"
)

// directory is an in-memory stand-in for the server's key directory: it
// keeps each device's latest upload and hands out every one-time prekey at
// most once, like GET /v1/keys/{user}.
type directory struct {
	mu    sync.Mutex
	keys  map[address]*courierpb.KeyUpload
	pools map[address][]*courierpb.OneTimePrekey
}

func newDirectory() *directory {
	return &directory{keys: map[address]*courierpb.KeyUpload{}, pools: map[address][]*courierpb.OneTimePrekey{}}
}

// publish uploads d's keys with n fresh one-time prekeys.
func (dir *directory) publish(t testing.TB, d *Device, n int) {
	t.Helper()
	up, err := d.KeyUpload(n)
	if err != nil {
		t.Fatalf("KeyUpload(%d) for %s.%d: %v", n, d.UserID(), d.DeviceID(), err)
	}
	dir.mu.Lock()
	defer dir.mu.Unlock()
	a := address{d.UserID(), d.DeviceID()}
	dir.keys[a] = up
	dir.pools[a] = append(dir.pools[a], up.OneTimePrekeys...)
}

// replace forgets everything published for d's address (a re-install of
// that device) and publishes d's keys with n one-time prekeys.
func (dir *directory) replace(t testing.TB, d *Device, n int) {
	t.Helper()
	dir.mu.Lock()
	delete(dir.pools, address{d.UserID(), d.DeviceID()})
	dir.mu.Unlock()
	dir.publish(t, d, n)
}

// bundle returns a bundle for one device, consuming a one-time prekey when
// the pool has one.
func (dir *directory) bundle(t testing.TB, d *Device) *courierpb.DeviceBundle {
	t.Helper()
	dir.mu.Lock()
	defer dir.mu.Unlock()
	a := address{d.UserID(), d.DeviceID()}
	up, ok := dir.keys[a]
	if !ok {
		t.Fatalf("no keys published for %s.%d", a.user, a.device)
	}
	var otpk *courierpb.OneTimePrekey
	if pool := dir.pools[a]; len(pool) > 0 {
		otpk, dir.pools[a] = pool[0], pool[1:]
	}
	return bundleFrom(up, a.device, otpk)
}

func bundleFrom(up *courierpb.KeyUpload, deviceID uint32, otpk *courierpb.OneTimePrekey) *courierpb.DeviceBundle {
	b := &courierpb.DeviceBundle{
		DeviceId:              deviceID,
		RegistrationId:        up.RegistrationId,
		IdentityKey:           up.IdentityKey,
		SignedPrekeyId:        up.SignedPrekeyId,
		SignedPrekey:          up.SignedPrekey,
		SignedPrekeySignature: up.SignedPrekeySignature,
	}
	if otpk != nil {
		b.OneTimePrekeyId = otpk.Id
		b.OneTimePrekey = otpk.PublicKey
	}
	return b
}

// openDevice opens (creating) a device file in dir and returns it with its
// path; the device is closed when the test ends.
func openDevice(t testing.TB, dir string, user string, dev uint32) (*Device, string) {
	t.Helper()
	path := filepath.Join(dir, fmt.Sprintf("%s-%d.json", user, dev))
	d, err := Open(path, user, dev)
	if err != nil {
		t.Fatalf("Open(%s): %v", path, err)
	}
	t.Cleanup(func() { _ = d.Close() })
	return d, path
}

// newPublishedDevice opens a device and publishes 5 one-time prekeys.
func newPublishedDevice(t testing.TB, keys *directory, dir, user string, dev uint32) *Device {
	t.Helper()
	d, _ := openDevice(t, dir, user, dev)
	keys.publish(t, d, 5)
	return d
}

// send encrypts plaintext from one device for another, fetching a bundle
// when there is no session yet.
func send(t testing.TB, keys *directory, from, to *Device, plaintext []byte) []byte {
	t.Helper()
	var b *courierpb.DeviceBundle
	if !from.HasSession(to.UserID(), to.DeviceID()) {
		b = keys.bundle(t, to)
	}
	ct, err := from.Encrypt(to.UserID(), to.DeviceID(), b, plaintext)
	if err != nil {
		t.Fatalf("Encrypt %s.%d -> %s.%d: %v", from.UserID(), from.DeviceID(), to.UserID(), to.DeviceID(), err)
	}
	return ct
}

// mustDecrypt decrypts and compares with want.
func mustDecrypt(t testing.TB, to, from *Device, ct, want []byte) {
	t.Helper()
	got, err := to.Decrypt(from.UserID(), from.DeviceID(), ct)
	if err != nil {
		t.Fatalf("Decrypt at %s.%d from %s.%d: %v", to.UserID(), to.DeviceID(), from.UserID(), from.DeviceID(), err)
	}
	if string(got) != string(want) {
		t.Fatalf("Decrypt at %s.%d from %s.%d = %q, want %q", to.UserID(), to.DeviceID(), from.UserID(), from.DeviceID(), got, want)
	}
}

func randomBytes(t testing.TB, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func name(d *Device) string { return fmt.Sprintf("%s.%d", d.UserID(), d.DeviceID()) }
