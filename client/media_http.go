package client

// The HTTP plumbing of media uploads and downloads: requests with the
// client's token, refusals as errors, retries, stall detection, progress.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// mediaContext ends with ctx or when the Client closes.
func (c *Client) mediaContext(ctx context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancelCause(ctx)
	stop := func() bool { return false }
	if c.ctx != nil {
		stop = context.AfterFunc(c.ctx, func() { cancel(ErrClosed) })
	}
	return ctx, func() { stop(); cancel(nil) }
}

// mediaProgress serializes progress calls and keeps them monotone.
type mediaProgress struct {
	mu    sync.Mutex
	fn    func(done, total int64)
	total int64
	last  int64
}

func newMediaProgress(fn func(done, total int64), total int64) *mediaProgress {
	return &mediaProgress{fn: fn, total: total, last: -1}
}

func (p *mediaProgress) report(done int64) {
	if p.fn == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	done = min(done, p.total)
	if done > p.last {
		p.last = done
		p.fn(done, p.total)
	}
}

// mediaHTTP is the HTTP client of media transfers: the Client's, without
// an overall timeout (a large file takes long; stalls are caught instead).
func (c *Client) mediaHTTP() *http.Client {
	hc := *c.cfg.httpClient
	hc.Timeout = 0
	return &hc
}

// mediaDo sends one authenticated request. A 401 drops the token so the
// next request fetches a new one.
func (c *Client) mediaDo(ctx context.Context, hc *http.Client, method, u string, hdr http.Header, body io.Reader, n int64) (*http.Response, error) {
	srv := c.server()
	tok, err := c.tokens.get(ctx, srv.httpBase)
	if err != nil {
		if transportErr(err) {
			c.failOver(srv)
		}
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return nil, err
	}
	copyHeader(req.Header, hdr)
	req.Header.Set("Authorization", "Bearer "+tok)
	if body != nil {
		req.ContentLength = n
		if n == 0 {
			req.Body = http.NoBody
		}
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode == http.StatusUnauthorized {
		c.tokens.invalidate(tok)
	}
	return resp, nil
}

func copyHeader(dst, src http.Header) {
	for k, v := range src {
		dst[k] = v
	}
}

func tusHeader(kv ...string) http.Header {
	h := http.Header{"Tus-Resumable": {"1.0.0"}}
	for i := 0; i+1 < len(kv); i += 2 {
		h.Set(kv[i], kv[i+1])
	}
	return h
}

// drain reads a little of a response body so the connection can be reused.
func drain(resp *http.Response) {
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	_ = resp.Body.Close()
}

// mediaRefusal turns a non-success answer into an error (reading its body).
func mediaRefusal(resp *http.Response, what string) error {
	e := errorFromHTTP(resp)
	_ = resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusRequestEntityTooLarge:
		return fmt.Errorf("%s: %w: %w", what, ErrMediaTooLarge, e)
	case http.StatusTooManyRequests:
		return &mediaRetryError{after: retryAfter(resp), err: fmt.Errorf("%s: %w: %w", what, ErrMediaQuota, e)}
	case http.StatusNotFound, http.StatusGone:
		return fmt.Errorf("%s: %w: %w", what, ErrMediaNotFound, e)
	}
	return fmt.Errorf("%s: %w", what, e)
}

// retryAfter reads Retry-After (seconds or an HTTP date); 0 when absent.
func retryAfter(resp *http.Response) time.Duration {
	v := strings.TrimSpace(resp.Header.Get("Retry-After"))
	if v == "" {
		return 0
	}
	if s, err := strconv.ParseInt(v, 10, 64); err == nil && s >= 0 {
		return time.Duration(s) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(time.Until(t), 0)
	}
	return 0
}

// transient: an answer worth retrying after a pause (resuming from the
// server's offset).
func transient(status int) bool {
	return status >= 500 || status == http.StatusRequestTimeout || status == http.StatusLocked || status == http.StatusConflict
}

// stallGuard cancels a request that makes no progress for a while.
type stallGuard struct {
	t *time.Timer
	d time.Duration
}

var errMediaStalled = errors.New("media: transfer stalled")

func newStallGuard(ctx context.Context, d time.Duration) (context.Context, *stallGuard, func()) {
	ctx, cancel := context.WithCancelCause(ctx)
	g := &stallGuard{d: d}
	g.t = time.AfterFunc(d, func() { cancel(errMediaStalled) })
	return ctx, g, func() { g.t.Stop(); cancel(nil) }
}

func (g *stallGuard) tick() { g.t.Reset(g.d) }

// extend gives the request d from now, and from then on.
func (g *stallGuard) extend(d time.Duration) {
	g.d = max(g.d, d)
	g.t.Reset(g.d)
}

// statusErr is an HTTP answer the upload loop decides about.
type statusErr struct {
	code int
	resp *http.Response // body closed
	err  error
}

func (e *statusErr) Error() string { return e.err.Error() }

func (e *statusErr) Unwrap() error { return e.err }

func refused(resp *http.Response, what string) error {
	return &statusErr{code: resp.StatusCode, resp: resp, err: mediaRefusal(resp, what)}
}

// retryableTransport: err is a network failure (or a stall), not our
// context ending or a local failure (reading the file).
func retryableTransport(ctx context.Context, err error) bool {
	if ctx.Err() != nil {
		return false
	}
	if errors.Is(err, ErrMediaSourceChanged) || errors.Is(err, ErrMediaSize) || errors.Is(err, errLocal) ||
		errors.Is(err, errMediaProtocol) || errors.Is(err, ErrMediaDigestRefused) {
		return false
	}
	var apiErr *Error
	if errors.As(err, &apiErr) {
		return apiErr.Retryable
	}
	return true
}

// errLocal marks failures of the local side (the source file).
var errLocal = errors.New("media: local failure")

// errMediaProtocol: the server answered something the protocol does not
// allow; retrying would not help.
var errMediaProtocol = errors.New("media: the server broke the protocol")

func mediaCtxErr(ctx context.Context, last error) error {
	err := context.Cause(ctx)
	if last != nil {
		return fmt.Errorf("media: %w (last error: %w)", err, last)
	}
	return fmt.Errorf("media: %w", err)
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
