package client

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"os"
	"testing"
)

// The local passes of a media transfer, before and after the pipelines
// (go test -bench MediaPass -benchtime 3x ./client/): SetBytes is the
// plaintext.

const benchMediaSize = 256 << 20

func BenchmarkMediaPass1(b *testing.B) {
	plain := pipePlain(benchMediaSize)
	_, ref := sealMedia(b, plain[:1])
	aead, _ := newMediaAEAD(ref.Key)
	b.Run("inline", func(b *testing.B) {
		b.SetBytes(benchMediaSize)
		for b.Loop() {
			h := sha256.New()
			io.Copy(h, newMediaEncrypter(aead, bytes.NewReader(plain), benchMediaSize, 0, 0))
		}
	})
	b.Run("ahead", func(b *testing.B) {
		b.SetBytes(benchMediaSize)
		for b.Loop() {
			a := newAheadReader(newMediaEncrypter(aead, bytes.NewReader(plain), benchMediaSize, 0, 0), -1)
			io.Copy(sha256.New(), a)
			a.Close()
		}
	})
}

func BenchmarkMediaPassDecrypt(b *testing.B) {
	plain := pipePlain(benchMediaSize)
	blob, ref := sealMedia(b, plain)
	aead, _ := newMediaAEAD(ref.Key)
	f, err := os.CreateTemp(b.TempDir(), "spool")
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	f.Write(blob)
	b.Run("verify-then-decrypt", func(b *testing.B) {
		b.SetBytes(benchMediaSize)
		for b.Loop() {
			f.Seek(0, io.SeekStart)
			decryptMedia(aead, f, ref.CipherSize, nil)
			f.Seek(0, io.SeekStart)
			decryptMedia(aead, f, ref.CipherSize, io.Discard)
		}
	})
	b.Run("one-pass-inline", func(b *testing.B) {
		b.SetBytes(benchMediaSize)
		for b.Loop() {
			f.Seek(0, io.SeekStart)
			decryptMedia(aead, f, ref.CipherSize, io.Discard)
		}
	})
	for _, batch := range []int{1, 2, 4, 16} {
		b.Run(fmt.Sprintf("one-pass-%dchunks-sha", batch), func(b *testing.B) {
			defer func(old int) { decryptBatch = old }(decryptBatch)
			decryptBatch = batch
			b.SetBytes(benchMediaSize)
			for b.Loop() {
				if _, err := decryptSpool(context.Background(), aead, f, ref.CipherSize, sha256.New()); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	b.Run("one-pass-16chunks-discard", func(b *testing.B) {
		b.SetBytes(benchMediaSize)
		for b.Loop() {
			decryptSpool(context.Background(), aead, f, ref.CipherSize, io.Discard)
		}
	})
	b.Run("one-pass-inline-sha", func(b *testing.B) {
		b.SetBytes(benchMediaSize)
		for b.Loop() {
			f.Seek(0, io.SeekStart)
			decryptMedia(aead, f, ref.CipherSize, sha256.New())
		}
	})
}
