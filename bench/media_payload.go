package bench

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"math"
	"strconv"
	"strings"
)

// Payload sources of the media scenario.
const (
	// PayloadRandom is incompressible bytes, generated from the seed and
	// the client's number (AES-256-CTR keystream): reproducible, seekable,
	// never stored.
	PayloadRandom = "random"
	// PayloadZero is zero bytes: the cheapest to generate, to tell the
	// generator's cost from the SDK's (the ciphertext is random either
	// way, so the server sees no difference).
	PayloadZero = "zero"
)

// mediaPayload is one client's file: size bytes generated on the fly, an
// io.ReadSeeker like a file, so the SDK takes its no-spool path (one pass
// that encrypts, hashes and sends, seeking back to resume).
// Whatever the reads and seeks, it hashes every byte once, in order, the
// first time a read reaches it: after the SDK has read the whole file,
// sum is the SHA-256 of the plaintext that went up.
type mediaPayload struct {
	size   int64
	pos    int64
	block  cipher.Block // nil: zeros
	h      *hashPipe
	hashed int64 // bytes [0, hashed) are in h
}

func newMediaPayload(source string, seed uint64, client int, size int64) (*mediaPayload, error) {
	p := &mediaPayload{size: size, h: newHashPipe()}
	switch source {
	case PayloadZero:
	case PayloadRandom, "":
		var in [16]byte
		binary.BigEndian.PutUint64(in[:8], seed)
		binary.BigEndian.PutUint64(in[8:], uint64(client))
		key := sha256.Sum256(append([]byte("courier bench media payload\x00"), in[:]...))
		b, err := aes.NewCipher(key[:])
		if err != nil {
			return nil, err
		}
		p.block = b
	default:
		return nil, fmt.Errorf("bench: unknown payload source %q (random or zero)", source)
	}
	return p, nil
}

func (p *mediaPayload) Read(b []byte) (int, error) {
	if p.pos >= p.size {
		return 0, io.EOF
	}
	n := int(min(int64(len(b)), p.size-p.pos))
	b = b[:n]
	clear(b)
	if p.block != nil {
		// The keystream at byte pos: counter block pos/16, skipping
		// pos%16 bytes of it.
		var iv [aes.BlockSize]byte
		binary.BigEndian.PutUint64(iv[8:], uint64(p.pos/aes.BlockSize))
		ctr := cipher.NewCTR(p.block, iv[:])
		if skip := int(p.pos % aes.BlockSize); skip > 0 {
			var tmp [aes.BlockSize]byte
			ctr.XORKeyStream(tmp[:skip], tmp[:skip])
		}
		ctr.XORKeyStream(b, b)
	}
	if p.hashed >= p.pos && p.hashed < p.pos+int64(n) {
		p.h.Write(b[p.hashed-p.pos:])
		p.hashed = p.pos + int64(n)
	}
	p.pos += int64(n)
	return n, nil
}

func (p *mediaPayload) Seek(off int64, whence int) (int64, error) {
	switch whence {
	case io.SeekStart:
	case io.SeekCurrent:
		off += p.pos
	case io.SeekEnd:
		off += p.size
	default:
		return 0, errors.New("bench: payload seek: bad whence")
	}
	if off < 0 {
		return 0, errors.New("bench: payload seek: negative offset")
	}
	p.pos = off
	return off, nil
}

// sum is the SHA-256 of the whole plaintext, once every byte was read.
func (p *mediaPayload) sum() (string, error) {
	if p.hashed != p.size {
		return "", fmt.Errorf("bench: only %d of %d plaintext bytes were read for the upload", p.hashed, p.size)
	}
	sum := p.h.sum()
	p.h.close() // nothing more to hash
	return sum, nil
}

// close stops the hashing goroutine of a payload whose upload failed.
func (p *mediaPayload) close() { p.h.close() }

// hashWriter is the download's destination: it hashes and counts what
// arrives and keeps nothing.
type hashWriter struct {
	p *hashPipe
	n int64
}

func newHashWriter() *hashWriter { return &hashWriter{p: newHashPipe()} }

func (w *hashWriter) Write(b []byte) (int, error) {
	w.n += int64(len(b))
	return w.p.Write(b)
}

// sum waits for every byte written to be hashed.
func (w *hashWriter) sum() string { return w.p.sum() }

func (w *hashWriter) close() { w.p.close() }

// hashAhead: the bench's own SHA-256 of the plaintext (what the upload
// read, what the download wrote) runs on a goroutine of its own, fed
// through a few buffered blocks, rather than on the SDK's goroutine, where
// it would add to the transfer's time what a real app does not do there
// (it reads from and writes to a file). Every byte is still hashed before
// a transfer counts as checked; false puts the hashing back inline, to
// measure the difference.
const hashAhead = true

// hashPipe hashes what is written to it, on its own goroutine when
// hashAhead.
type hashPipe struct {
	h      hash.Hash
	work   chan []byte // nil: a barrier, answered on ack
	free   chan []byte
	ack    chan struct{}
	cur    []byte
	closed bool
}

const (
	hashPipeBlock  = 256 << 10
	hashPipeBlocks = 4
)

func newHashPipe() *hashPipe {
	p := &hashPipe{h: sha256.New()}
	if !hashAhead {
		return p
	}
	p.work, p.free, p.ack = make(chan []byte, hashPipeBlocks), make(chan []byte, hashPipeBlocks), make(chan struct{})
	for range hashPipeBlocks {
		p.free <- make([]byte, 0, hashPipeBlock)
	}
	go func() {
		for b := range p.work {
			if b == nil {
				p.ack <- struct{}{}
				continue
			}
			p.h.Write(b)
			p.free <- b[:0]
		}
	}()
	return p
}

func (p *hashPipe) Write(b []byte) (int, error) {
	if p.work == nil {
		return p.h.Write(b)
	}
	if p.closed {
		return 0, errors.New("bench: hash pipe closed")
	}
	n := len(b)
	for len(b) > 0 {
		if p.cur == nil {
			p.cur = <-p.free
		}
		k := copy(p.cur[len(p.cur):cap(p.cur)], b)
		p.cur, b = p.cur[:len(p.cur)+k], b[k:]
		if len(p.cur) == cap(p.cur) {
			p.work <- p.cur
			p.cur = nil
		}
	}
	return n, nil
}

// sum is the SHA-256 of everything written so far, once it is hashed.
func (p *hashPipe) sum() string {
	if p.work != nil && !p.closed {
		if len(p.cur) > 0 {
			p.work <- p.cur
			p.cur = nil
		}
		p.work <- nil
		<-p.ack // the goroutine is idle: p.h is ours to read
	}
	return hex.EncodeToString(p.h.Sum(nil))
}

// close stops the goroutine (sum still answers afterwards).
func (p *hashPipe) close() {
	if p.work != nil && !p.closed {
		p.sum()
		close(p.work)
		p.closed = true
	}
}

// ParseSize reads a byte count: a plain number of bytes, or a number
// (fractions allowed) followed by a unit: B; KiB, MiB, GiB, TiB (powers of
// 1024, also written K, M, G, T, KB… being powers of 1000: kB/KB, MB, GB,
// TB). "256MiB", "1.5GiB", "64K", "1000000".
func ParseSize(s string) (int64, error) {
	t := strings.TrimSpace(s)
	i := len(t)
	for i > 0 && (t[i-1] < '0' || t[i-1] > '9') && t[i-1] != '.' {
		i--
	}
	num, unit := strings.TrimSpace(t[:i]), strings.TrimSpace(t[i:])
	mult, ok := sizeUnits[strings.ToLower(unit)]
	if !ok || num == "" {
		return 0, fmt.Errorf("bench: size %q: want a number of bytes or e.g. 256MiB, 2GiB, 64KiB", s)
	}
	if n, err := strconv.ParseInt(num, 10, 64); err == nil {
		if n < 0 || (n > 0 && n > math.MaxInt64/mult) {
			return 0, fmt.Errorf("bench: size %q out of range", s)
		}
		return n * mult, nil
	}
	f, err := strconv.ParseFloat(num, 64)
	if err != nil || f < 0 || f*float64(mult) >= math.MaxInt64 {
		return 0, fmt.Errorf("bench: size %q: want a number of bytes or e.g. 256MiB, 2GiB, 64KiB", s)
	}
	return int64(f * float64(mult)), nil
}

var sizeUnits = map[string]int64{
	"": 1, "b": 1,
	"k": 1 << 10, "kib": 1 << 10, "m": 1 << 20, "mib": 1 << 20, "g": 1 << 30, "gib": 1 << 30, "t": 1 << 40, "tib": 1 << 40,
	"kb": 1e3, "mb": 1e6, "gb": 1e9, "tb": 1e12,
}

// FormatSize writes a byte count the way ParseSize reads it: "256MiB",
// "3MiB", "1000B".
func FormatSize(n int64) string {
	for _, u := range []struct {
		s string
		m int64
	}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if n >= u.m && n%u.m == 0 {
			return strconv.FormatInt(n/u.m, 10) + u.s
		}
	}
	if n >= 1<<20 {
		return strconv.FormatFloat(float64(n)/(1<<20), 'f', 2, 64) + "MiB"
	}
	return strconv.FormatInt(n, 10) + "B"
}

// SizeFlag is a pflag value of a byte count written as ParseSize reads it.
type SizeFlag struct{ P *int64 }

func (f SizeFlag) String() string {
	if f.P == nil {
		return "0"
	}
	return FormatSize(*f.P)
}

func (f SizeFlag) Set(s string) error {
	n, err := ParseSize(s)
	if err != nil {
		return err
	}
	*f.P = n
	return nil
}

func (f SizeFlag) Type() string { return "size" }
