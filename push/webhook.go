package push

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"
)

// Headers of a webhook request. The signature is
// hex(HMAC-SHA256(secret, timestamp + "." + body)), so a receiver can reject
// replays older than it tolerates as well as forgeries.
const (
	HeaderSignature = "X-Courier-Signature"
	HeaderTimestamp = "X-Courier-Timestamp"
)

// WebhookPayload is the JSON body a webhook receives. It says which device
// has something to fetch, and nothing else: no content, no sender.
type WebhookPayload struct {
	Type     string `json:"type"` // always "inbox"
	Token    string `json:"token"`
	UserID   string `json:"user_id"`
	DeviceID uint32 `json:"device_id"`
	AtMs     int64  `json:"at_ms"`
}

// Webhook posts notifications as JSON to a URL, HMAC-signed.
type Webhook struct {
	URL    string
	Secret []byte
	Client *http.Client // default: 10 s timeout
	Now    func() time.Time
}

// Send implements Provider. 2xx is success; 4xx other than 408 and 429 is
// permanent; anything else is retried by the Dispatcher.
func (w *Webhook) Send(ctx context.Context, n Notification) error {
	body, err := json.Marshal(WebhookPayload{Type: "inbox", Token: n.Token, UserID: n.UserID, DeviceID: n.DeviceID, AtMs: n.At.UnixMilli()})
	if err != nil {
		return fmt.Errorf("webhook: encode: %w", err)
	}
	now := time.Now
	if w.Now != nil {
		now = w.Now
	}
	ts := strconv.FormatInt(now().Unix(), 10)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.URL, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("webhook %s: %w: %w", w.URL, ErrPermanent, err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(HeaderTimestamp, ts)
	req.Header.Set(HeaderSignature, "sha256="+Sign(w.Secret, ts, body))
	hc := w.Client
	if hc == nil {
		hc = &http.Client{Timeout: 10 * time.Second}
	}
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("webhook %s: %w", w.URL, err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	switch {
	case resp.StatusCode >= 200 && resp.StatusCode < 300:
		return nil
	case resp.StatusCode >= 400 && resp.StatusCode < 500 && resp.StatusCode != http.StatusRequestTimeout && resp.StatusCode != http.StatusTooManyRequests:
		return fmt.Errorf("webhook %s: %w: %s", w.URL, ErrPermanent, resp.Status)
	default:
		return fmt.Errorf("webhook %s: %s", w.URL, resp.Status)
	}
}

// Sign is the webhook signature of body sent at timestamp ts (Unix seconds).
func Sign(secret []byte, ts string, body []byte) string {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(ts))
	m.Write([]byte{'.'})
	m.Write(body)
	return hex.EncodeToString(m.Sum(nil))
}

// Verify checks a webhook request's signature header against body; a
// receiver written in Go can use it as is.
func Verify(secret []byte, ts, header string, body []byte) error {
	const prefix = "sha256="
	if len(header) <= len(prefix) || header[:len(prefix)] != prefix {
		return errors.New("push: signature header must be sha256=<hex>")
	}
	want, err := hex.DecodeString(Sign(secret, ts, body))
	if err != nil {
		return err
	}
	got, err := hex.DecodeString(header[len(prefix):])
	if err != nil || !hmac.Equal(got, want) {
		return errors.New("push: bad signature")
	}
	return nil
}
