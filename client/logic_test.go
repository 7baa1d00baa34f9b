package client

import (
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"io"

	"github.com/courier-im/courier/protos/courierpb"
)

func TestEndpoints(t *testing.T) {
	tests := []struct {
		in, base, ws string
		err          bool
	}{
		{in: "http://127.0.0.1:8080", base: "http://127.0.0.1:8080", ws: "ws://127.0.0.1:8080/v1/ws"},
		{in: "http://127.0.0.1:8080/", base: "http://127.0.0.1:8080", ws: "ws://127.0.0.1:8080/v1/ws"},
		{in: "https://chat.example.com", base: "https://chat.example.com", ws: "wss://chat.example.com/v1/ws"},
		{in: "ws://127.0.0.1:8080", base: "http://127.0.0.1:8080", ws: "ws://127.0.0.1:8080/v1/ws"},
		{in: "wss://chat.example.com:8443", base: "https://chat.example.com:8443", ws: "wss://chat.example.com:8443/v1/ws"},
		{in: "ws://127.0.0.1:8080/v1/ws", base: "http://127.0.0.1:8080", ws: "ws://127.0.0.1:8080/v1/ws"},
		{in: "wss://h/prefix/v1/ws/", base: "https://h/prefix", ws: "wss://h/prefix/v1/ws"},
		{in: "https://h/prefix/", base: "https://h/prefix", ws: "wss://h/prefix/v1/ws"},
		{in: "HTTP://h:1", base: "http://h:1", ws: "ws://h:1/v1/ws"},
		{in: "127.0.0.1:8080", base: "http://127.0.0.1:8080", ws: "ws://127.0.0.1:8080/v1/ws"},
		{in: "  http://h?x=1#f ", base: "http://h", ws: "ws://h/v1/ws"},
		{in: "", err: true},
		{in: "ftp://h", err: true},
		{in: "http://", err: true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			base, ws, err := endpoints(tt.in)
			if tt.err {
				if err == nil {
					t.Fatalf("endpoints(%q) = %q, %q; want an error", tt.in, base, ws)
				}
				return
			}
			if err != nil {
				t.Fatalf("endpoints(%q): %v", tt.in, err)
			}
			if base != tt.base || ws != tt.ws {
				t.Fatalf("endpoints(%q) = %q, %q; want %q, %q", tt.in, base, ws, tt.base, tt.ws)
			}
		})
	}
}

func TestBackoff(t *testing.T) {
	const lo, hi = 100 * time.Millisecond, 10 * time.Second
	tests := []struct {
		name       string
		attempt    int
		rnd        float64
		minD, maxD time.Duration
	}{
		{"first attempt jitters below min, low", 0, 0, 0, 0},
		{"first attempt jitters below min, high", 0, 0.999, 99 * time.Millisecond, lo},
		{"attempt 1 low", 1, 0, 100 * time.Millisecond, 100 * time.Millisecond},
		{"attempt 1 high", 1, 0.999, 199 * time.Millisecond, 200 * time.Millisecond},
		{"attempt 3 low", 3, 0, 400 * time.Millisecond, 400 * time.Millisecond},
		{"attempt 3 high", 3, 0.999, 799 * time.Millisecond, 800 * time.Millisecond},
		{"capped low", 30, 0, hi / 2, hi / 2},
		{"capped high", 30, 0.999, hi - 20*time.Millisecond, hi},
		{"huge attempt does not overflow", 1000, 0.5, hi / 2, hi},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := backoff{min: lo, max: hi, rnd: func() float64 { return tt.rnd }}
			d := b.delay(tt.attempt)
			if d < tt.minD || d > tt.maxD {
				t.Fatalf("delay(%d) with rnd %v = %v, want in [%v, %v]", tt.attempt, tt.rnd, d, tt.minD, tt.maxD)
			}
		})
	}
	t.Run("random delays stay in bounds", func(t *testing.T) {
		b := backoff{min: lo, max: hi}
		for attempt := 0; attempt < 40; attempt++ {
			for range 100 {
				if d := b.delay(attempt); d < 0 || d > hi {
					t.Fatalf("delay(%d) = %v out of [0, %v]", attempt, d, hi)
				}
			}
		}
	})
}

func TestRecentSet(t *testing.T) {
	k := func(i int) msgKey { return msgKey{from: "u", id: string(rune('a' + i))} }
	tests := []struct {
		name  string
		size  int
		feed  []int
		probe int
		seen  bool
	}{
		{"new key", 3, []int{0, 1}, 2, false},
		{"recent key", 3, []int{0, 1, 2}, 1, true},
		{"evicted after size newer keys", 3, []int{0, 1, 2, 3}, 0, false},
		{"still inside window", 3, []int{0, 1, 2, 3}, 1, true},
		{"repeats do not evict", 2, []int{0, 0, 0, 1}, 0, true},
		{"size one", 1, []int{0, 1}, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRecentSet(tt.size)
			for _, i := range tt.feed {
				r.seen(k(i))
			}
			if got := r.seen(k(tt.probe)); got != tt.seen {
				t.Fatalf("seen(%d) = %v, want %v", tt.probe, got, tt.seen)
			}
			if r.len() > tt.size {
				t.Fatalf("set holds %d keys, more than its size %d", r.len(), tt.size)
			}
		})
	}
	t.Run("sender is part of the key", func(t *testing.T) {
		r := newRecentSet(8)
		r.seen(msgKey{from: "alice", id: "1"})
		if r.seen(msgKey{from: "bob", id: "1"}) {
			t.Fatal("bob's message 1 was taken for alice's")
		}
	})
}

func TestAckBatcher(t *testing.T) {
	type step struct {
		op   string // hand, flush, sent, retract
		seq  uint64
		arm  bool   // hand: want arm
		upTo uint64 // flush: want upTo (0: nothing)
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{"first hand arms, later ones batch", []step{
			{op: "hand", seq: 1, arm: true},
			{op: "hand", seq: 2},
			{op: "hand", seq: 3},
			{op: "flush", upTo: 3},
		}},
		{"nothing new, nothing to ack", []step{
			{op: "hand", seq: 5, arm: true},
			{op: "flush", upTo: 5},
			{op: "sent", seq: 5},
			{op: "flush"},
			{op: "hand", seq: 5},
		}},
		{"rearms after a flush", []step{
			{op: "hand", seq: 1, arm: true},
			{op: "flush", upTo: 1},
			{op: "sent", seq: 1},
			{op: "hand", seq: 2, arm: true},
			{op: "flush", upTo: 2},
		}},
		{"unsent flush is retried by the next one", []step{
			{op: "hand", seq: 1, arm: true},
			{op: "flush", upTo: 1},
			{op: "hand", seq: 2, arm: true},
			{op: "flush", upTo: 2},
		}},
		{"a resume covers handed entries", []step{
			{op: "hand", seq: 7, arm: true},
			{op: "sent", seq: 7},
			{op: "flush"},
		}},
		{"out of order hand keeps the max", []step{
			{op: "hand", seq: 9, arm: true},
			{op: "hand", seq: 4},
			{op: "flush", upTo: 9},
		}},
		{"retract resends", []step{
			{op: "hand", seq: 3, arm: true},
			{op: "flush", upTo: 3},
			{op: "sent", seq: 3},
			{op: "retract"},
			{op: "hand", seq: 0, arm: true},
			{op: "flush", upTo: 3},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var a ackBatcher
			for i, s := range tt.steps {
				switch s.op {
				case "hand":
					if got := a.hand(s.seq); got != s.arm {
						t.Fatalf("step %d: hand(%d) arm = %v, want %v", i, s.seq, got, s.arm)
					}
				case "flush":
					upTo, ok := a.flush()
					if ok != (s.upTo != 0) || upTo != s.upTo {
						t.Fatalf("step %d: flush = %d, %v; want %d", i, upTo, ok, s.upTo)
					}
				case "sent":
					a.sent(s.seq)
				case "retract":
					a.retract()
				}
			}
		})
	}
}

func TestEntryQueue(t *testing.T) {
	q := newEntryQueue(4)
	for i := 1; i <= 4; i++ {
		if !q.push(Entry{Seq: uint64(i)}) {
			t.Fatalf("push %d refused below the bound", i)
		}
	}
	if q.push(Entry{Seq: 5}) {
		t.Fatal("push beyond the bound accepted")
	}
	if q.lowWater() {
		t.Fatal("full queue reports low water")
	}
	for want := uint64(1); want <= 2; want++ {
		e, ok := q.pop()
		if !ok || e.Seq != want {
			t.Fatalf("pop = %d, %v; want %d", e.Seq, ok, want)
		}
	}
	select {
	case <-q.space:
	default:
		t.Fatal("no space signal at half")
	}
	// Interleave to exercise compaction; order must hold.
	next := uint64(5)
	want := uint64(3)
	for range 100 {
		for q.push(Entry{Seq: next}) {
			next++
		}
		for range 3 {
			e, ok := q.pop()
			if !ok || e.Seq != want {
				t.Fatalf("pop = %d, %v; want %d", e.Seq, ok, want)
			}
			want++
		}
	}
	if cap(q.items) > 16 {
		t.Fatalf("queue grew to capacity %d for a bound of 4", cap(q.items))
	}
}

func TestErrorFromHTTP(t *testing.T) {
	tests := []struct {
		status    int
		body      string
		code      courierpb.ErrorCode
		retryable bool
	}{
		{409, `{"code":"HANDLE_TAKEN","message":"handle alice is taken"}`, courierpb.ErrorCode_HANDLE_TAKEN, false},
		{401, `{"code":"TOKEN_EXPIRED","message":"expired"}`, courierpb.ErrorCode_TOKEN_EXPIRED, false},
		{503, `{"code":"UNAVAILABLE","message":"storage"}`, courierpb.ErrorCode_UNAVAILABLE, true},
		{502, `<html>bad gateway</html>`, courierpb.ErrorCode_UNAVAILABLE, true},
		{404, ``, courierpb.ErrorCode_NOT_FOUND, false},
		{500, `{"code":"INTERNAL","message":"boom"}`, courierpb.ErrorCode_INTERNAL, false},
	}
	for _, tt := range tests {
		t.Run(tt.code.String(), func(t *testing.T) {
			e := errorFromHTTP(&http.Response{StatusCode: tt.status, Body: io.NopCloser(strings.NewReader(tt.body))})
			if e.Code != tt.code || e.Retryable != tt.retryable || e.HTTPStatus != tt.status {
				t.Fatalf("got %+v; want code %v retryable %v", e, tt.code, tt.retryable)
			}
		})
	}
}

func TestRefreshAfter(t *testing.T) {
	tests := []struct{ ttl, want time.Duration }{
		{15 * time.Minute, 14 * time.Minute},
		{2 * time.Minute, 96 * time.Second},
		{10 * time.Second, 5 * time.Second},
		{3 * time.Second, 0},
	}
	for _, tt := range tests {
		if got := refreshAfter(tt.ttl); got != tt.want {
			t.Errorf("refreshAfter(%v) = %v, want %v", tt.ttl, got, tt.want)
		}
	}
}

func TestValidateSend(t *testing.T) {
	long := strings.Repeat("x", 129)
	tests := []struct {
		name string
		s    *courierpb.Send
		ok   bool
	}{
		{"ok", &courierpb.Send{ToUserId: "u", ClientMsgId: "m", Ciphertext: []byte("x")}, true},
		{"per device only", &courierpb.Send{ToUserId: "u", ClientMsgId: "m", PerDevice: []*courierpb.DeviceCiphertext{{DeviceId: 1, Ciphertext: []byte("x")}}}, true},
		{"no recipient", &courierpb.Send{ClientMsgId: "m", Ciphertext: []byte("x")}, false},
		{"no ciphertext", &courierpb.Send{ToUserId: "u", ClientMsgId: "m"}, false},
		{"long id", &courierpb.Send{ToUserId: "u", ClientMsgId: long, Ciphertext: []byte("x")}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := validateSend(tt.s)
			if (err == nil) != tt.ok {
				t.Fatalf("validateSend = %v, want ok=%v", err, tt.ok)
			}
			if err != nil && !IsCode(err, courierpb.ErrorCode_INVALID_ARGUMENT) {
				t.Fatalf("error %v is not INVALID_ARGUMENT", err)
			}
		})
	}
}

func TestTooLargeMessages(t *testing.T) {
	for _, tt := range []struct {
		size, limit int64
		closed      bool
		want        string
	}{
		{300 << 10, 256 << 10, false, "message is 300 KiB; the server takes at most 256 KiB per frame (send large files as media)"},
		{256<<10 + 1, 256 << 10, false, "message is 257 KiB; the server takes at most 256 KiB per frame (send large files as media)"},
		{1900 << 10, 1 << 20, true, "message is 1.9 MiB; the server takes at most 1.0 MiB per frame (send large files as media)"},
		{1900 << 10, 0, true, "message is 1.9 MiB; the server closed the connection rather than read a frame that large (send large files as media)"},
		{5000, 0, false, "message is 5 KiB; the server refused it as too large for one frame (send large files as media)"},
		{900, 512, false, "message is 900 bytes; the server takes at most 512 bytes per frame (send large files as media)"},
	} {
		err := tooLarge(tt.size, tt.limit, tt.closed)
		if err.Message != tt.want || !IsCode(err, courierpb.ErrorCode_TOO_LARGE) || !errors.Is(err, ErrTooLarge) {
			t.Errorf("tooLarge(%d, %d, %v) = %v; want %q", tt.size, tt.limit, tt.closed, err, tt.want)
		}
	}
	for msg, want := range map[string]int64{
		"frame is 263256 bytes, limit 262144": 262144,
		"limit 1":                             1,
		"too large":                           0,
		"frame is 5 bytes, limit ":            0,
		"limit -3":                            0,
	} {
		if got := limitFromMessage(msg); got != want {
			t.Errorf("limitFromMessage(%q) = %d; want %d", msg, got, want)
		}
	}
}

// TestNotifierNeverBlocks posts many events to a handler that is stuck:
// post returns at once, the queue stays bounded and keeps the states
// alternating, and close stops the goroutine once the handler returns.
func TestNotifierNeverBlocks(t *testing.T) {
	release := make(chan struct{})
	got := make(chan ConnEvent, 1000)
	n := startNotifier(func(e ConnEvent) {
		<-release
		got <- e
	})
	for i := range 1000 {
		done := make(chan struct{})
		go func() {
			n.post(ConnEvent{State: ConnState(i%2 + 1)})
			close(done)
		}()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatal("post blocked")
		}
	}
	n.mu.Lock()
	queued := len(n.queue)
	n.mu.Unlock()
	if queued > notifierQueue {
		t.Fatalf("%d events queued; want at most %d", queued, notifierQueue)
	}
	close(release)
	var last ConnState
	for {
		select {
		case e := <-got:
			if e.State == last {
				t.Fatalf("two %v events in a row", e.State)
			}
			last = e.State
			continue
		case <-time.After(200 * time.Millisecond):
		}
		break
	}
	if last != Reconnected {
		t.Fatalf("last event %v; want the last one posted (Reconnected)", last)
	}
	n.close()
	n.close()
	var nilNotifier *notifier
	nilNotifier.post(ConnEvent{State: Disconnected}) // no handler: dropped
	nilNotifier.close()
}
