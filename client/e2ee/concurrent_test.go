package e2ee

import (
	"fmt"
	"sync"
	"testing"
)

// TestConcurrentUse hammers one Device from several goroutines (run with
// -race): encrypting to different peers, group sends, key uploads and
// reads, while the peers decrypt in parallel. Goroutines report with
// t.Error; only the test goroutine may stop the test.
func TestConcurrentUse(t *testing.T) {
	keys, dir := newDirectory(), t.TempDir()
	alice := newPublishedDevice(t, keys, dir, "alice", 1)
	var peers []*Device
	for i := range 4 {
		peers = append(peers, newPublishedDevice(t, keys, dir, fmt.Sprintf("peer%d", i), 1))
	}
	const n = 5
	cts := make([][][]byte, len(peers))
	var wg sync.WaitGroup
	for i, p := range peers {
		b := keys.bundle(t, p)
		wg.Go(func() {
			for j := range n {
				ct, err := alice.Encrypt(p.UserID(), 1, b, fmt.Appendf(nil, "%d/%d", i, j))
				if err != nil {
					t.Error(err)
					return
				}
				cts[i] = append(cts[i], ct)
			}
		})
	}
	wg.Go(func() {
		for range n {
			if _, _, err := alice.GroupEncrypt("g", 1, []byte("x")); err != nil {
				t.Error(err)
			}
			alice.HasSession("peer0", 1)
			alice.RemoteIdentity("peer1", 1)
			alice.IdentityKey()
		}
	})
	wg.Go(func() {
		for range n {
			if _, err := alice.KeyUpload(2); err != nil {
				t.Error(err)
			}
		}
	})
	wg.Wait()
	for i, p := range peers {
		wg.Go(func() {
			for j, ct := range cts[i] {
				got, err := p.Decrypt("alice", 1, ct)
				if want := fmt.Sprintf("%d/%d", i, j); err != nil || string(got) != want {
					t.Errorf("%s: got %q, %v; want %q", name(p), got, err, want)
				}
			}
			// Replies from all peers' goroutines at once.
			ct, err := p.Encrypt("alice", 1, nil, []byte("back"))
			if err != nil {
				t.Error(err)
				return
			}
			if got, err := alice.Decrypt(p.UserID(), 1, ct); err != nil || string(got) != "back" {
				t.Errorf("reply from %s: %q, %v", name(p), got, err)
			}
		})
	}
	wg.Wait()
}
