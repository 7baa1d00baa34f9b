package verification

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/courier-im/courier/webhook"
)

func TestWebhookSenderRetriesWhatARetryCanFix(t *testing.T) {
	secret := []byte("operator's secret")
	exp := time.Date(2026, 12, 2, 19, 10, 0, 0, time.UTC)
	v := Verification{Handle: "alice", Address: "+15550109999", Code: "012345", ExpiresAt: exp}
	cases := []struct {
		name      string
		failFirst int32
		status    int
		wantCalls int32
		ok        bool
	}{
		{"accepted at once", 0, 0, 1, true},
		{"accepted on the third try", 2, http.StatusServiceUnavailable, 3, true},
		{"throttled, then accepted", 1, http.StatusTooManyRequests, 2, true},
		{"always failing", 99, http.StatusInternalServerError, 3, false},
		{"refused", 99, http.StatusBadRequest, 1, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var calls atomic.Int32
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				body, _ := io.ReadAll(r.Body)
				if err := webhook.Verify(secret, r.Header.Get(webhook.HeaderTimestamp), r.Header.Get(webhook.HeaderSignature), body); err != nil {
					t.Errorf("request does not verify: %v", err)
				}
				var p WebhookPayload
				dec := json.NewDecoder(bytes.NewReader(body))
				dec.DisallowUnknownFields() // the payload is exactly what is documented
				if err := dec.Decode(&p); err != nil {
					t.Errorf("body %s: %v", body, err)
				}
				want := WebhookPayload{Type: "registration_code", Handle: "alice", Address: "+15550109999", Code: "012345", ExpiresAt: exp}
				if p != want {
					t.Errorf("payload %+v, want %+v", p, want)
				}
				if n := calls.Add(1); n <= tc.failFirst {
					w.WriteHeader(tc.status)
				}
			}))
			defer srv.Close()
			s := &Webhook{URL: srv.URL, Secret: secret, Backoff: 5 * time.Millisecond}
			err := s.Send(context.Background(), v)
			if (err == nil) != tc.ok {
				t.Fatalf("Send = %v, want ok=%v", err, tc.ok)
			}
			if err != nil && bytes.Contains([]byte(err.Error()), []byte(v.Code)) {
				t.Fatalf("the error quotes the code: %v", err)
			}
			if got := calls.Load(); got != tc.wantCalls {
				t.Fatalf("%d requests, want %d", got, tc.wantCalls)
			}
		})
	}
}

func TestWebhookSenderStopsWhenTheCallerStopsWaiting(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	defer srv.Close()
	s := &Webhook{URL: srv.URL, Secret: []byte("k"), Attempts: 100, Backoff: 20 * time.Millisecond}
	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := s.Send(ctx, Verification{Handle: "a", Address: "b", Code: "000000"})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Send = %v, want the context's deadline", err)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Fatalf("Send took %v after its context ended", took)
	}
}
