package client

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"errors"
	"io"
	"testing"
)

// refMediaEncrypt is the media format written out independently of
// mediaEncrypter, from the format's description: what a second
// implementation (the web client) must produce.
func refMediaEncrypt(t *testing.T, key, plain []byte) []byte {
	t.Helper()
	b, err := aes.NewCipher(key)
	if err != nil {
		t.Fatal(err)
	}
	g, err := cipher.NewGCM(b)
	if err != nil {
		t.Fatal(err)
	}
	var out []byte
	for i := 0; ; i++ {
		end := min(len(plain), (i+1)*65536)
		last := end == len(plain)
		nonce := []byte{0, 0, 0, 0, 0, 0, 0, byte(i >> 24), byte(i >> 16), byte(i >> 8), byte(i), 0}
		if last {
			nonce[11] = 1
		}
		out = g.Seal(out, nonce, plain[i*65536:end], nil)
		if last {
			return out
		}
	}
}

func testKey() []byte {
	k := make([]byte, 32)
	for i := range k {
		k[i] = byte(i * 7)
	}
	return k
}

func patterned(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*31 + i>>16)
	}
	return b
}

func TestMediaCipherSizes(t *testing.T) {
	for _, tc := range []struct {
		plain, cipher int64
	}{
		{0, 16},
		{1, 17},
		{65535, 65551},
		{65536, 65552},
		{65537, 65569},
		{131072, 131104},
		{5 << 20, 5<<20 + 16*80},
		{2 << 30, 2<<30 + 16*32768},
		{-1, -1},
	} {
		if got := MediaCipherSize(tc.plain); got != tc.cipher {
			t.Errorf("MediaCipherSize(%d) = %d, want %d", tc.plain, got, tc.cipher)
		}
		if tc.plain >= 0 {
			if got := mediaPlainSize(tc.cipher); got != tc.plain {
				t.Errorf("mediaPlainSize(%d) = %d, want %d", tc.cipher, got, tc.plain)
			}
		}
	}
	// Cipher sizes no plaintext has: shorter than a tag, or a last chunk
	// that would be empty although it is not the only one.
	for _, c := range []int64{-1, 0, 15, 65552 + 1, 65552 + 15, 65552 + 16} {
		if p := mediaPlainSize(c); p != -1 {
			t.Errorf("mediaPlainSize(%d) = %d, want -1", c, p)
		}
	}
}

func TestMediaNonceBytes(t *testing.T) {
	for _, tc := range []struct {
		i     int64
		final bool
		want  []byte
	}{
		{0, false, []byte{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}},
		{0, true, []byte{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1}},
		{1, false, []byte{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0}},
		{0x01020304, true, []byte{0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4, 1}},
	} {
		if got := mediaNonce(tc.i, tc.final); !bytes.Equal(got[:], tc.want) {
			t.Errorf("mediaNonce(%d, %v) = %x, want %x", tc.i, tc.final, got, tc.want)
		}
	}
}

func TestMediaChunkCryptoMatchesTheFormat(t *testing.T) {
	key := testKey()
	aead, err := newMediaAEAD(key)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []int{0, 1, 100, 65535, 65536, 65537, 131072, 200000} {
		plain := patterned(n)
		want := refMediaEncrypt(t, key, plain)
		got, err := io.ReadAll(newMediaEncrypter(aead, bytes.NewReader(plain), int64(n), 0, 0))
		if err != nil {
			t.Fatalf("%d: %v", n, err)
		}
		if !bytes.Equal(got, want) || int64(len(got)) != MediaCipherSize(int64(n)) {
			t.Fatalf("%d bytes: ciphertext differs from the format (len %d, want %d)", n, len(got), len(want))
		}
		// Any offset: the ciphertext from there, re-encrypting from the
		// chunk that holds it.
		for _, off := range []int64{0, 1, 65551, 65552, 65553, int64(len(want)) - 1, int64(len(want))} {
			if off > int64(len(want)) {
				continue
			}
			chunk := off / mediaSealedChunk
			src := bytes.NewReader(plain[min(int(chunk*MediaChunkSize), len(plain)):])
			part, err := io.ReadAll(newMediaEncrypter(aead, src, int64(n), chunk, off%mediaSealedChunk))
			if err != nil {
				t.Fatalf("%d from %d: %v", n, off, err)
			}
			if !bytes.Equal(part, want[off:]) {
				t.Fatalf("%d bytes from offset %d: differs", n, off)
			}
		}
		var out bytes.Buffer
		if _, err := decryptMedia(aead, bytes.NewReader(got), int64(len(got)), &out); err != nil || !bytes.Equal(out.Bytes(), plain) {
			t.Fatalf("%d bytes: decrypt: %v", n, err)
		}
	}
}

func TestMediaChunkCryptoRefusesTampering(t *testing.T) {
	key := testKey()
	aead, _ := newMediaAEAD(key)
	plain := patterned(3*65536 + 100) // four chunks
	ct := refMediaEncrypt(t, key, plain)
	chunk := func(i int) []byte {
		return ct[i*mediaSealedChunk : min(len(ct), (i+1)*mediaSealedChunk)]
	}
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	flip := func(at int) []byte {
		b := bytes.Clone(ct)
		b[at] ^= 1
		return b
	}
	// A two-chunk file cut after its first chunk: every remaining chunk
	// authenticates, but none is final.
	two := refMediaEncrypt(t, key, patterned(65536+1))
	for _, tc := range []struct {
		name string
		ct   []byte
	}{
		{"first byte flipped", flip(0)},
		{"byte in a middle chunk flipped", flip(mediaSealedChunk + 1000)},
		{"tag byte flipped", flip(len(ct) - 1)},
		{"chunks swapped", cat(chunk(1), chunk(0), chunk(2), chunk(3))},
		{"middle chunk dropped", cat(chunk(0), chunk(2), chunk(3))},
		{"middle chunk repeated", cat(chunk(0), chunk(1), chunk(1), chunk(3))},
		{"cut at a chunk boundary", two[:mediaSealedChunk]},
		{"cut inside a chunk", ct[:len(ct)-50]},
		{"extra chunk after the final one", cat(ct, chunk(1))},
		{"empty", nil},
		{"final chunk moved first", cat(chunk(3), chunk(1), chunk(2), chunk(0))},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := decryptMedia(aead, bytes.NewReader(tc.ct), int64(len(tc.ct)), nil)
			if !errors.Is(err, ErrMediaCorrupt) {
				t.Fatalf("verify: got %v, want ErrMediaCorrupt", err)
			}
		})
	}
	// Another key fails too.
	other := testKey()
	other[0] ^= 1
	oaead, _ := newMediaAEAD(other)
	if _, err := decryptMedia(oaead, bytes.NewReader(ct), int64(len(ct)), nil); !errors.Is(err, ErrMediaCorrupt) {
		t.Fatalf("wrong key: %v", err)
	}
}

func TestMediaEncrypterChecksTheSize(t *testing.T) {
	aead, _ := newMediaAEAD(testKey())
	for _, tc := range []struct {
		have, size int
	}{
		{10, 11}, {11, 10}, {65536, 65537}, {65537, 65536}, {0, 1}, {1, 0},
	} {
		_, err := io.ReadAll(newMediaEncrypter(aead, bytes.NewReader(patterned(tc.have)), int64(tc.size), 0, 0))
		if !errors.Is(err, ErrMediaSize) {
			t.Errorf("%d bytes read as %d: got %v, want ErrMediaSize", tc.have, tc.size, err)
		}
	}
}

func TestMediaEncrypterRefusesAChangedSource(t *testing.T) {
	aead, _ := newMediaAEAD(testKey())
	plain := patterned(3 * 65536)
	var tags []byte
	first := newMediaEncrypter(aead, bytes.NewReader(plain), int64(len(plain)), 0, 0)
	first.tags = &tags
	if _, err := io.ReadAll(first); err != nil {
		t.Fatal(err)
	}
	if len(tags) != 3*mediaTagSize {
		t.Fatalf("%d tag bytes recorded", len(tags))
	}
	changed := bytes.Clone(plain)
	changed[2*65536+5] ^= 1
	again := newMediaEncrypter(aead, bytes.NewReader(changed[65536:]), int64(len(plain)), 1, 7)
	again.tags = &tags
	got, err := io.ReadAll(again)
	if !errors.Is(err, ErrMediaSourceChanged) {
		t.Fatalf("got %v, want ErrMediaSourceChanged", err)
	}
	// Only the unchanged chunk went out.
	if len(got) != mediaSealedChunk-7 {
		t.Fatalf("%d bytes came out before the change was noticed, want %d", len(got), mediaSealedChunk-7)
	}
}
