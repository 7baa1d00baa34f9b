package e2e_test

import (
	"bytes"
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/courier-im/courier/client"
	"github.com/courier-im/courier/media"
	"github.com/courier-im/courier/media/s3test"
)

// The end-to-end media tests (issue #17) run the real binary with its
// embedded store and move a 2 GiB file that exists nowhere: genFile
// produces it from a seed at any offset, and the receiving side keeps
// only its SHA-256.

// twoGiB is the size of the large-file tests' plaintext.
const twoGiB = 2 << 30

// maxMediaFor is the --max-media a node needs to take a plaintext of
// plain bytes: the limit is on the upload, i.e. the ciphertext, which is
// 16 bytes per 64 KiB chunk larger than the plaintext.
func maxMediaFor(plain int64) string {
	return strconv.FormatInt(client.MediaCipherSize(plain), 10)
}

// secretCanary returns a canary string unique to this run.
func secretCanary() []byte {
	b := make([]byte, 12)
	_, _ = crand.Read(b)
	return []byte("COURIER-E2E-PLAINTEXT-CANARY-" + hex.EncodeToString(b))
}

// canaryOffsets places the canary at the start, across a 64 KiB chunk
// boundary, at an odd offset in the middle and at the very end.
func canaryOffsets(size int64, canary []byte) []int64 {
	cl := int64(len(canary))
	return []int64{0, size/2/client.MediaChunkSize*client.MediaChunkSize - cl/2, size/3 + 12345, size - cl}
}

// TestTwoGiBFileReachesAnOfflineRecipientIntact: a 2 GiB file, uploaded
// to a single node with the embedded store and sent to a recipient who
// has never connected, downloads with the plaintext's SHA-256; the node's
// blobs, uploads and Pebble store never hold the plaintext, key or name.
func TestTwoGiBFileReachesAnOfflineRecipientIntact(t *testing.T) {
	// The default --max-media must take a 2 GiB file with its overhead.
	n := startSoloNode(t)
	offlineRecipient(t, n, twoGiB, nil)
}

// TestMediaOverS3ReachesAnOfflineRecipientIntact is the 2 GiB test's
// flow, with 64 MiB, on a node that keeps media in an S3 bucket (the
// MinIO `make test` starts); the bucket holds no plaintext either.
func TestMediaOverS3ReachesAnOfflineRecipientIntact(t *testing.T) {
	cfg := s3test.Config(t) // skips (fails in CI) without COURIER_TEST_S3_ENDPOINT
	n := startSoloNode(t,
		"--media-s3-endpoint", cfg.Endpoint,
		"--media-s3-bucket", cfg.Bucket,
		"--media-s3-region", cfg.Region,
		"--media-s3-access-key", cfg.AccessKey,
		"--media-s3-secret-key", cfg.SecretKey,
		"--media-s3-path-style=true",
	)
	offlineRecipient(t, n, 64<<20, &cfg)
}

// offlineRecipient: Alice uploads a generated file of size bytes and sends
// it to Bob, who registered but never connected; Bob connects, receives
// the media message and downloads the file, whose SHA-256 must be the
// plaintext's. Then neither the node's data directory (blobs, uploads,
// Pebble) nor the S3 bucket, when s3 is set, holds the canary planted in
// the plaintext, the file's key or its file name.
func offlineRecipient(t *testing.T, n *soloNode, size int64, s3cfg *media.S3Config) {
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	keys := t.TempDir()
	alicePath, bobPath := filepath.Join(keys, "alice.keys"), filepath.Join(keys, "bob.keys")
	stamp := time.Now().UnixNano()
	aliceCreds, err := client.Register(ctx, n.url, fmt.Sprintf("alice-%d", stamp), client.WithE2EE(alicePath))
	if err != nil {
		t.Fatal(err)
	}
	bobCreds, err := client.Register(ctx, n.url, fmt.Sprintf("bob-%d", stamp), client.WithE2EE(bobPath))
	if err != nil {
		t.Fatal(err)
	}
	alice, err := client.Dial(ctx, aliceCreds, client.WithE2EE(alicePath))
	if err != nil {
		t.Fatal(err)
	}
	defer alice.Close()

	canary := secretCanary()
	src := newGenFile(t.Name(), size, canary, canaryOffsets(size, canary)...)
	fileName := "holiday-" + hex.EncodeToString(canary[len(canary)-8:]) + ".mkv"
	upTmp := t.TempDir()
	var lastDone, calls int64
	start := time.Now()
	ref, err := alice.UploadMedia(ctx, src, size,
		client.WithMediaFileName(fileName), client.WithMediaContentType("video/x-matroska"),
		client.WithMediaTempDir(upTmp),
		client.WithMediaProgress(func(done, total int64) {
			if done < lastDone || total != client.MediaCipherSize(size) {
				t.Errorf("progress went %d → %d of %d", lastDone, done, total)
			}
			lastDone = done
			calls++
		}))
	if err != nil {
		t.Fatalf("upload: %v", err)
	}
	upTook := time.Since(start)
	want := src.sum(t)
	t.Logf("upload (one pass: encrypt, hash, send): %s; %d progress calls", rate(ref.CipherSize, upTook), calls)
	if lastDone != ref.CipherSize || ref.CipherSize != client.MediaCipherSize(size) || ref.Size != size {
		t.Fatalf("upload ended at progress %d; ref sizes %d/%d, want %d/%d", lastDone, ref.Size, ref.CipherSize, size, client.MediaCipherSize(size))
	}
	emptyDir(t, upTmp, "UploadMedia")

	res, err := alice.SendMedia(ctx, bobCreds.UserID, ref)
	if err != nil {
		t.Fatalf("send media: %v", err)
	}

	// Bob comes online for the first time.
	bob, err := client.Dial(ctx, bobCreds, client.WithE2EE(bobPath))
	if err != nil {
		t.Fatal(err)
	}
	defer bob.Close()
	e := waitEntry(t, bob, 30*time.Second, func(e client.Entry) bool { return e.IsMessage() && e.ClientMsgID == res.ClientMsgID })
	if e.DecryptErr != nil || e.FromUserID != aliceCreds.UserID {
		t.Fatalf("bob got a message from %s he cannot read: %v", e.FromUserID, e.DecryptErr)
	}
	got, ok := client.MediaOf(e)
	if !ok {
		t.Fatalf("bob's message is not media: content type %q, %d bytes", e.ContentType, len(e.Plaintext))
	}
	if got.Digest != ref.Digest || got.Size != size || got.FileName != fileName || got.ContentType != "video/x-matroska" || !bytes.Equal(got.Key, ref.Key) {
		t.Fatalf("bob's media reference differs: %+v", got)
	}

	downTmp := t.TempDir()
	hw := newHashWriter()
	start = time.Now()
	if err := bob.DownloadMedia(ctx, got, hw, client.WithMediaTempDir(downTmp)); err != nil {
		t.Fatalf("download: %v", err)
	}
	t.Logf("download (fetch, verify, decrypt): %s", rate(ref.CipherSize, time.Since(start)))
	if gotSum := hw.h.Sum(nil); hw.n != size || !bytes.Equal(gotSum, want) {
		t.Fatalf("bob's file: %d bytes, SHA-256 %x; alice's: %d bytes, %x", hw.n, gotSum, size, want)
	}
	emptyDir(t, downTmp, "DownloadMedia")

	// Stop the node gracefully so that Pebble flushes what it holds in
	// memory, then look through everything it wrote.
	n.stop()
	start = time.Now()
	sc := newNeedleScanner(canary, ref.Key, []byte(fileName))
	files, err := sc.scanDir(n.dataDir)
	if err != nil {
		t.Fatal(err)
	}
	where := fmt.Sprintf("%d files under the data directory", files)
	if s3cfg != nil {
		objects, err := sc.scanBucket(ctx, t, *s3cfg)
		if err != nil {
			t.Fatal(err)
		}
		if objects == 0 {
			t.Fatal("the S3 bucket is empty: the blob is not there")
		}
		where += fmt.Sprintf(" and %d objects of bucket %s", objects, s3cfg.Bucket)
	} else if fi, err := os.Stat(filepath.Join(n.dataDir, "media", "blobs", ref.Digest)); err != nil || fi.Size() != ref.CipherSize {
		t.Fatalf("the blob is not where the scan looks (data/media/blobs/<digest>): %v", err)
	}
	if sc.scanned < ref.CipherSize {
		t.Fatalf("scanned %d bytes, fewer than the blob's %d", sc.scanned, ref.CipherSize)
	}
	for _, h := range sc.hits {
		t.Error(h)
	}
	t.Logf("no canary, key or file name in %s (%s scanned in %v)", where, mib(sc.scanned), time.Since(start).Round(time.Millisecond))
}

// TestUploadResumesAfterServerSIGKILL kills the node (kill -9) at three
// random points of a 2 GiB upload and starts it again on the same data
// directory and port each time. The SDK must carry on from the offset the
// server reports: the wire shows one creation, no PATCH from byte 0 after
// the first, every resume at or past the start of the piece that was cut
// off, and less than 1.3× the ciphertext sent in all; the file downloads
// with the plaintext's digest.
func TestUploadResumesAfterServerSIGKILL(t *testing.T) {
	const size = twoGiB
	n := startSoloNode(t, "--max-media", maxMediaFor(size))
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()

	seed := time.Now().UnixNano()
	rng := rand.New(rand.NewPCG(uint64(seed), 17))
	var points []float64
	for {
		points = []float64{0.1 + 0.8*rng.Float64(), 0.1 + 0.8*rng.Float64(), 0.1 + 0.8*rng.Float64()}
		slices.Sort(points)
		if points[1]-points[0] >= 0.05 && points[2]-points[1] >= 0.05 {
			break
		}
	}
	t.Logf("kill points (seed %d): %.3f %.3f %.3f of the ciphertext", seed, points[0], points[1], points[2])

	wire := newWireLog()
	keys := t.TempDir()
	alicePath := filepath.Join(keys, "alice.keys")
	creds, err := client.Register(ctx, n.url, fmt.Sprintf("alice-%d", seed), client.WithE2EE(alicePath))
	if err != nil {
		t.Fatal(err)
	}
	alice, err := client.Dial(ctx, creds, client.WithE2EE(alicePath),
		client.WithHTTPClient(&http.Client{Transport: wire, Timeout: 30 * time.Second}),
		client.WithBackoff(20*time.Millisecond, 500*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer alice.Close()

	total := client.MediaCipherSize(size)
	// The progress callback (calls never overlap) asks for a kill as it
	// passes each point; the killer kills and restarts the node off the
	// transfer's goroutine.
	killAt := make(chan int64, len(points))
	next := 0
	type kill struct {
		progress int64
		killed   time.Time
		down     time.Duration
	}
	var kills []kill
	var killErr error
	uploadDone := make(chan struct{})
	var killerDone sync.WaitGroup
	killerDone.Add(1)
	go func() {
		defer killerDone.Done()
		for range points {
			var done int64
			select {
			case done = <-killAt:
			case <-uploadDone:
				return
			case <-ctx.Done():
				return
			}
			at := time.Now()
			n.kill()
			if err := n.start(60 * time.Second); err != nil {
				killErr = err
				cancel()
				return
			}
			kills = append(kills, kill{progress: done, killed: at, down: time.Since(at)})
		}
	}()

	canary := secretCanary()
	src := newGenFile(t.Name(), size, canary, canaryOffsets(size, canary)...)
	upTmp := t.TempDir()
	start := time.Now()
	ref, err := alice.UploadMedia(ctx, src, size,
		client.WithMediaTempDir(upTmp),
		client.WithMediaProgress(func(done, total int64) {
			if next < len(points) && float64(done) >= points[next]*float64(total) {
				next++
				killAt <- done
			}
		}))
	upTook := time.Since(start)
	close(uploadDone)
	killerDone.Wait()
	if killErr != nil {
		t.Fatalf("restart after a kill: %v", killErr)
	}
	if err != nil {
		t.Fatalf("upload across %d kills: %v", len(kills), err)
	}
	want := src.sum(t)
	for i, k := range kills {
		t.Logf("kill %d at %s (%.1f%%), node back in %v", i+1, mib(k.progress), 100*float64(k.progress)/float64(total), k.down.Round(time.Millisecond))
	}
	if len(kills) != len(points) {
		t.Fatalf("the node was killed %d times, want %d: the upload outran the kills", len(kills), len(points))
	}

	// What crossed the wire.
	var creates, heads int
	var patched int64
	var patches []*wireReq
	for _, r := range wire.requests() {
		switch r.method {
		case http.MethodPost:
			creates++
		case http.MethodHead:
			heads++
		case http.MethodPatch:
			patches = append(patches, r)
			patched += r.sent.Load()
		}
	}
	t.Logf("upload with 3 kills: %v; %d creation, %d HEAD, %d PATCH; %s sent for %s of ciphertext (%s again)",
		upTook.Round(time.Millisecond), creates, heads, len(patches), mib(patched), mib(total), mib(patched-total))
	if creates != 1 {
		t.Errorf("%d creations (POST): the upload started over instead of resuming", creates)
	}
	if patched >= total*13/10 {
		t.Errorf("%d bytes sent for a ciphertext of %d: ≥ 1.3×, resumes re-sent too much", patched, total)
	}
	if patched < total {
		t.Errorf("only %d of %d bytes sent, yet the upload finished", patched, total)
	}
	// Every PATCH after a failed one resumes at the server's offset: not
	// from byte 0, and not before the start of the piece that was cut off
	// (whatever the server had written of it is on disk).
	resumes := 0
	for i, p := range patches {
		if i > 0 && p.offset == 0 {
			t.Errorf("PATCH %d went from byte 0: the upload was re-sent from the start", i)
		}
		if i > 0 && patches[i-1].status != http.StatusNoContent && patches[i-1].status != http.StatusOK {
			resumes++
			if prev := patches[i-1]; p.offset < prev.offset || p.offset > prev.offset+prev.sent.Load() {
				t.Errorf("PATCH %d resumed at %d, outside the piece that was cut off: from %d, %d bytes sent",
					i, p.offset, prev.offset, prev.sent.Load())
			}
			t.Logf("resume %d: PATCH from %s (the cut-off piece started at %s, after %s of it went out: %v)",
				resumes, mib(p.offset), mib(patches[i-1].offset), mib(patches[i-1].sent.Load()), errOrStatus(patches[i-1]))
		}
	}
	if resumes < len(points) {
		t.Errorf("%d PATCHes failed and were resumed, want at least %d (one per kill)", resumes, len(points))
	}
	emptyDir(t, upTmp, "UploadMedia")

	// The file is whole: download it (through the last node) and compare.
	hw := newHashWriter()
	downTmp := t.TempDir()
	start = time.Now()
	if err := alice.DownloadMedia(ctx, ref, hw, client.WithMediaTempDir(downTmp)); err != nil {
		t.Fatalf("download: %v", err)
	}
	t.Logf("download: %s", rate(ref.CipherSize, time.Since(start)))
	if gotSum := hw.h.Sum(nil); hw.n != size || !bytes.Equal(gotSum, want) {
		t.Fatalf("downloaded %d bytes, SHA-256 %x; uploaded %d bytes, %x", hw.n, gotSum, size, want)
	}
	emptyDir(t, downTmp, "DownloadMedia")
}

func errOrStatus(r *wireReq) string {
	if r.err != nil {
		return r.err.Error()
	}
	return fmt.Sprintf("status %d", r.status)
}
