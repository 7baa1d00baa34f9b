// Package codetest is an operator's registration-code webhook for tests:
// a real HTTP server that checks every request's signature as the README
// tells operators to, and keeps the codes it would have sent by text or
// mail, so a test can read them as the person would.
package codetest

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/courier-im/courier/node"
	"github.com/courier-im/courier/verification"
	"github.com/courier-im/courier/webhook"
)

// Receiver is the webhook. While FailWith holds a status, every request
// is answered with it and nothing is kept.
type Receiver struct {
	URL      string
	Secret   []byte
	FailWith atomic.Int32
	// Calls counts requests, failed ones included.
	Calls atomic.Int32

	t   testing.TB
	mu  sync.Mutex
	got []verification.WebhookPayload
}

// Start runs a Receiver until the test ends.
func Start(t testing.TB) *Receiver {
	r := &Receiver{t: t, Secret: []byte("operator-secret")}
	srv := httptest.NewServer(r)
	t.Cleanup(srv.Close)
	r.URL = srv.URL
	return r
}

// Verified sets cfg up for verified registration through r.
func (r *Receiver) Verified(cfg *node.Config) {
	cfg.Registration = verification.Config{Mode: verification.ModeVerified, WebhookURL: r.URL, WebhookSecret: string(r.Secret)}
}

func (r *Receiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	r.Calls.Add(1)
	body, _ := io.ReadAll(req.Body)
	ts := req.Header.Get(webhook.HeaderTimestamp)
	if err := webhook.Verify(r.Secret, ts, req.Header.Get(webhook.HeaderSignature), body); err != nil {
		r.t.Errorf("code webhook with a bad signature: %v", err)
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	if sec, err := strconv.ParseInt(ts, 10, 64); err != nil || time.Since(time.Unix(sec, 0)).Abs() > time.Minute {
		r.t.Errorf("code webhook timestamp %q is not now", ts)
	}
	if status := r.FailWith.Load(); status != 0 {
		w.WriteHeader(int(status))
		return
	}
	var p verification.WebhookPayload
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields() // the payload is exactly what is documented
	if err := dec.Decode(&p); err != nil {
		r.t.Errorf("code webhook body %s: %v", body, err)
	}
	r.mu.Lock()
	r.got = append(r.got, p)
	r.mu.Unlock()
}

// Sent is every code received, oldest first.
func (r *Receiver) Sent() []verification.WebhookPayload {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]verification.WebhookPayload(nil), r.got...)
}

// Last is the latest code received for handle; the test fails if none was.
func (r *Receiver) Last(t testing.TB, handle string) verification.WebhookPayload {
	t.Helper()
	got := r.Sent()
	for i := len(got) - 1; i >= 0; i-- {
		if got[i].Handle == handle {
			return got[i]
		}
	}
	t.Fatalf("no code was sent for %s", handle)
	return verification.WebhookPayload{}
}
