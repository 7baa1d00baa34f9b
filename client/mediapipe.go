package client

import (
	"context"
	"crypto/cipher"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash"
	"io"
	"os"
	"sync"
)

// Pipelines of media transfers: the ciphertext moves in blocks of about
// 1 MiB between two goroutines, so that on a phone's (or a server's)
// several cores encryption, hashing, file and network I/O overlap instead
// of taking turns.

// mediaBlockSize is the size of the blocks the pipelines pass along.
const mediaBlockSize = 1 << 20

// mediaBlocks recycles the pipelines' blocks.
var mediaBlocks = sync.Pool{New: func() any {
	b := make([]byte, mediaBlockSize)
	return &b
}}

func getMediaBlock() []byte  { return *(mediaBlocks.Get().(*[]byte)) }
func putMediaBlock(b []byte) { b = b[:cap(b)]; mediaBlocks.Put(&b) }

// aheadReader reads r on its own goroutine, up to limit bytes (all of it
// when limit < 0), keeping a few blocks ready: the reader of an upload's
// ciphertext (the encrypter behind it works while the previous block is
// hashed or sent). Close stops the goroutine and waits for it, so the
// source can be read (or seeked) again.
type aheadReader struct {
	blocks chan aheadBlock
	stop   chan struct{}
	done   chan struct{}
	once   sync.Once

	cur  []byte // unread part of the current block
	held []byte // the current block, to recycle
	err  error  // after cur: the source's error (io.EOF at its end)
}

type aheadBlock struct {
	b   []byte
	err error
}

// mediaAheadBlocks is how many blocks a reader keeps ready.
const mediaAheadBlocks = 3

func newAheadReader(r io.Reader, limit int64) *aheadReader {
	a := &aheadReader{blocks: make(chan aheadBlock, mediaAheadBlocks), stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(a.done)
		for {
			b := getMediaBlock()
			if limit >= 0 && limit < int64(len(b)) {
				b = b[:limit]
			}
			n := 0
			var err error
			for n < len(b) && err == nil {
				var k int
				k, err = r.Read(b[n:])
				n += k
			}
			if limit >= 0 {
				limit -= int64(n)
				if limit == 0 && err == nil {
					err = io.EOF
				}
			}
			select {
			case a.blocks <- aheadBlock{b[:n], err}:
			case <-a.stop:
				putMediaBlock(b)
				return
			}
			if err != nil {
				return
			}
		}
	}()
	return a
}

// next takes the next block; false when there is none (see a.err).
func (a *aheadReader) next() bool {
	if a.held != nil {
		putMediaBlock(a.held)
		a.held, a.cur = nil, nil
	}
	if a.err != nil {
		return false
	}
	blk := <-a.blocks
	a.held, a.cur, a.err = blk.b, blk.b, blk.err
	return true
}

func (a *aheadReader) Read(p []byte) (int, error) {
	for len(a.cur) == 0 {
		if !a.next() {
			return 0, a.err
		}
	}
	n := copy(p, a.cur)
	a.cur = a.cur[n:]
	return n, nil
}

// WriteTo hands w whole blocks (io.Copy uses it).
func (a *aheadReader) WriteTo(w io.Writer) (int64, error) {
	var total int64
	for {
		if len(a.cur) > 0 {
			n, err := w.Write(a.cur)
			total += int64(n)
			a.cur = a.cur[n:]
			if err != nil {
				return total, err
			}
		}
		if !a.next() {
			if a.err == io.EOF {
				return total, nil
			}
			return total, a.err
		}
	}
}

// Close stops the goroutine and waits until it no longer reads the source.
func (a *aheadReader) Close() {
	a.once.Do(func() {
		close(a.stop)
		<-a.done
		for len(a.blocks) > 0 {
			putMediaBlock((<-a.blocks).b)
		}
		if a.held != nil {
			putMediaBlock(a.held)
			a.held, a.cur = nil, nil
		}
	})
}

// chunkVerifier hashes a downloaded ciphertext and authenticates its
// chunks as the bytes arrive, in order: once the last byte is in, the
// digest and every tag are known without reading the file again.
type chunkVerifier struct {
	aead    cipher.AEAD
	size    int64 // of the ciphertext
	chunks  int64
	h       hash.Hash
	n       int64  // bytes taken
	next    int64  // next chunk to authenticate
	part    []byte // the start of chunk next, when it came in pieces
	scratch []byte
	bad     int64 // first chunk that failed authentication (-1: none)
}

func newChunkVerifier(aead cipher.AEAD, cipherSize int64) *chunkVerifier {
	return &chunkVerifier{
		aead:    aead,
		size:    cipherSize,
		chunks:  mediaChunks(max(mediaPlainSize(cipherSize), 0)),
		h:       sha256.New(),
		part:    make([]byte, 0, mediaSealedChunk),
		scratch: make([]byte, 0, mediaSealedChunk),
		bad:     -1,
	}
}

func (v *chunkVerifier) reset() {
	v.h.Reset()
	v.n, v.next, v.part, v.bad = 0, 0, v.part[:0], -1
}

// write takes the next bytes of the ciphertext (never more than its size).
func (v *chunkVerifier) write(p []byte) {
	v.h.Write(p)
	v.n += int64(len(p))
	for len(p) > 0 && v.next < v.chunks {
		want := int(min(int64(mediaSealedChunk), v.size-v.next*mediaSealedChunk))
		if len(v.part) == 0 && len(p) >= want {
			v.open(p[:want])
			p = p[want:]
			continue
		}
		k := min(want-len(v.part), len(p))
		v.part = append(v.part, p[:k]...)
		p = p[k:]
		if len(v.part) == want {
			v.open(v.part)
			v.part = v.part[:0]
		}
	}
}

func (v *chunkVerifier) open(sealed []byte) {
	i := v.next
	v.next++
	if v.bad >= 0 {
		return
	}
	nonce := mediaNonce(i, i == v.chunks-1)
	if _, err := v.aead.Open(v.scratch[:0], nonce[:], sealed, nil); err != nil {
		v.bad = i
	}
}

// check is the verdict once every byte was written: nil, or
// ErrMediaCorrupt.
func (v *chunkVerifier) check(digest string) error {
	if v.n != v.size || v.next != v.chunks {
		return fmt.Errorf("%w: %d of %d bytes checked", ErrMediaCorrupt, v.n, v.size)
	}
	if got := hex.EncodeToString(v.h.Sum(nil)); got != digest {
		return fmt.Errorf("%w: the server sent a blob of SHA-256 %s for %s", ErrMediaCorrupt, got, digest)
	}
	if v.bad >= 0 {
		return fmt.Errorf("%w: chunk %d fails authentication", ErrMediaCorrupt, v.bad)
	}
	return nil
}

// asyncVerifier runs a chunkVerifier on its own goroutine: the download
// loop hands it each block after writing it to the spool file, and takes
// its blocks from it (so at most mediaVerifyBlocks are in flight).
type asyncVerifier struct {
	v    *chunkVerifier
	work chan verifyMsg
	free chan []byte
	done chan struct{}
	once sync.Once
}

type verifyMsg struct {
	b     []byte
	reset bool
}

const mediaVerifyBlocks = 4

func startVerifier(v *chunkVerifier) *asyncVerifier {
	a := &asyncVerifier{v: v, work: make(chan verifyMsg, mediaVerifyBlocks), free: make(chan []byte, mediaVerifyBlocks), done: make(chan struct{})}
	for range mediaVerifyBlocks {
		a.free <- make([]byte, mediaBlockSize)
	}
	go func() {
		defer close(a.done)
		for m := range a.work {
			if m.reset {
				v.reset()
				continue
			}
			v.write(m.b)
			a.free <- m.b[:cap(m.b)]
		}
	}()
	return a
}

// block waits for a free block.
func (a *asyncVerifier) block() []byte { return <-a.free }

// release gives back a block that carries nothing.
func (a *asyncVerifier) release(b []byte) { a.free <- b[:cap(b)] }

// submit hands over the next bytes of the ciphertext (b is a block).
func (a *asyncVerifier) submit(b []byte) { a.work <- verifyMsg{b: b} }

// reset starts over from byte 0 (after what was submitted before).
func (a *asyncVerifier) reset() { a.work <- verifyMsg{reset: true} }

// wait stops the goroutine once it took everything submitted.
func (a *asyncVerifier) wait() *chunkVerifier {
	a.once.Do(func() { close(a.work) })
	<-a.done
	return a.v
}

// decryptSpool decrypts a verified ciphertext of cipherSize bytes from f
// into w, a block of chunks at a time (one read, one write). A chunk
// failing here (the file changed on disk since it was verified) is
// ErrMediaCorrupt; an error of w is wrapped as "media: write".
//
// (Reading ahead on another goroutine was measured and dropped: with w a
// hash or io.Discard it was no faster, or slower, than this loop, which
// keeps each block in the core's cache from the read to the write.)
func decryptSpool(ctx context.Context, aead cipher.AEAD, f *os.File, cipherSize int64, w io.Writer) (int64, error) {
	plain := mediaPlainSize(cipherSize)
	if plain < 0 {
		return 0, fmt.Errorf("%w: %d bytes is not the size of any ciphertext", ErrMediaCorrupt, cipherSize)
	}
	chunks := mediaChunks(plain)
	batch := int64(decryptBatch)
	sealed := make([]byte, batch*mediaSealedChunk)
	out := make([]byte, 0, batch*MediaChunkSize)
	var written int64
	for first := int64(0); first < chunks; first += batch {
		if err := ctx.Err(); err != nil {
			return written, context.Cause(ctx)
		}
		off := first * mediaSealedChunk
		n := int(min(int64(len(sealed)), cipherSize-off))
		if k, err := f.ReadAt(sealed[:n], off); k < n {
			if err == nil || err == io.EOF {
				return written, fmt.Errorf("%w: the verified file ends at byte %d", ErrMediaCorrupt, off+int64(k))
			}
			return written, err
		}
		o := out[:0]
		i := first
		for pos := 0; pos < n; i++ {
			k := min(mediaSealedChunk, n-pos)
			nonce := mediaNonce(i, i == chunks-1)
			var err error
			if o, err = aead.Open(o, nonce[:], sealed[pos:pos+k], nil); err != nil {
				return written, fmt.Errorf("%w: chunk %d fails authentication", ErrMediaCorrupt, i)
			}
			pos += k
		}
		k, err := w.Write(o)
		written += int64(k)
		if err == nil && k < len(o) {
			err = io.ErrShortWrite
		}
		if err != nil {
			return written, fmt.Errorf("media: write: %w", err)
		}
	}
	if written != plain {
		return written, fmt.Errorf("%w: decrypted %d of %d bytes", ErrMediaCorrupt, written, plain)
	}
	return written, nil
}

// decryptBatch is how many chunks decryptSpool reads and writes at once
// (256 KiB: few calls, and a block is still in the cache when written).
var decryptBatch = 4
