package media

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"
	"sync"

	"github.com/tus/tusd/v2/pkg/handler"
)

// Incremental hashing (local store).
//
// The SHA-256 of an upload is computed while its PATCH bodies are written,
// so the request that brings the last byte publishes without reading the
// upload back. The hasher sees exactly the bytes written to the upload's
// file: hashedReader.WriteTo (which tusd's filestore reaches through
// io.Copy) hashes the bytes each write took, after the write.
//
// The running state lives in memory (uploadHash), per upload. It survives
// a crash as a checkpoint in uploads/<id>.sha256: every
// LocalStore.checkpointEvery bytes a goroutine syncs the upload's file and
// then saves the state of the bytes written before it (offset and
// crypto/sha256's marshalled state, bound to the upload id by a checksum),
// atomically (temporary file and rename). So a saved state only ever
// covers bytes already durable in the file, whatever the crash.
//
// When the state in memory does not start where a write starts (after a
// restart, or a write that failed part-way), it is rebuilt: the saved
// checkpoint when it is sound and not beyond the write's offset, else an
// empty state; then the range it lacks is hashed by reading the file.
// finish does the same for a state short of the upload's size; without
// any state that is today's full read.
//
// The state is never trusted to publish a wrong blob. A checkpoint that
// fails its checksum, names another upload, or covers more than the file
// holds is dropped. A digest that comes from a state and differs from the
// declared one is not believed either: finish reads the upload back and
// decides on the bytes (Service.digest). What a state vouches for is that
// the bytes were hashed as they were written to the file: a file altered on
// disk after it was written and hashed is not detected, as a blob altered
// after it was published is not.
//
// The S3 store keeps no such state: tusd's s3store buffers a PATCH into
// parts on disk and sends them, and a crash loses a tail that S3 never
// received, so the hashed bytes and the stored ones would need the part
// boundaries tracked. finish reads an S3 upload back (ranged GETs), as
// before.

// defaultCheckpointEvery is how many bytes an upload's hash state may run
// ahead of its saved checkpoint: what a crash makes a resume read back.
const defaultCheckpointEvery = 64 << 20

// stateMagic starts an uploads/<id>.sha256 file: magic, offset (8 bytes,
// big endian), state length (2 bytes), crypto/sha256's state, then the
// SHA-256 of the upload id and everything before.
const stateMagic = "CSHA2561"

const stateSuffix = ".sha256"

// uploadHash is the running SHA-256 of one upload in progress.
type uploadHash struct {
	// mu is held while h, off and valid are used: by a write (tusd's lock
	// serialises those per upload) and by finish, publish and terminate.
	mu    sync.Mutex
	h     hash.Hash
	off   int64 // bytes hashed: the file's first off bytes
	valid bool  // h is the hash of the file's first off bytes
	// saved is the offset of the latest checkpoint started; saving, when
	// not nil, is closed once that checkpoint is saved (or given up).
	saved  int64
	saving chan struct{}
}

// waitSave waits for the checkpoint being saved, if any. e.mu is held.
func (e *uploadHash) waitSave() {
	if e.saving != nil {
		<-e.saving
	}
}

func (e *uploadHash) saveRunning() bool {
	if e.saving == nil {
		return false
	}
	select {
	case <-e.saving:
		return false
	default:
		return true
	}
}

// hashes holds the uploads' running hashes.
type hashes struct {
	mu sync.Mutex
	m  map[string]*uploadHash
}

func (hs *hashes) get(id string) *uploadHash {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	e := hs.m[id]
	if e == nil {
		e = &uploadHash{}
		hs.m[id] = e
	}
	return e
}

func (hs *hashes) lookup(id string) *uploadHash {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	return hs.m[id]
}

func (hs *hashes) remove(id string) {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	delete(hs.m, id)
}

func (s *LocalStore) statePath(id string) string { return filepath.Join(s.uploads, id+stateSuffix) }

// forgetHash waits for a checkpoint being saved, then removes the upload's
// state from memory and disk. Publish and Terminate call it.
func (s *LocalStore) forgetHash(id string) error {
	if e := s.hashes.lookup(id); e != nil {
		e.mu.Lock()
		e.waitSave()
		e.valid = false
		e.mu.Unlock()
		s.hashes.remove(id)
	}
	return errors.Join(removeIfExists(s.statePath(id)), removeIfExists(s.statePath(id)+".tmp"))
}

func stateSum(id string, body []byte) [sha256.Size]byte {
	h := sha256.New()
	h.Write([]byte(id))
	h.Write(body)
	var sum [sha256.Size]byte
	h.Sum(sum[:0])
	return sum
}

func encodeState(id string, off int64, h hash.Hash) ([]byte, error) {
	st, err := h.(encoding.BinaryMarshaler).MarshalBinary()
	if err != nil {
		return nil, err
	}
	b := make([]byte, 0, len(stateMagic)+8+2+len(st)+sha256.Size)
	b = append(b, stateMagic...)
	b = binary.BigEndian.AppendUint64(b, uint64(off))
	b = binary.BigEndian.AppendUint16(b, uint16(len(st)))
	b = append(b, st...)
	sum := stateSum(id, b)
	return append(b, sum[:]...), nil
}

// decodeState checks a saved state and returns the hash it holds and the
// offset it covers.
func decodeState(id string, b []byte) (hash.Hash, int64, error) {
	head := len(stateMagic) + 8 + 2
	if len(b) < head+sha256.Size || !bytes.HasPrefix(b, []byte(stateMagic)) {
		return nil, 0, errors.New("not a hash state")
	}
	body, sum := b[:len(b)-sha256.Size], b[len(b)-sha256.Size:]
	if want := stateSum(id, body); !bytes.Equal(sum, want[:]) {
		return nil, 0, errors.New("hash state checksum mismatch")
	}
	off := int64(binary.BigEndian.Uint64(body[len(stateMagic):]))
	n := int(binary.BigEndian.Uint16(body[len(stateMagic)+8:]))
	if off < 0 || len(body) != head+n {
		return nil, 0, errors.New("hash state malformed")
	}
	h := sha256.New()
	if err := h.(encoding.BinaryUnmarshaler).UnmarshalBinary(body[head:]); err != nil {
		return nil, 0, err
	}
	return h, off, nil
}

// loadState returns the saved checkpoint of upload id, when there is a
// sound one covering at most limit bytes; else an empty hash at 0.
func (s *LocalStore) loadState(id string, limit int64) (hash.Hash, int64) {
	b, err := os.ReadFile(s.statePath(id))
	if err == nil {
		h, off, err := decodeState(id, b)
		if err == nil && off <= limit {
			return h, off
		}
	}
	return sha256.New(), 0
}

// saveState syncs the upload's file, then writes the checkpoint of its
// first off bytes: the state never names bytes a crash could lose. It runs
// on its own goroutine and closes done.
func (s *LocalStore) saveState(id string, off int64, state []byte, done chan struct{}) {
	defer close(done)
	f, err := os.Open(filepath.Join(s.uploads, id))
	if err != nil {
		return
	}
	st, err := f.Stat()
	if err == nil && st.Size() >= off {
		err = f.Sync()
	} else if err == nil {
		err = fmt.Errorf("upload %s has %d bytes, fewer than %d", id, st.Size(), off)
	}
	if errors.Join(err, f.Close()) != nil {
		return
	}
	path := s.statePath(id)
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, state, 0o600); err != nil {
		_ = os.Remove(tmp)
		return
	}
	if err := os.Rename(tmp, path); err != nil {
		_ = os.Remove(tmp)
	}
}

// catchUp hashes the file of upload id from byte from to byte to.
func (s *LocalStore) catchUp(id string, h hash.Hash, from, to int64) error {
	if from == to {
		return nil
	}
	f, err := os.Open(filepath.Join(s.uploads, id))
	if err != nil {
		return err
	}
	defer f.Close()
	n, err := io.CopyBuffer(h, io.NewSectionReader(f, from, to-from), make([]byte, 256<<10))
	s.readBack.Add(n)
	if err == nil && n != to-from {
		err = io.ErrUnexpectedEOF
	}
	return err
}

// resume makes e the hash of the file's first off bytes: the state in
// memory when it is that already, else the saved checkpoint (or nothing)
// and the range it lacks read from the file. It returns how many bytes
// the state it started from covered. e.mu is held.
func (s *LocalStore) resume(id string, e *uploadHash, off int64) (int64, error) {
	if e.valid && e.off <= off {
		// Bytes written since, if any, were not hashed (a write that
		// could not be): read them.
		from := e.off
		if err := s.catchUp(id, e.h, from, off); err != nil {
			e.valid = false
			return 0, err
		}
		e.off = off
		return from, nil
	}
	e.valid = false
	e.waitSave() // its checkpoint is on disk, or given up
	h, from := s.loadState(id, off)
	if err := s.catchUp(id, h, from, off); err != nil {
		return 0, err
	}
	e.h, e.off, e.saved, e.valid = h, off, from, true
	return from, nil
}

// uploadDigest returns the SHA-256 of a finished upload of size bytes from
// its hash state, reading only the part the state lacks (all of it when
// there is none). fromState says whether a state supplied any of it; ok is
// false when the store cannot tell (then read the upload back).
func (s *LocalStore) uploadDigest(_ context.Context, id string, size int64) (digest string, fromState, ok bool) {
	if !validUploadID(id) || s.noIncremental {
		return "", false, false
	}
	st, err := os.Stat(filepath.Join(s.uploads, id))
	if err != nil || st.Size() != size {
		return "", false, false
	}
	e := s.hashes.get(id)
	e.mu.Lock()
	defer e.mu.Unlock()
	from, err := s.resume(id, e, size)
	if err != nil {
		return "", false, false
	}
	return hex.EncodeToString(e.h.Sum(nil)), from > 0, true
}

// hashedStore is the local store's tusd data store: tusd's filestore,
// with each upload's bytes hashed as they are written.
type hashedStore struct {
	handler.DataStore // the filestore
	s                 *LocalStore
}

func (d hashedStore) NewUpload(ctx context.Context, info handler.FileInfo) (handler.Upload, error) {
	up, err := d.DataStore.NewUpload(ctx, info)
	if err != nil {
		return nil, err
	}
	return d.wrap(ctx, up)
}

func (d hashedStore) GetUpload(ctx context.Context, id string) (handler.Upload, error) {
	up, err := d.DataStore.GetUpload(ctx, id)
	if err != nil {
		return nil, err
	}
	return d.wrap(ctx, up)
}

func (d hashedStore) wrap(ctx context.Context, up handler.Upload) (handler.Upload, error) {
	info, err := up.GetInfo(ctx)
	if err != nil {
		return nil, err
	}
	size := info.Size
	if info.SizeIsDeferred {
		size = -1
	}
	return &hashedUpload{Upload: up, s: d.s, id: info.ID, size: size}, nil
}

func (d hashedStore) AsTerminatableUpload(up handler.Upload) handler.TerminatableUpload {
	if h, ok := up.(*hashedUpload); ok {
		return hashedTermination{TerminatableUpload: d.s.files.AsTerminatableUpload(h.Upload), s: d.s, id: h.id}
	}
	return d.s.files.AsTerminatableUpload(up)
}

// hashedTermination removes the upload's hash state with its files.
type hashedTermination struct {
	handler.TerminatableUpload
	s  *LocalStore
	id string
}

func (t hashedTermination) Terminate(ctx context.Context) error {
	return errors.Join(t.s.forgetHash(t.id), t.TerminatableUpload.Terminate(ctx))
}

type hashedUpload struct {
	handler.Upload
	s    *LocalStore
	id   string
	size int64 // -1: not known
}

// WriteChunk writes through the filestore, hashing what it writes. When
// the hash cannot be brought to offset, the bytes are written unhashed and
// finish reads back what no state covers.
func (u *hashedUpload) WriteChunk(ctx context.Context, offset int64, src io.Reader) (int64, error) {
	if !validUploadID(u.id) {
		return u.Upload.WriteChunk(ctx, offset, src)
	}
	e := u.s.hashes.get(u.id)
	e.mu.Lock()
	defer e.mu.Unlock()
	if _, err := u.s.resume(u.id, e, offset); err != nil {
		e.valid = false
		return u.Upload.WriteChunk(ctx, offset, src)
	}
	e.valid = false // until the write's count matches the hashed one
	r := &hashedReader{src: src, s: u.s, id: u.id, e: e, size: u.size}
	n, err := u.Upload.WriteChunk(ctx, offset, r)
	// Through WriteTo the hash took exactly the bytes written; through Read
	// it took the bytes read, which match only when all were written.
	e.valid = e.off == offset+n
	if e.valid {
		r.checkpoint() // one may have been skipped while another was saved
	}
	return n, err
}

func (u *hashedUpload) GetReader(ctx context.Context) (io.ReadCloser, error) {
	rc, err := u.Upload.GetReader(ctx)
	if err != nil {
		return nil, err
	}
	return countingReader{ReadCloser: rc, n: &u.s.readBack}, nil
}

type countingReader struct {
	io.ReadCloser
	n interface{ Add(int64) int64 }
}

func (r countingReader) Read(p []byte) (int, error) {
	n, err := r.ReadCloser.Read(p)
	r.n.Add(int64(n))
	return n, err
}

var copyBufs = sync.Pool{New: func() any { b := make([]byte, 256<<10); return &b }}

// hashedReader is a PATCH body on its way to the upload's file. e.mu is
// held by the WriteChunk that made it.
type hashedReader struct {
	src io.Reader
	s   *LocalStore
	id  string
	e   *uploadHash
	// size is the upload's: its last byte needs no checkpoint, finish
	// uses the state at once.
	size int64
}

// Read hashes what it reads, for a writer that does not use WriteTo.
func (r *hashedReader) Read(p []byte) (int, error) {
	n, err := r.src.Read(p)
	r.e.h.Write(p[:n])
	r.e.off += int64(n)
	return n, err
}

// WriteTo copies the body to w (the upload's file) and hashes each byte w
// took, after it took it; every checkpointEvery bytes it starts a
// checkpoint of the bytes written so far.
func (r *hashedReader) WriteTo(w io.Writer) (int64, error) {
	bp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bp)
	buf := *bp
	var total int64
	for {
		nr, rerr := r.src.Read(buf)
		if nr > 0 {
			nw, werr := w.Write(buf[:nr])
			if nw < 0 || nw > nr {
				nw = 0
				if werr == nil {
					werr = errors.New("media: invalid write result")
				}
			}
			r.e.h.Write(buf[:nw])
			r.e.off += int64(nw)
			total += int64(nw)
			r.checkpoint()
			if werr != nil {
				return total, werr
			}
			if nw != nr {
				return total, io.ErrShortWrite
			}
		}
		if rerr == io.EOF {
			return total, nil
		}
		if rerr != nil {
			return total, rerr
		}
	}
}

func (r *hashedReader) checkpoint() {
	e := r.e
	if e.off-e.saved < r.s.checkpointEvery || e.off == r.size || e.saveRunning() {
		return
	}
	state, err := encodeState(r.id, e.off, e.h)
	if err != nil {
		return
	}
	e.saved = e.off
	e.saving = make(chan struct{})
	go r.s.saveState(r.id, e.off, state, e.saving)
}
