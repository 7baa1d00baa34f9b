package verification

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

// outbox is a Sender that keeps what it was given: the person's phone.
type outbox struct {
	mu   sync.Mutex
	sent []Verification
	err  error
}

func (o *outbox) Send(_ context.Context, v Verification) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.err != nil {
		return o.err
	}
	o.sent = append(o.sent, v)
	return nil
}

func (o *outbox) last(t *testing.T) Verification {
	t.Helper()
	o.mu.Lock()
	defer o.mu.Unlock()
	if len(o.sent) == 0 {
		t.Fatal("no code was sent")
	}
	return o.sent[len(o.sent)-1]
}

// clock is a Service's time, moved by hand.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func newService(t *testing.T, key string, cfg Config) (*Service, *outbox, *clock) {
	t.Helper()
	box := &outbox{}
	cfg.Mode, cfg.Sender = ModeVerified, box
	s, err := New(cfg, []byte(strings.Repeat(key, 32)))
	if err != nil {
		t.Fatal(err)
	}
	c := &clock{t: time.Date(2026, 12, 2, 19, 0, 0, 0, time.UTC)}
	s.now = c.now
	return s, box, c
}

func TestCheckAcceptsOnlyTheRightCodeForTheSameHandleBeforeItExpires(t *testing.T) {
	cases := []struct {
		name   string
		mutate func(tok, handle, code string, c *clock, other *Service) (string, string, string, *Service)
		want   error
	}{
		{"right code", nil, nil},
		{"wrong code", func(tok, h, code string, _ *clock, _ *Service) (string, string, string, *Service) {
			return tok, h, otherCode(code), nil
		}, ErrWrongCode},
		{"code with a space", func(tok, h, code string, _ *clock, _ *Service) (string, string, string, *Service) {
			return tok, h, code + " ", nil
		}, ErrWrongCode},
		{"another handle", func(tok, _, code string, _ *clock, _ *Service) (string, string, string, *Service) {
			return tok, "mallory", code, nil
		}, ErrInvalid},
		{"the handle's other spelling", func(tok, _, code string, _ *clock, _ *Service) (string, string, string, *Service) {
			return tok, "Alice", code, nil
		}, ErrInvalid},
		{"another server's key", func(tok, h, code string, _ *clock, other *Service) (string, string, string, *Service) {
			return tok, h, code, other
		}, ErrInvalid},
		{"later expiry written in", func(tok, h, code string, _ *clock, _ *Service) (string, string, string, *Service) {
			return flip(t, tok, 1+nonceLen+7), h, code, nil
		}, ErrInvalid},
		{"other nonce written in", func(tok, h, code string, _ *clock, _ *Service) (string, string, string, *Service) {
			return flip(t, tok, 1), h, code, nil
		}, ErrInvalid},
		{"code hash written in", func(tok, h, code string, _ *clock, _ *Service) (string, string, string, *Service) {
			return flip(t, tok, payloadLen-1), h, code, nil
		}, ErrInvalid},
		{"truncated", func(tok, h, code string, _ *clock, _ *Service) (string, string, string, *Service) {
			return tok[:len(tok)-1], h, code, nil
		}, ErrInvalid},
		{"not base64", func(_, h, code string, _ *clock, _ *Service) (string, string, string, *Service) {
			return strings.Repeat("!", 119), h, code, nil
		}, ErrInvalid},
		{"empty", func(_, h, code string, _ *clock, _ *Service) (string, string, string, *Service) {
			return "", h, code, nil
		}, ErrInvalid},
		{"a second before it expires", func(tok, h, code string, c *clock, _ *Service) (string, string, string, *Service) {
			c.add(10*time.Minute - time.Second)
			return tok, h, code, nil
		}, nil},
		{"when it expires", func(tok, h, code string, c *clock, _ *Service) (string, string, string, *Service) {
			c.add(10 * time.Minute)
			return tok, h, code, nil
		}, ErrExpired},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s, box, c := newService(t, "k", Config{})
			other, _, _ := newService(t, "j", Config{})
			ch, err := s.Request(context.Background(), "alice", "+15550109999")
			if err != nil {
				t.Fatal(err)
			}
			v := box.last(t)
			if v.Handle != "alice" || v.Address != "+15550109999" || !v.ExpiresAt.Equal(ch.ExpiresAt) || !ch.ExpiresAt.Equal(c.now().Add(10*time.Minute)) {
				t.Fatalf("sent %+v with challenge expiring %v", v, ch.ExpiresAt)
			}
			if strings.Contains(ch.Token, v.Code) {
				t.Fatalf("challenge %q spells the code %s", ch.Token, v.Code)
			}
			tok, handle, code, checker := ch.Token, "alice", v.Code, s
			if tc.mutate != nil {
				var o *Service
				tok, handle, code, o = tc.mutate(tok, handle, code, c, other)
				if o != nil {
					checker = o
					o.now = c.now
				}
			}
			err = checker.Check(tok, handle, code)
			if (tc.want == nil) != (err == nil) || (tc.want != nil && !errors.Is(err, tc.want)) {
				t.Fatalf("Check = %v, want %v", err, tc.want)
			}
		})
	}
}

func otherCode(code string) string {
	if code == "000000" {
		return "000001"
	}
	return "000000"
}

// flip changes one byte of a token's decoded form.
func flip(t *testing.T, tok string, i int) string {
	t.Helper()
	b, err := base64.RawURLEncoding.DecodeString(tok)
	if err != nil {
		t.Fatal(err)
	}
	b[i] ^= 1
	return base64.RawURLEncoding.EncodeToString(b)
}

func TestAChallengeIsVoidAfterItsAttempts(t *testing.T) {
	s, box, _ := newService(t, "k", Config{MaxAttempts: 5})
	ch, err := s.Request(context.Background(), "bob", "bob@example.org")
	if err != nil {
		t.Fatal(err)
	}
	code := box.last(t).Code
	for left := 4; left >= 1; left-- {
		err := s.Check(ch.Token, "bob", otherCode(code))
		if !errors.Is(err, ErrWrongCode) || !strings.Contains(err.Error(), string(rune('0'+left))+" attempts left") {
			t.Fatalf("wrong code with %d left: %v", left, err)
		}
	}
	if err := s.Check(ch.Token, "bob", otherCode(code)); !errors.Is(err, ErrVoid) {
		t.Fatalf("fifth wrong code: %v, want ErrVoid", err)
	}
	if err := s.Check(ch.Token, "bob", code); !errors.Is(err, ErrVoid) {
		t.Fatalf("the right code after five wrong ones: %v, want ErrVoid", err)
	}
	// A new code is a new challenge with its own attempts.
	ch2, err := s.Request(context.Background(), "bob", "bob@example.org")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Check(ch2.Token, "bob", box.last(t).Code); err != nil {
		t.Fatalf("a fresh code: %v", err)
	}
}

func TestAttemptsRefuseNewChallengesAtTheCapUntilOldOnesExpire(t *testing.T) {
	s, box, c := newService(t, "k", Config{MaxPending: 3})
	var toks []string
	for range 4 {
		ch, err := s.Request(context.Background(), "carol", "carol@example.org")
		if err != nil {
			t.Fatal(err)
		}
		toks = append(toks, ch.Token)
	}
	for _, tok := range toks[:3] {
		if err := s.Check(tok, "carol", "x"); !errors.Is(err, ErrWrongCode) {
			t.Fatalf("check: %v", err)
		}
	}
	if err := s.Check(toks[3], "carol", box.last(t).Code); !errors.Is(err, ErrBusy) {
		t.Fatalf("a fourth challenge at a cap of 3: %v, want ErrBusy", err)
	}
	// Counted challenges keep being counted at the cap.
	if err := s.Check(toks[0], "carol", "x"); !errors.Is(err, ErrWrongCode) {
		t.Fatalf("a counted challenge at the cap: %v", err)
	}
	c.add(10 * time.Minute)
	fresh, err := s.Request(context.Background(), "carol", "carol@example.org")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Check(fresh.Token, "carol", box.last(t).Code); err != nil {
		t.Fatalf("once the others expired: %v", err)
	}
	if n := s.tries.size(); n != 1 {
		t.Fatalf("%d challenges counted, want the fresh one only", n)
	}
}

func TestRequestWhoseSenderFailsGivesNoChallenge(t *testing.T) {
	s, box, _ := newService(t, "k", Config{})
	box.err = errors.New("sms gateway down")
	ch, err := s.Request(context.Background(), "dave", "+15550100000")
	if !errors.Is(err, ErrNotSent) || ch.Token != "" {
		t.Fatalf("Request = %+v, %v; want ErrNotSent and no challenge", ch, err)
	}
}

func TestCodesAreSixRandomDigits(t *testing.T) {
	six := regexp.MustCompile(`^[0-9]{6}$`)
	seen := map[string]bool{}
	for range 1000 {
		c, err := NewCode()
		if err != nil {
			t.Fatal(err)
		}
		if !six.MatchString(c) {
			t.Fatalf("code %q", c)
		}
		seen[c] = true
	}
	// 1000 draws of 10^6 repeat a code with probability ~0.4; a dozen
	// repeats would mean they are not random.
	if len(seen) < 990 {
		t.Fatalf("%d distinct codes in 1000", len(seen))
	}
}

func TestConfigSaysWhatVerifiedModeLacks(t *testing.T) {
	cases := []struct {
		cfg  Config
		want string // "" for valid
	}{
		{Config{}, ""},
		{Config{Mode: ModeOpen}, ""},
		{Config{Mode: "closed"}, "use open or verified"},
		{Config{Mode: ModeVerified}, "--registration-webhook-url"},
		{Config{Mode: ModeVerified, WebhookURL: "http://x"}, "--registration-webhook-secret"},
		{Config{Mode: ModeVerified, WebhookURL: "http://x", WebhookSecret: "s"}, ""},
		{Config{Mode: ModeVerified, Sender: &outbox{}}, ""},
	}
	for _, tc := range cases {
		err := tc.cfg.Validate()
		if (tc.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%+v: Validate = %v, want %q", tc.cfg, err, tc.want)
		}
	}
	if _, err := New(Config{Mode: ModeVerified, Sender: &outbox{}}, bytes.Repeat([]byte{1}, 16)); err == nil {
		t.Error("New took a 16-byte key")
	}
}

func TestAddresses(t *testing.T) {
	for _, tc := range []struct {
		addr string
		ok   bool
	}{
		{"+15550109999", true},
		{"alice@example.org", true},
		{"+1 (555) 010-9999", true},
		{"", false},
		{" +15550109999", false},
		{"a\nb", false},
		{"\xff", false},
		{strings.Repeat("a", MaxAddressLen), true},
		{strings.Repeat("a", MaxAddressLen+1), false},
	} {
		if err := CheckAddress(tc.addr); (err == nil) != tc.ok {
			t.Errorf("CheckAddress(%q) = %v, want ok=%v", tc.addr, err, tc.ok)
		}
	}
	for _, same := range [][2]string{
		{"+1 (555) 010-9999", "+15550109999"},
		{"Alice@Example.org", "alice@example.org"},
	} {
		if AddressKey(same[0]) != AddressKey(same[1]) {
			t.Errorf("AddressKey(%q) != AddressKey(%q)", same[0], same[1])
		}
	}
	if AddressKey("+15550109999") == AddressKey("+15550109998") {
		t.Error("two numbers share a key")
	}
}
