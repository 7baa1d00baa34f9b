package webhook_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/courier-im/courier/webhook"
)

func TestVerifyRejectsForgeries(t *testing.T) {
	secret := []byte("k")
	body := []byte(`{"type":"inbox"}`)
	good := "sha256=" + webhook.Sign(secret, "100", body)
	cases := []struct {
		name, ts, header string
		body             []byte
		ok               bool
	}{
		{"genuine", "100", good, body, true},
		{"other body", "100", good, []byte(`{"type":"x"}`), false},
		{"other timestamp", "101", good, body, false},
		{"other key", "100", "sha256=" + webhook.Sign([]byte("j"), "100", body), body, false},
		{"no prefix", "100", webhook.Sign(secret, "100", body), body, false},
		{"not hex", "100", "sha256=zz", body, false},
	}
	for _, tc := range cases {
		if err := webhook.Verify(secret, tc.ts, tc.header, tc.body); (err == nil) != tc.ok {
			t.Errorf("%s: err = %v, want ok=%v", tc.name, err, tc.ok)
		}
	}
}

// TestPostSignsAndSaysWhetherARetryCanHelp: every request verifies with
// the receiver's copy of the secret, and a receiver's answer is success
// (2xx), a refusal no retry fixes (4xx but 408 and 429) or a failure worth
// retrying.
func TestPostSignsAndSaysWhetherARetryCanHelp(t *testing.T) {
	secret := []byte("shared")
	at := time.Unix(1_800_000_000, 0)
	cases := []struct {
		status    int
		ok        bool
		permanent bool
	}{
		{http.StatusOK, true, false},
		{http.StatusNoContent, true, false},
		{http.StatusBadRequest, false, true},
		{http.StatusUnauthorized, false, true},
		{http.StatusRequestTimeout, false, false},
		{http.StatusTooManyRequests, false, false},
		{http.StatusInternalServerError, false, false},
		{http.StatusBadGateway, false, false},
	}
	for _, tc := range cases {
		t.Run(http.StatusText(tc.status), func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				body, _ := io.ReadAll(r.Body)
				if err := webhook.Verify(secret, r.Header.Get(webhook.HeaderTimestamp), r.Header.Get(webhook.HeaderSignature), body); err != nil {
					t.Errorf("request does not verify: %v", err)
				}
				if got := r.Header.Get(webhook.HeaderTimestamp); got != "1800000000" {
					t.Errorf("timestamp %q, want the Unix seconds of Now", got)
				}
				if string(body) != `{"a":1}` {
					t.Errorf("body %q", body)
				}
				w.WriteHeader(tc.status)
			}))
			defer srv.Close()
			ep := webhook.Endpoint{URL: srv.URL, Secret: secret, Now: func() time.Time { return at }}
			err := ep.Post(context.Background(), []byte(`{"a":1}`))
			if (err == nil) != tc.ok {
				t.Fatalf("err = %v, want ok=%v", err, tc.ok)
			}
			if got := errors.Is(err, webhook.ErrPermanent); got != tc.permanent {
				t.Fatalf("errors.Is(%v, ErrPermanent) = %v, want %v", err, got, tc.permanent)
			}
			var se *webhook.StatusError
			if !tc.ok && (!errors.As(err, &se) || se.Code != tc.status) {
				t.Fatalf("err = %v, want a *StatusError of %d", err, tc.status)
			}
		})
	}
}

func TestPostToAReceiverThatIsNotThereIsWorthRetrying(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	url := srv.URL
	srv.Close()
	ep := webhook.Endpoint{URL: url, Secret: []byte("k")}
	err := ep.Post(context.Background(), []byte(`{}`))
	if err == nil || errors.Is(err, webhook.ErrPermanent) {
		t.Fatalf("err = %v, want a failure a retry may fix", err)
	}
	bad := webhook.Endpoint{URL: "http://[::1", Secret: []byte("k")}
	if err := bad.Post(context.Background(), []byte(`{}`)); !errors.Is(err, webhook.ErrPermanent) {
		t.Fatalf("malformed URL: err = %v, want ErrPermanent", err)
	}
}
