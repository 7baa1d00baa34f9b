package client

// Downloads: DownloadMedia spools the ciphertext, resuming with Range,
// checks it as it arrives (mediapipe.go) and writes plaintext only once
// the digest and every chunk passed.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
)

// DownloadMedia fetches the blob ref names, checks it and writes the
// plaintext to w. The ciphertext is first downloaded into a temporary file
// (WithMediaTempDir; removed before DownloadMedia returns), resuming with
// a Range request after a dropped connection or server error, with
// backoff, until ctx ends. Its SHA-256 and every chunk's tag are computed
// as the bytes arrive (on another goroutine; a resume continues them, a
// server that answers a resume with the whole blob starts them over); once
// the last byte is in, the size, digest and tags are checked against ref,
// and only then is the file decrypted into w, in one pass: a blob that
// fails any check is ErrMediaCorrupt and not a byte reaches w. An unknown
// or expired blob is ErrMediaNotFound.
func (c *Client) DownloadMedia(ctx context.Context, ref MediaRef, w io.Writer, opts ...MediaOption) error {
	if err := ref.validate(); err != nil {
		return err
	}
	mc := mediaOptions(opts)
	aead, err := newMediaAEAD(ref.Key)
	if err != nil {
		return err
	}
	ctx, cancel := c.mediaContext(ctx)
	defer cancel()
	f, err := os.CreateTemp(mc.tempDir, "courier-media-down-*.enc")
	if err != nil {
		return fmt.Errorf("media: temporary file: %w", err)
	}
	defer func() {
		_ = f.Close()
		_ = os.Remove(f.Name())
	}()
	// The ciphertext is hashed and its chunks authenticated as it arrives,
	// on another goroutine; after the last byte one pass remains.
	if err := preallocSpool(f, ref.CipherSize); err != nil {
		return fmt.Errorf("%w: %w", errLocal, err)
	}
	ver := startVerifier(newChunkVerifier(aead, ref.CipherSize))
	defer ver.wait()
	d := &mediaDownload{c: c, mc: mc, ref: ref, f: f, ver: ver, prog: newMediaProgress(mc.progress, ref.CipherSize), hc: c.mediaHTTP()}
	if err := d.run(ctx); err != nil {
		return err
	}
	// The digest proves the bytes are the sender's, the tags that the
	// sender's key sealed them in this order: both are checked before the
	// first plaintext byte goes out.
	if err := ver.wait().check(ref.Digest); err != nil {
		return err
	}
	n, err := decryptSpool(ctx, aead, f, ref.CipherSize, w)
	if err != nil {
		return err
	}
	if n != ref.Size {
		return fmt.Errorf("media: wrote %d of %d bytes", n, ref.Size)
	}
	return nil
}

// ctxReader stops a long local read when ctx ends.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func newCtxReader(ctx context.Context, r io.Reader) io.Reader { return ctxReader{ctx, r} }

func (r ctxReader) Read(p []byte) (int, error) {
	if err := r.ctx.Err(); err != nil {
		return 0, context.Cause(r.ctx)
	}
	return r.r.Read(p)
}

// mediaDownload is one DownloadMedia's transfer into f.
type mediaDownload struct {
	c    *Client
	mc   mediaConfig
	ref  MediaRef
	f    *os.File
	ver  *asyncVerifier // has been handed exactly f's contents
	got  int64          // bytes in f
	prog *mediaProgress
	hc   *http.Client
}

func (d *mediaDownload) restart() error {
	if err := d.f.Truncate(0); err != nil {
		return err
	}
	if _, err := d.f.Seek(0, io.SeekStart); err != nil {
		return err
	}
	d.ver.reset()
	d.got = 0
	return preallocSpool(d.f, d.ref.CipherSize)
}

func (d *mediaDownload) run(ctx context.Context) error {
	b := backoff{min: d.c.cfg.minBackoff, max: d.c.cfg.maxBackoff}
	d.prog.report(0)
	attempt, authFails := 0, 0
	var last error
	for {
		if d.got == d.ref.CipherSize {
			d.prog.report(d.got)
			return nil
		}
		if ctx.Err() != nil {
			return mediaCtxErr(ctx, last)
		}
		before := d.got
		err := d.fetch(ctx)
		if err == nil {
			continue
		}
		last = err
		if ctx.Err() != nil {
			return mediaCtxErr(ctx, last)
		}
		var status *statusErr
		switch {
		case errors.As(err, &status) && status.code == http.StatusUnauthorized:
			authFails++
			if authFails >= mediaMaxAuthFailures {
				return status.err
			}
			continue
		case errors.As(err, &status) && status.code == http.StatusTooManyRequests:
			wait := retryAfter(status.resp)
			if wait > mediaRetryAfterCap {
				return status.err
			}
			if !sleepCtx(ctx, max(wait, b.delay(attempt))) {
				return mediaCtxErr(ctx, last)
			}
			attempt++
			continue
		case errors.As(err, &status) && transient(status.code) && status.code != http.StatusConflict:
		case errors.As(err, &status):
			return status.err
		case errors.Is(err, ErrMediaCorrupt) || errors.Is(err, ErrMediaNotFound) || errors.Is(err, errLocal):
			return err
		}
		authFails = 0
		if d.got > before {
			attempt = 0
		}
		d.c.log.Debug("media download: retrying", "err", err, "have", d.got, "attempt", attempt)
		if !sleepCtx(ctx, b.delay(attempt)) {
			return mediaCtxErr(ctx, last)
		}
		attempt++
	}
}

// fetch makes one GET from d.got on and appends what arrives to f.
func (d *mediaDownload) fetch(ctx context.Context) error {
	srv := d.c.server()
	target := srv.httpBase + "/v1/media/blobs/" + d.ref.Digest
	hdr := http.Header{}
	if d.got > 0 {
		hdr.Set("Range", "bytes="+strconv.FormatInt(d.got, 10)+"-")
	}
	rctx, guard, release := newStallGuard(ctx, d.mc.stall)
	defer release()
	resp, err := d.c.mediaDo(rctx, d.hc, http.MethodGet, target, hdr, nil, 0)
	if err != nil {
		if transportErr(err) {
			d.c.failOver(srv)
		}
		return err
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusOK:
		if d.got > 0 {
			// The server ignored the range: take the whole blob again.
			if err := d.restart(); err != nil {
				return fmt.Errorf("%w: %w", errLocal, err)
			}
		}
		if resp.ContentLength >= 0 && resp.ContentLength != d.ref.CipherSize {
			return fmt.Errorf("%w: the server's blob is %d bytes, the reference says %d", ErrMediaCorrupt, resp.ContentLength, d.ref.CipherSize)
		}
	case http.StatusPartialContent:
		start, size, ok := contentRange(resp.Header.Get("Content-Range"))
		if !ok || start != d.got {
			return fmt.Errorf("media: the server answered range %q to a request from byte %d", resp.Header.Get("Content-Range"), d.got)
		}
		if size >= 0 && size != d.ref.CipherSize {
			return fmt.Errorf("%w: the server's blob is %d bytes, the reference says %d", ErrMediaCorrupt, size, d.ref.CipherSize)
		}
	case http.StatusRequestedRangeNotSatisfiable:
		// We asked from past the end: what we have is not this blob.
		_ = d.restart()
		return fmt.Errorf("%w: the server's blob is shorter than the reference says", ErrMediaCorrupt)
	case http.StatusNotFound, http.StatusGone:
		return fmt.Errorf("%w: %s: %w", ErrMediaNotFound, d.ref.Digest, errorFromHTTP(resp))
	default:
		return refused(resp, "media: download")
	}
	for {
		// At most one byte past the end: enough to tell a longer blob.
		buf := d.ver.block()
		buf = buf[:min(int64(len(buf)), d.ref.CipherSize-d.got+1)]
		n, rerr := 0, error(nil)
		for n < len(buf) && rerr == nil {
			var k int
			k, rerr = resp.Body.Read(buf[n:])
			n += k
			if k > 0 {
				guard.tick()
			}
		}
		if n == 0 {
			d.ver.release(buf)
		} else {
			if d.got+int64(n) > d.ref.CipherSize {
				d.ver.release(buf)
				return fmt.Errorf("%w: the server's blob is longer than the reference says", ErrMediaCorrupt)
			}
			if _, err := d.f.Write(buf[:n]); err != nil {
				d.ver.release(buf)
				return fmt.Errorf("%w: %w", errLocal, err)
			}
			d.ver.submit(buf[:n])
			d.got += int64(n)
			d.prog.report(d.got)
		}
		if rerr == io.EOF {
			if d.got != d.ref.CipherSize {
				return fmt.Errorf("media: the download ended at byte %d of %d", d.got, d.ref.CipherSize)
			}
			return nil
		}
		if rerr != nil {
			if c := context.Cause(rctx); errors.Is(c, errMediaStalled) && ctx.Err() == nil {
				return errMediaStalled
			}
			return rerr
		}
	}
}

// contentRange parses "bytes a-b/n" (n may be "*": -1).
func contentRange(v string) (start, size int64, ok bool) {
	v, found := strings.CutPrefix(strings.TrimSpace(v), "bytes ")
	if !found {
		return 0, 0, false
	}
	rng, total, found := strings.Cut(v, "/")
	if !found {
		return 0, 0, false
	}
	a, _, found := strings.Cut(rng, "-")
	if !found {
		return 0, 0, false
	}
	start, err := strconv.ParseInt(a, 10, 64)
	if err != nil {
		return 0, 0, false
	}
	size = -1
	if total != "*" {
		if size, err = strconv.ParseInt(total, 10, 64); err != nil {
			return 0, 0, false
		}
	}
	return start, size, true
}
