package gateway

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
	"time"
)

func TestKeyedLimiterTakesACostAtOnceOrNothing(t *testing.T) {
	l := newKeyedLimiter(Rate{N: 10, Per: 10 * time.Second}, 100)
	now := time.Unix(1000, 0)
	if ok, _ := l.allowN("a", 7, now); !ok {
		t.Fatal("7 of a burst of 10 refused")
	}
	// 3 left: a request for 4 takes nothing and waits for the one missing.
	ok, wait := l.allowN("a", 4, now)
	if ok || wait != time.Second {
		t.Fatalf("4 with 3 left: allowed=%v retry after %v, want refused and 1s", ok, wait)
	}
	if ok, _ := l.allowN("a", 3, now); !ok {
		t.Fatal("the refused request took tokens: 3 with 3 left refused")
	}
	if l.fits(11) || !l.fits(10) {
		t.Fatal("fits: a request above the burst must not fit, one equal to it must")
	}
	if got := l.refusals(); got != 1 {
		t.Fatalf("refusals = %d, want 1", got)
	}
}

func TestKeyedLimiterLogsWhenAKeyStartsBeingRefusedNotEveryRefusal(t *testing.T) {
	var buf bytes.Buffer
	l := newKeyedLimiter(Rate{N: 1, Per: time.Second}, 100)
	l.name, l.log = "send/user", slog.New(slog.NewTextHandler(&buf, nil))
	now := time.Unix(1000, 0)
	l.allow("flooder", now)
	for range 100 {
		l.allow("flooder", now)
	}
	if n := strings.Count(buf.String(), "rate limit reached"); n != 1 {
		t.Fatalf("a flood of 100 refusals logged %d lines, want 1:\n%s", n, buf.String())
	}
	if !strings.Contains(buf.String(), "limit=send/user") || !strings.Contains(buf.String(), "key=flooder") {
		t.Fatalf("log line does not name the limit and key: %s", buf.String())
	}
	// Allowed again, then refused again: a new episode, a new line.
	l.allow("flooder", now.Add(time.Second))
	l.allow("flooder", now.Add(time.Second))
	if n := strings.Count(buf.String(), "rate limit reached"); n != 2 {
		t.Fatalf("second episode: %d lines, want 2", n)
	}
	if got := l.refusals(); got != 101 {
		t.Fatalf("refusals = %d, want 101", got)
	}
}

func TestActionLimitsCountUserAndAddressSeparately(t *testing.T) {
	l := Limits{}.WithDefaults()
	l.Actions[ActionSend] = ActionLimit{PerUser: Rate{2, time.Hour}, PerIP: Rate{3, time.Hour}}
	a := newActionLimiters(l)
	now := time.Unix(1000, 0)
	for _, tc := range []struct {
		user, ip string
		want     string // "" allowed, else a substring of the refusal
	}{
		{"u1", "10.0.0.1", ""},
		{"u1", "10.0.0.1", ""},
		{"u1", "10.0.0.1", "from this account"},
		{"u2", "10.0.0.1", ""},
		{"u3", "10.0.0.1", "from this address"},
		{"u3", "10.0.0.2", ""},
		// Exempt address (loopback): only the user's own bucket counts.
		{"u4", "", ""}, {"u4", "", ""}, {"u4", "", "from this account"},
	} {
		r := a.allowAction(ActionSend, tc.user, tc.ip, 1, now)
		switch {
		case tc.want == "" && r != nil:
			t.Fatalf("%s from %q refused: %s", tc.user, tc.ip, r.msg)
		case tc.want != "" && (r == nil || !strings.Contains(r.msg, tc.want) || r.wait <= 0):
			t.Fatalf("%s from %q: %+v, want a refusal %q with a wait", tc.user, tc.ip, r, tc.want)
		}
	}
	if r := a.allowAction(ActionSend, "u9", "10.0.0.9", 3, now); r == nil || r.wait != 0 || !strings.Contains(r.msg, "at most 2") {
		t.Fatalf("a cost above the user burst: %+v, want a final refusal naming 2", r)
	}
}

func TestRateLimitedFrameSaysWhenToRetry(t *testing.T) {
	f := rateLimitedFrame(9, "too many messages from this account", 1500*time.Millisecond)
	e := f.GetError()
	if f.ReqId != 9 || !e.Retryable || e.RetryAfterMs != 1501 || !strings.HasSuffix(e.Message, "retry in 2s") {
		t.Fatalf("got %+v", f)
	}
	if e := rateLimitedFrame(9, "never", 0).GetError(); e.Retryable || e.RetryAfterMs != 0 {
		t.Fatalf("a request that can never pass: %+v, want not retryable and no wait", e)
	}
}

func TestARedactedLimiterLogsAHashNotTheKey(t *testing.T) {
	var buf bytes.Buffer
	l := newKeyedLimiter(Rate{N: 1, Per: time.Hour}, 100)
	l.name, l.log, l.redact = "register-code/address", slog.New(slog.NewTextHandler(&buf, nil)), true
	now := time.Unix(1000, 0)
	l.allow("+15550109999", now)
	l.allow("+15550109999", now)
	if strings.Contains(buf.String(), "15550109999") || !strings.Contains(buf.String(), "key=sha256:") {
		t.Fatalf("log line: %s; want a hash of the address, never the address", buf.String())
	}
}
