package media_test

import (
	"bytes"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/courier-im/courier/media"
)

// newHashHarness serves media from a LocalStore in dir that saves its hash
// states every MiB.
func newHashHarness(t *testing.T, dir string) (*harness, *media.LocalStore) {
	t.Helper()
	local, err := media.NewLocalStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	media.SetCheckpointEvery(local, 1<<20)
	h := newHarness(t, media.Config{Blobs: local})
	t.Cleanup(func() { media.WaitHashSaves(local) })
	return h, local
}

func uploadID(path string) string { return strings.TrimPrefix(path, media.Prefix) }

// patchAll sends data[from:] in PATCHes of chunk bytes; the last answer
// must be want.
func patchAll(t *testing.T, h *harness, path string, data []byte, from, chunk, want int) *http.Response {
	t.Helper()
	var resp *http.Response
	var body []byte
	for off := from; off < len(data); off += chunk {
		end := min(off+chunk, len(data))
		resp, body = h.patch("alice", path, int64(off), data[off:end])
		status := http.StatusNoContent
		if end == len(data) {
			status = want
		}
		wantStatus(t, "PATCH at "+strconv.Itoa(off), resp, body, status)
	}
	return resp
}

func wantBlob(t *testing.T, dir string, data []byte) {
	t.Helper()
	got, err := os.ReadFile(filepath.Join(dir, "blobs", digestOf(data)))
	if err != nil {
		t.Fatalf("published blob: %v", err)
	}
	if !bytes.Equal(got, data) {
		t.Fatal("the published blob holds other bytes")
	}
	wantEmptyDir(t, filepath.Join(dir, "uploads"))
}

func TestFinishPublishesWithoutReadingTheUploadBack(t *testing.T) {
	dir := t.TempDir()
	h, local := newHashHarness(t, dir)
	data := randomBytes(t, 3<<20+123)
	path := h.mustCreate("alice", int64(len(data)), digestOf(data))
	resp := patchAll(t, h, path, data, 0, 256<<10, http.StatusNoContent)
	if got := resp.Header.Get(media.HeaderBlobDigest); got != digestOf(data) {
		t.Fatalf("digest %q, want %s", got, digestOf(data))
	}
	if n := media.UploadBytesReadBack(local); n != 0 {
		t.Fatalf("%d bytes of the upload were read back", n)
	}
	wantBlob(t, dir, data)
}

// TestResumeAfterACrashReadsBackOnlyWhatTheStateLacks writes part of an
// upload, "crashes" (a new store and service on the same directory: the
// state in memory is lost), does something to the saved state, resumes
// and finishes: the right blob is published every time, and what is read
// back is what the saved state did not cover.
func TestResumeAfterACrashReadsBackOnlyWhatTheStateLacks(t *testing.T) {
	const part = 4<<20 + 1000
	cases := []struct {
		name string
		// state returns the state file's new content (nil: remove it) and
		// how many bytes the resume must read back (-1: fewer than part).
		state func(id string, data, early, saved []byte) ([]byte, int64)
	}{
		{"kept", func(_ string, _, _, saved []byte) ([]byte, int64) { return saved, -1 }},
		{"dropped", func(string, []byte, []byte, []byte) ([]byte, int64) { return nil, part }},
		{"lagging", func(_ string, _, early, _ []byte) ([]byte, int64) { return early, part - (1<<20 + 500) }},
		{"garbage", func(string, []byte, []byte, []byte) ([]byte, int64) { return []byte("not a state"), part }},
		{"truncated", func(_ string, _, _, saved []byte) ([]byte, int64) { return saved[:len(saved)-1], part }},
		{"another upload's", func(_ string, data, _, _ []byte) ([]byte, int64) {
			return media.EncodeHashState(strings.Repeat("0", 32), data[:2<<20]), part
		}},
		{"beyond the file", func(id string, data, _, _ []byte) ([]byte, int64) {
			return media.EncodeHashState(id, append(data[:part:part], 1, 2, 3)), part
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			h1, local1 := newHashHarness(t, dir)
			data := randomBytes(t, 6<<20+77)
			path := h1.mustCreate("alice", int64(len(data)), digestOf(data))
			id := uploadID(path)
			resp, body := h1.patch("alice", path, 0, data[:1<<20+500])
			wantStatus(t, "first PATCH", resp, body, http.StatusNoContent)
			media.WaitHashSaves(local1)
			early := media.EncodeHashState(id, data[:1<<20+500])
			resp, body = h1.patch("alice", path, 1<<20+500, data[1<<20+500:part])
			wantStatus(t, "second PATCH", resp, body, http.StatusNoContent)
			media.WaitHashSaves(local1)
			saved, err := os.ReadFile(media.HashStateFile(local1, id))
			if err != nil {
				t.Fatalf("no hash state saved after %d bytes: %v", part, err)
			}
			// A checkpoint is due every MiB written but skipped while the
			// previous one is still being saved (its file synced).
			if off, err := media.HashStateOffset(local1, id); err != nil || off < 1<<20 || off > part {
				t.Fatalf("saved state covers %d bytes (%v); want from 1 MiB to %d", off, err, part)
			}

			// The crash.
			h2, local2 := newHashHarness(t, dir)
			content, want := c.state(id, data, early, saved)
			if content == nil {
				if err := os.Remove(media.HashStateFile(local2, id)); err != nil {
					t.Fatal(err)
				}
			} else if err := os.WriteFile(media.HashStateFile(local2, id), content, 0o600); err != nil {
				t.Fatal(err)
			}
			if got := h2.head("alice", path).Header.Get("Upload-Offset"); got != strconv.Itoa(part) {
				t.Fatalf("HEAD after the crash: offset %s, want %d", got, part)
			}
			resp = patchAll(t, h2, path, data, part, 1<<20, http.StatusNoContent)
			if got := resp.Header.Get(media.HeaderBlobDigest); got != digestOf(data) {
				t.Fatalf("digest %q, want %s", got, digestOf(data))
			}
			n := media.UploadBytesReadBack(local2)
			switch {
			case want >= 0 && n != want:
				t.Errorf("read back %d bytes, want %d", n, want)
			case want < 0 && n >= part:
				t.Errorf("read back %d bytes, want fewer than %d", n, part)
			}
			wantBlob(t, dir, data)
		})
	}
}

// TestAWrongHashStateCannotPublishAWrongBlob: a saved state that is sound
// in form but does not hash the file's bytes never publishes bytes under a
// digest they do not have.
func TestAWrongHashStateCannotPublishAWrongBlob(t *testing.T) {
	const part = 3 << 20
	setup := func(t *testing.T) (dir string, data []byte, path string, h2 *harness, local2 *media.LocalStore) {
		dir = t.TempDir()
		h1, local1 := newHashHarness(t, dir)
		data = randomBytes(t, 5<<20)
		path = h1.mustCreate("alice", int64(len(data)), digestOf(data))
		resp, body := h1.patch("alice", path, 0, data[:part])
		wantStatus(t, "PATCH", resp, body, http.StatusNoContent)
		media.WaitHashSaves(local1)
		h2, local2 = newHashHarness(t, dir)
		return dir, data, path, h2, local2
	}

	t.Run("a state of other bytes: the upload is read back and its bytes decide", func(t *testing.T) {
		dir, data, path, h2, local2 := setup(t)
		other := bytes.Clone(data[:part])
		other[12345] ^= 1
		if err := os.WriteFile(media.HashStateFile(local2, uploadID(path)), media.EncodeHashState(uploadID(path), other), 0o600); err != nil {
			t.Fatal(err)
		}
		resp := patchAll(t, h2, path, data, part, 1<<20, http.StatusNoContent)
		if got := resp.Header.Get(media.HeaderBlobDigest); got != digestOf(data) {
			t.Fatalf("digest %q, want %s", got, digestOf(data))
		}
		if n := media.UploadBytesReadBack(local2); n < int64(len(data)) {
			t.Errorf("read back %d bytes; the disagreeing state should have had the whole upload read", n)
		}
		wantBlob(t, dir, data)
	})

	t.Run("the file altered where the state does not reach: 400, nothing published", func(t *testing.T) {
		dir, data, path, h2, local2 := setup(t)
		id := uploadID(path)
		if err := os.WriteFile(media.HashStateFile(local2, id), media.EncodeHashState(id, data[:1<<20]), 0o600); err != nil {
			t.Fatal(err)
		}
		f, err := os.OpenFile(filepath.Join(dir, "uploads", id), os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.WriteAt([]byte{data[2<<20] ^ 0xff}, 2<<20); err != nil {
			t.Fatal(err)
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
		resp := patchAll(t, h2, path, data, part, 1<<20, http.StatusBadRequest)
		if resp.Header.Get(media.HeaderBlobDigest) != "" {
			t.Error("a mismatch named a blob")
		}
		wantEmptyDir(t, filepath.Join(dir, "blobs"))
		wantEmptyDir(t, filepath.Join(dir, "uploads"))
	})
}

func TestTerminatingAnUploadRemovesItsHashState(t *testing.T) {
	dir := t.TempDir()
	h, local := newHashHarness(t, dir)
	data := randomBytes(t, 3<<20)
	path := h.mustCreate("alice", int64(len(data)+1), digestOf(data))
	resp, body := h.patch("alice", path, 0, data)
	wantStatus(t, "PATCH", resp, body, http.StatusNoContent)
	media.WaitHashSaves(local)
	if _, err := os.Stat(media.HashStateFile(local, uploadID(path))); err != nil {
		t.Fatalf("no hash state after 3 MiB: %v", err)
	}
	resp, body = h.do("alice", http.MethodDelete, path, map[string]string{"Tus-Resumable": "1.0.0"}, nil)
	wantStatus(t, "DELETE", resp, body, http.StatusNoContent)
	wantEmptyDir(t, filepath.Join(dir, "uploads"))
}

// BenchmarkLastPatch times the PATCH that completes an upload of
// COURIER_BENCH_MEDIA_MIB MiB (default 256) on a LocalStore in TMPDIR:
// "incremental" uses the hash computed while the upload was written,
// "readback" reads the upload back to hash it (the finish of before).
// Both sync and rename the file. go test -run x -bench LastPatch
// -benchtime 3x ./media/
func BenchmarkLastPatch(b *testing.B) {
	size := 256 << 20
	if v, err := strconv.Atoi(os.Getenv("COURIER_BENCH_MEDIA_MIB")); err == nil && v > 1 {
		size = v << 20
	}
	data := make([]byte, size)
	for i := range data {
		data[i] = byte(i*7 + i>>13)
	}
	for _, mode := range []string{"incremental", "readback"} {
		b.Run(mode, func(b *testing.B) {
			local, err := media.NewLocalStore(b.TempDir())
			if err != nil {
				b.Fatal(err)
			}
			if mode == "readback" {
				media.ReadUploadsBack(local)
			}
			h := newHarness(b, media.Config{Blobs: local})
			var total time.Duration
			for i := 0; b.Loop(); i++ {
				b.StopTimer()
				data[0] = byte(i) // a new digest: a new blob each time
				last := size - 1<<20
				path := h.mustCreate("alice", int64(size), digestOf(data))
				for off := 0; off < last; off += 8 << 20 {
					end := min(off+8<<20, last)
					resp, body := h.patch("alice", path, int64(off), data[off:end])
					wantStatus(b, "PATCH", resp, body, http.StatusNoContent)
				}
				media.WaitHashSaves(local)
				b.StartTimer()
				start := time.Now()
				resp, body := h.patch("alice", path, int64(last), data[last:])
				total += time.Since(start)
				wantStatus(b, "last PATCH", resp, body, http.StatusNoContent)
			}
			b.ReportMetric(float64(total.Milliseconds())/float64(b.N), "ms/lastpatch")
		})
	}
}
