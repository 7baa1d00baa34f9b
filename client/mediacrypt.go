package client

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// Media encryption, format "courier media v1": chunked AES-256-GCM.
//
// Every file gets a fresh random 32-byte key (MediaRef.Key, carried only
// inside the end-to-end encrypted message). The plaintext is cut into
// chunks of MediaChunkSize (64 KiB) bytes, the last one shorter (an empty
// file is one empty chunk). Chunk i (0-based) is sealed with AES-256-GCM
// under the key with the 12-byte nonce
//
//	00 00 00 00 00 00 00 || uint32 big-endian i || final
//
// where final is 0x01 for the last chunk and 0x00 for every other, and no
// additional data. Each sealed chunk is its ciphertext followed by its
// 16-byte tag; the file's ciphertext is the sealed chunks concatenated, so
//
//	cipher size = plain size + 16 * max(1, ceil(plain size / 65536))
//
// and the blob's digest (MediaRef.Digest) is the lowercase hex SHA-256 of
// that whole ciphertext. The nonce binds each chunk to its place and says
// which chunk ends the file, so chunks cannot be reordered, dropped,
// duplicated or cut off at a chunk boundary without a tag failing; and the
// digest, checked before any tag, pins the exact blob the sender uploaded.
//
// Why chunked GCM rather than Signal's AES-256-CBC + HMAC-SHA256 over the
// whole file: encryption is deterministic per (key, chunk index) and every
// chunk is independent, so an upload that the server acknowledged up to an
// arbitrary offset resumes by re-encrypting from the chunk containing that
// offset, without re-reading (or keeping) anything before it; a receiver
// can authenticate and decrypt in 64 KiB steps with constant memory; and
// a truncated or reordered file fails at the chunk that is wrong. With CBC
// + one HMAC the MAC covers the whole file, so nothing can be verified
// before the end, and resuming needs the CBC state at the offset. A key is
// used for one file only, so the 2^32-chunk (256 TiB) nonce space is never
// exhausted and the same nonce only ever seals the same chunk again (a
// re-encryption when resuming; UploadMedia checks each re-encrypted chunk
// against the tag it had when first sealed, see ErrMediaSourceChanged).

// MediaChunkSize is the plaintext size of every chunk but the last.
const MediaChunkSize = 64 << 10

const (
	mediaTagSize     = 16
	mediaKeySize     = 32
	mediaSealedChunk = MediaChunkSize + mediaTagSize
	// maxMediaChunks: the nonce has 32 bits of chunk index.
	maxMediaChunks = 1 << 32
)

// MediaCipherSize is the size of the ciphertext of a plaintext of plain
// bytes (-1 for a negative or too large size).
func MediaCipherSize(plain int64) int64 {
	if plain < 0 {
		return -1
	}
	n := mediaChunks(plain)
	if n > maxMediaChunks {
		return -1
	}
	return plain + mediaTagSize*n
}

// mediaChunks is the number of chunks of a plaintext of plain bytes.
func mediaChunks(plain int64) int64 {
	if plain == 0 {
		return 1
	}
	return (plain + MediaChunkSize - 1) / MediaChunkSize
}

// mediaPlainSize inverts MediaCipherSize: the plaintext size of a
// ciphertext of cipherSize bytes, or -1 when no plaintext has that size.
func mediaPlainSize(cipherSize int64) int64 {
	if cipherSize < mediaTagSize {
		return -1
	}
	n := (cipherSize + mediaSealedChunk - 1) / mediaSealedChunk
	p := cipherSize - n*mediaTagSize
	if p < 0 || MediaCipherSize(p) != cipherSize {
		return -1
	}
	return p
}

// mediaNonce is the nonce of chunk i.
func mediaNonce(i int64, final bool) [12]byte {
	var n [12]byte
	binary.BigEndian.PutUint32(n[7:11], uint32(i))
	if final {
		n[11] = 1
	}
	return n
}

func newMediaAEAD(key []byte) (cipher.AEAD, error) {
	if len(key) != mediaKeySize {
		return nil, fmt.Errorf("media key is %d bytes, want %d", len(key), mediaKeySize)
	}
	b, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(b)
}

// ErrMediaSize: the reader given to UploadMedia did not hold exactly the
// size it was given.
var ErrMediaSize = errors.New("media: reader does not hold exactly the given size")

// mediaEncrypter reads plaintext from src and produces the ciphertext of
// a file of size bytes, starting at chunk first (src must be positioned at
// that chunk's first plaintext byte) and skipping skip bytes of it.
type mediaEncrypter struct {
	aead   cipher.AEAD
	src    io.Reader
	size   int64
	chunks int64
	next   int64 // next chunk to seal
	plain  []byte
	out    []byte // the sealed chunk being read out
	pos    int
	skip   int64 // bytes of the first chunk to leave out
	err    error
	// tags, when set, holds the tags of the chunks sealed before, in
	// order: a chunk sealed again must match its tag (a resumed upload
	// must produce the bytes the digest covers), and the tag of the next
	// chunk never sealed is appended.
	tags *[]byte
}

func newMediaEncrypter(aead cipher.AEAD, src io.Reader, size, first, skip int64) *mediaEncrypter {
	e := &mediaEncrypter{
		aead:   aead,
		src:    src,
		size:   size,
		chunks: mediaChunks(size),
		next:   first,
		plain:  make([]byte, MediaChunkSize),
		out:    make([]byte, 0, mediaSealedChunk),
	}
	e.skip = skip
	return e
}

func (e *mediaEncrypter) Read(p []byte) (int, error) {
	for e.pos == len(e.out) {
		if e.err != nil {
			return 0, e.err
		}
		e.fill()
		if e.skip > 0 {
			e.pos = int(min(e.skip, int64(len(e.out))))
			e.skip = 0
		}
	}
	n := copy(p, e.out[e.pos:])
	e.pos += n
	return n, nil
}

// fill seals the next chunk into out, or sets err (io.EOF after the last).
func (e *mediaEncrypter) fill() {
	e.out, e.pos = e.out[:0], 0
	if e.next >= e.chunks {
		// The reader must end here: more data means a wrong size.
		var one [1]byte
		if n, _ := io.ReadFull(e.src, one[:]); n > 0 {
			e.err = fmt.Errorf("%w: it holds more than %d bytes", ErrMediaSize, e.size)
			return
		}
		e.err = io.EOF
		return
	}
	i := e.next
	n := min(int64(MediaChunkSize), e.size-i*MediaChunkSize)
	if got, err := io.ReadFull(e.src, e.plain[:n]); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			e.err = fmt.Errorf("%w: it ended after %d of %d bytes", ErrMediaSize, i*MediaChunkSize+int64(got), e.size)
		} else {
			e.err = fmt.Errorf("media: read: %w", err)
		}
		return
	}
	nonce := mediaNonce(i, i == e.chunks-1)
	e.out = e.aead.Seal(e.out, nonce[:], e.plain[:n], nil)
	tag := e.out[len(e.out)-mediaTagSize:]
	if e.tags != nil {
		switch known := int64(len(*e.tags) / mediaTagSize); {
		case i < known:
			if subtle.ConstantTimeCompare(tag, (*e.tags)[i*mediaTagSize:(i+1)*mediaTagSize]) != 1 {
				e.out, e.err = e.out[:0], ErrMediaSourceChanged
				return
			}
		case i == known:
			*e.tags = append(*e.tags, tag...)
		}
	}
	e.next++
}

// decryptMedia reads a ciphertext of cipherSize bytes from src, verifies
// every chunk and writes the plaintext to w (nil: verify only). A chunk
// that fails its tag, a wrong size or a short src is ErrMediaCorrupt.
func decryptMedia(aead cipher.AEAD, src io.Reader, cipherSize int64, w io.Writer) (int64, error) {
	plain := mediaPlainSize(cipherSize)
	if plain < 0 {
		return 0, fmt.Errorf("%w: %d bytes is not the size of any ciphertext", ErrMediaCorrupt, cipherSize)
	}
	chunks := mediaChunks(plain)
	sealed := make([]byte, mediaSealedChunk)
	out := make([]byte, 0, MediaChunkSize)
	var written int64
	for i := range chunks {
		n := min(int64(mediaSealedChunk), cipherSize-i*mediaSealedChunk)
		if _, err := io.ReadFull(src, sealed[:n]); err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				return written, fmt.Errorf("%w: ciphertext ends in chunk %d", ErrMediaCorrupt, i)
			}
			return written, err
		}
		nonce := mediaNonce(i, i == chunks-1)
		pt, err := aead.Open(out[:0], nonce[:], sealed[:n], nil)
		if err != nil {
			return written, fmt.Errorf("%w: chunk %d fails authentication", ErrMediaCorrupt, i)
		}
		if w != nil {
			k, err := w.Write(pt)
			written += int64(k)
			if err != nil {
				return written, err
			}
		}
	}
	return written, nil
}
