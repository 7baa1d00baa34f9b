package gateway

import (
	"fmt"
	"testing"
	"time"
)

func TestKeyedLimiterRefusesPastTheBurstAndSaysWhenToRetry(t *testing.T) {
	l := newKeyedLimiter(Rate{N: 3, Per: 3 * time.Second}, 100)
	now := time.Unix(1000, 0)
	for i := range 3 {
		if ok, _ := l.allow("a", now); !ok {
			t.Fatalf("call %d within the burst refused", i)
		}
	}
	ok, wait := l.allow("a", now)
	if ok || wait != time.Second {
		t.Fatalf("past the burst: allowed=%v retry after %v, want refused and 1s", ok, wait)
	}
	if ok, _ := l.allow("b", now); !ok {
		t.Fatal("another key was refused")
	}
	if ok, _ := l.allow("a", now.Add(time.Second)); !ok {
		t.Fatal("refused after the retry-after passed")
	}
}

func TestKeyedLimiterForgetsIdleKeysAndIsCapped(t *testing.T) {
	const maxKeys = 2000
	l := newKeyedLimiter(Rate{N: 2, Per: time.Minute}, maxKeys)
	now := time.Unix(1000, 0)
	// A flood of distinct addresses, each seen once.
	for i := range 20_000 {
		l.allow(fmt.Sprintf("10.0.%d.%d", i/256, i%256), now)
	}
	if n := l.size(); n > maxKeys {
		t.Fatalf("%d keys remembered, cap %d", n, maxKeys)
	}
	// A minute later every bucket has refilled: the next sweep drops all.
	later := now.Add(time.Minute)
	for i := range 2 * minSweepAt {
		l.allow(fmt.Sprintf("k%d", i), later)
	}
	if n := l.size(); n > 2*minSweepAt {
		t.Fatalf("%d keys after the old ones refilled, want at most %d", n, 2*minSweepAt)
	}
	// An off limiter is nil and allows everything.
	if off := newKeyedLimiter(Off, maxKeys); off != nil {
		t.Fatal("an off rate made a limiter")
	} else if ok, _ := off.allow("x", now); !ok {
		t.Fatal("a nil limiter refused")
	}
}

func TestParseRate(t *testing.T) {
	for in, want := range map[string]Rate{"20/1m": {20, time.Minute}, "5/10s": {5, 10 * time.Second}, "off": Off} {
		got, err := ParseRate(in)
		if err != nil || got != want {
			t.Errorf("ParseRate(%q) = %v, %v; want %v", in, got, err, want)
		}
		if got.String() != in && in != "20/1m" {
			t.Errorf("%v prints as %q, want %q", got, got.String(), in)
		}
	}
	if got, err := ParseRate("32MiB/1m"); err != nil || got != (Rate{32 << 20, time.Minute}) {
		t.Errorf("ParseRate(32MiB/1m) = %v, %v; want %d bytes a minute", got, err, 32<<20)
	}
	for _, bad := range []string{"", "20", "0/1m", "-1/1m", "x/1m", "5/0s", "5/soon", "4GiB/1m", "MiB/1m"} {
		if _, err := ParseRate(bad); err == nil {
			t.Errorf("ParseRate(%q) accepted", bad)
		}
	}
}

func TestIPKeyGroupsAnIPv6SubscriberByItsSlash64(t *testing.T) {
	for in, want := range map[string]string{
		"127.0.0.2": "127.0.0.2", "::ffff:10.1.2.3": "10.1.2.3",
		"2001:db8:1:2:3:4:5:6": "2001:db8:1:2::/64", "2001:db8:1:2::9": "2001:db8:1:2::/64",
	} {
		if got := IPKey(in); got != want {
			t.Errorf("IPKey(%q) = %q, want %q", in, got, want)
		}
	}
}
