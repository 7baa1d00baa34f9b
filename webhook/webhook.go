// Package webhook posts HMAC-signed JSON to an operator's HTTP endpoint.
// Push notifications (package push) and registration codes (package
// verification) leave the server this way, signed alike, so a receiver
// checks both with the same few lines (Verify).
//
// A request carries its body, the time it was signed and the signature:
//
//	X-Courier-Timestamp: <Unix seconds>
//	X-Courier-Signature: sha256=hex(HMAC-SHA256(secret, timestamp + "." + body))
//
// The timestamp is inside the signature, so a receiver can refuse replays
// older than it tolerates as well as forgeries.
package webhook

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strconv"
	"time"
)

// Headers of a webhook request.
const (
	HeaderSignature = "X-Courier-Signature"
	HeaderTimestamp = "X-Courier-Timestamp"
)

// ErrPermanent marks a failure that sending the same request again cannot
// fix: the receiver refused it itself (a 4xx other than 408 and 429), or
// the request cannot be made at all (a malformed URL).
var ErrPermanent = errors.New("permanent webhook failure")

// DefaultTimeout bounds one request when Endpoint.Client is nil.
const DefaultTimeout = 10 * time.Second

// Endpoint is a receiver: where requests go and the secret they are signed
// with.
type Endpoint struct {
	URL    string
	Secret []byte
	// Client sends the requests (default: one with DefaultTimeout).
	Client *http.Client
	// Now stamps requests (default time.Now).
	Now func() time.Time
}

// StatusError is a receiver's non-2xx answer.
type StatusError struct {
	URL    string
	Status string // "503 Service Unavailable"
	Code   int
}

func (e *StatusError) Error() string { return "webhook " + e.URL + ": " + e.Status }

// Unwrap makes errors.Is(err, ErrPermanent) true for a refusal a retry
// cannot fix.
func (e *StatusError) Unwrap() error {
	if e.Code >= 400 && e.Code < 500 && e.Code != http.StatusRequestTimeout && e.Code != http.StatusTooManyRequests {
		return ErrPermanent
	}
	return nil
}

// Post sends body (JSON) to the endpoint, signed at the current time, once.
// A 2xx answer is success; any other is a *StatusError; a failure to reach
// the receiver is returned as the HTTP client reports it.
func (e *Endpoint) Post(ctx context.Context, body []byte) error {
	now := time.Now
	if e.Now != nil {
		now = e.Now
	}
	ts := strconv.FormatInt(now().Unix(), 10)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, e.URL, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("webhook %s: %w: %w", e.URL, ErrPermanent, err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(HeaderTimestamp, ts)
	req.Header.Set(HeaderSignature, "sha256="+Sign(e.Secret, ts, body))
	hc := e.Client
	if hc == nil {
		hc = &http.Client{Timeout: DefaultTimeout}
	}
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("webhook %s: %w", e.URL, err)
	}
	defer resp.Body.Close()
	// Read a little of the answer so the connection can be reused; a
	// receiver's body is not ours to log.
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return nil
	}
	return &StatusError{URL: e.URL, Status: resp.Status, Code: resp.StatusCode}
}

// Sign is the signature of body sent at timestamp ts (Unix seconds), as
// hex; the header carries it as "sha256=" + Sign(...).
func Sign(secret []byte, ts string, body []byte) string {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(ts))
	m.Write([]byte{'.'})
	m.Write(body)
	return hex.EncodeToString(m.Sum(nil))
}

// Verify checks a request's signature header against its timestamp header
// and body, in constant time; a receiver written in Go can use it as is.
// It does not judge the timestamp's age: that tolerance is the receiver's.
func Verify(secret []byte, ts, header string, body []byte) error {
	const prefix = "sha256="
	if len(header) <= len(prefix) || header[:len(prefix)] != prefix {
		return errors.New("webhook: signature header must be sha256=<hex>")
	}
	want, err := hex.DecodeString(Sign(secret, ts, body))
	if err != nil {
		return err
	}
	got, err := hex.DecodeString(header[len(prefix):])
	if err != nil || !hmac.Equal(got, want) {
		return errors.New("webhook: bad signature")
	}
	return nil
}

// Backoff is the wait before the next try after attempt (1, 2, ...) failed:
// base doubled per failed attempt, capped at limit, with ±20% jitter so
// senders that failed together do not retry together.
func Backoff(base, limit time.Duration, attempt int) time.Duration {
	w := base
	for i := 1; i < attempt && w < limit; i++ {
		w *= 2
	}
	w = min(w, limit)
	return w - w/5 + time.Duration(rand.Int64N(int64(w/5)*2+1))
}
