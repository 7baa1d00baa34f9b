package push_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/courier-im/courier/internal/lockedbuf"
	"github.com/courier-im/courier/push"
)

// receiver is a webhook endpoint that checks every request's signature and
// fails the first failFirst requests. When hold is set, every request waits
// until it is closed before it is answered.
type receiver struct {
	t         *testing.T
	secret    []byte
	failFirst int32
	status    int // what a failing request answers
	hold      chan struct{}

	calls atomic.Int32
	mu    sync.Mutex
	got   []push.WebhookPayload
	raw   []string
}

func (r *receiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	if r.hold != nil {
		select {
		case <-r.hold:
		case <-req.Context().Done():
			return
		}
	}
	body, _ := io.ReadAll(req.Body)
	if err := push.Verify(r.secret, req.Header.Get(push.HeaderTimestamp), req.Header.Get(push.HeaderSignature), body); err != nil {
		r.t.Errorf("webhook request with a bad signature: %v", err)
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	if n := r.calls.Add(1); n <= r.failFirst {
		w.WriteHeader(r.status)
		return
	}
	var p push.WebhookPayload
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields() // the payload is exactly what is documented
	if err := dec.Decode(&p); err != nil {
		r.t.Errorf("webhook body %q: %v", body, err)
	}
	r.mu.Lock()
	r.got = append(r.got, p)
	r.raw = append(r.raw, string(body))
	r.mu.Unlock()
}

func (r *receiver) delivered() []push.WebhookPayload {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]push.WebhookPayload(nil), r.got...)
}

func newDispatcher(t *testing.T, url string, secret []byte, attempts int, dead io.Writer) *push.Dispatcher {
	t.Helper()
	d, err := push.NewDispatcher(push.DispatcherConfig{
		Provider:   &push.Webhook{URL: url, Secret: secret},
		Attempts:   attempts,
		Backoff:    20 * time.Millisecond,
		MaxBackoff: 100 * time.Millisecond,
		DeadLetter: dead,
		Logger:     slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Close(context.Background()) })
	return d
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestWebhookRetriesUntilTheReceiverAccepts(t *testing.T) {
	cases := []struct {
		name   string
		status int
	}{
		{"server errors", http.StatusInternalServerError},
		{"throttled", http.StatusTooManyRequests},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			secret := []byte("webhook-secret")
			rcv := &receiver{t: t, secret: secret, failFirst: 3, status: tc.status}
			srv := httptest.NewServer(rcv)
			defer srv.Close()
			d := newDispatcher(t, srv.URL, secret, 5, nil)

			at := time.UnixMilli(1_700_000_000_000)
			if !d.Enqueue(push.Notification{Token: "tok-1", UserID: "u1", DeviceID: 2, At: at}) {
				t.Fatal("first notification not queued")
			}
			eventually(t, "the push to arrive", func() bool { return len(rcv.delivered()) == 1 })
			if got := rcv.calls.Load(); got != 4 {
				t.Fatalf("receiver saw %d requests, want 3 failures + 1 success", got)
			}
			want := push.WebhookPayload{Type: "inbox", Token: "tok-1", UserID: "u1", DeviceID: 2, AtMs: at.UnixMilli()}
			if got := rcv.delivered()[0]; got != want {
				t.Fatalf("payload %+v, want %+v", got, want)
			}
			eventually(t, "the queue to drain", func() bool { return d.Pending() == 0 })
		})
	}
}

func TestManyNotificationsForOneDeviceCollapseIntoOne(t *testing.T) {
	secret := []byte("s")
	// The receiver answers nothing until every notification is enqueued: a
	// push delivered in the middle would rightly start a new offline period
	// and let the next Enqueue through.
	rcv := &receiver{t: t, secret: secret, hold: make(chan struct{})}
	srv := httptest.NewServer(rcv)
	defer srv.Close()
	// Attempts to spare: under a loaded make test a local POST can fail
	// transiently, which is not what this test is about; what was given up
	// on is logged if it fails anyway.
	dead := &lockedbuf.Buffer{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("dead letters: %s", dead.String())
		}
	})
	d := newDispatcher(t, srv.URL, secret, 10, dead)
	queued := 0
	for range 50 {
		if d.Enqueue(push.Notification{Token: "a", UserID: "u", DeviceID: 1}) {
			queued++
		}
	}
	if !d.Enqueue(push.Notification{Token: "b", UserID: "u", DeviceID: 2}) {
		t.Fatal("another device's notification was collapsed into the first one's")
	}
	if queued != 1 || d.Pending() != 2 {
		t.Fatalf("%d of 50 notifications for one device queued, %d pending; want 1 queued, 2 pending", queued, d.Pending())
	}
	close(rcv.hold)
	eventually(t, "two pushes", func() bool { return len(rcv.delivered()) == 2 })
	eventually(t, "the queue to drain", func() bool { return d.Pending() == 0 })
	if n := len(rcv.delivered()); n != 2 {
		t.Fatalf("%d pushes delivered, want exactly one per device", n)
	}
	// Delivered: the next offline period may push again.
	if !d.Enqueue(push.Notification{Token: "a", UserID: "u", DeviceID: 1}) {
		t.Fatal("a device whose push was delivered cannot be pushed again")
	}
	eventually(t, "the third push", func() bool { return len(rcv.delivered()) == 3 })
}

func TestCancelledNotificationIsNeverSent(t *testing.T) {
	secret := []byte("s")
	rcv := &receiver{t: t, secret: secret, failFirst: 1000, status: http.StatusServiceUnavailable}
	srv := httptest.NewServer(rcv)
	defer srv.Close()
	d := newDispatcher(t, srv.URL, secret, 100, nil)
	d.Enqueue(push.Notification{Token: "a", UserID: "u", DeviceID: 1})
	eventually(t, "a first failed attempt", func() bool { return rcv.calls.Load() >= 1 })
	if !d.Cancel("u", 1) {
		t.Fatal("nothing pending to cancel")
	}
	before := rcv.calls.Load()
	time.Sleep(300 * time.Millisecond) // several backoff periods
	if after := rcv.calls.Load(); after > before+1 {
		t.Fatalf("%d attempts after the device connected", after-before)
	}
	if d.Pending() != 0 {
		t.Fatal("cancelled push still pending")
	}
}

func TestGivenUpPushGoesToTheDeadLetterLog(t *testing.T) {
	cases := []struct {
		name     string
		status   int
		attempts int32 // requests the receiver sees before the dispatcher gives up
	}{
		{"retryable until attempts run out", http.StatusBadGateway, 3},
		{"permanent refusal is not retried", http.StatusGone, 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			secret := []byte("s")
			rcv := &receiver{t: t, secret: secret, failFirst: 1000, status: tc.status}
			srv := httptest.NewServer(rcv)
			defer srv.Close()
			var dead lockedbuf.Buffer
			d := newDispatcher(t, srv.URL, secret, 3, &dead)
			d.Enqueue(push.Notification{Token: "a", UserID: "u7", DeviceID: 3})
			eventually(t, "the dead letter", func() bool { return strings.Contains(dead.String(), "\n") })
			var dl push.DeadLetter
			if err := json.Unmarshal([]byte(dead.String()), &dl); err != nil {
				t.Fatalf("dead letter %q: %v", dead.String(), err)
			}
			if dl.UserID != "u7" || dl.DeviceID != 3 || dl.Attempts != int(tc.attempts) || dl.Error == "" {
				t.Fatalf("dead letter %+v", dl)
			}
			if got := rcv.calls.Load(); got != tc.attempts {
				t.Fatalf("receiver saw %d attempts, want %d", got, tc.attempts)
			}
		})
	}
}

func TestACallPushIsNeverSwallowedByAPendingInboxPush(t *testing.T) {
	secret := []byte("s")
	rcv := &receiver{t: t, secret: secret, hold: make(chan struct{})}
	srv := httptest.NewServer(rcv)
	defer srv.Close()
	d := newDispatcher(t, srv.URL, secret, 10, nil)
	if !d.Enqueue(push.Notification{Token: "a", UserID: "u", DeviceID: 1}) {
		t.Fatal("inbox push not queued")
	}
	if !d.Enqueue(push.Notification{Token: "a", UserID: "u", DeviceID: 1, Call: true, CallID: "call-1"}) {
		t.Fatal("a call push was collapsed into the pending inbox push: the phone would never ring")
	}
	if d.CancelCall("u", 1, "another-call") {
		t.Fatal("cancelling another call's push dropped this one")
	}
	close(rcv.hold)
	eventually(t, "both pushes", func() bool { return len(rcv.delivered()) == 2 })
	var call *push.WebhookPayload
	for _, p := range rcv.delivered() {
		if p.Type == "call" {
			call = &p
		}
	}
	if call == nil || call.Priority != "high" || call.CallID != "call-1" {
		t.Fatalf("pushes %+v: want one of type call, priority high, call_id call-1", rcv.delivered())
	}
}

func TestAnEndedCallsPushIsNeverSent(t *testing.T) {
	secret := []byte("s")
	rcv := &receiver{t: t, secret: secret, failFirst: 1000, status: http.StatusServiceUnavailable}
	srv := httptest.NewServer(rcv)
	defer srv.Close()
	d := newDispatcher(t, srv.URL, secret, 100, nil)
	d.Enqueue(push.Notification{Token: "a", UserID: "u", DeviceID: 1, Call: true, CallID: "c"})
	eventually(t, "a first failed attempt", func() bool { return rcv.calls.Load() >= 1 })
	if !d.CancelCall("u", 1, "c") {
		t.Fatal("the call push was not pending")
	}
	if d.Pending() != 0 {
		t.Fatal("cancelled call push still pending")
	}
}
