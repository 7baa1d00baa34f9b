package client_test

import (
	"errors"
	"io"
	"testing"
	"time"

	"github.com/courier-im/courier/client"
	"github.com/courier-im/courier/media"
	"github.com/courier-im/courier/node"
)

// countingReader counts what is read from it.
type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	k, err := c.r.Read(p)
	c.n += int64(k)
	return k, err
}

// A file larger than the server takes fails before the SDK reads it
// (the tus OPTIONS answer names the limit), not after a pass over it.
func TestMediaTooLargeFailsBeforeReadingTheFile(t *testing.T) {
	n := startNode(t, node.Config{Media: media.Config{MaxSize: 40 << 20}})
	creds := register(t, n, "big")
	c := dial(t, creds)
	const size = 64 << 20
	r := &countingReader{r: io.LimitReader(zeroReader{}, size)}
	start := time.Now()
	_, err := c.UploadMedia(timeout(t, 30*time.Second), r, size)
	if !errors.Is(err, client.ErrMediaTooLarge) {
		t.Fatalf("got %v, want ErrMediaTooLarge", err)
	}
	if r.n != 0 {
		t.Fatalf("%d bytes read (in %v) before the refusal", r.n, time.Since(start))
	}
	// Under the limit (and above the size that asks first), it goes up.
	const ok = 36 << 20
	if _, err := c.UploadMedia(timeout(t, 60*time.Second), io.LimitReader(zeroReader{}, ok), ok); err != nil {
		t.Fatal(err)
	}
}

type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}
