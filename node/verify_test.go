package node_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/courier-im/courier/gateway"
	"github.com/courier-im/courier/internal/codetest"
	"github.com/courier-im/courier/internal/nodetest"
	"github.com/courier-im/courier/internal/storematrix"
	"github.com/courier-im/courier/node"
	"github.com/courier-im/courier/persistence"
	"github.com/courier-im/courier/verification"
)

// Tests of verified registration (--registration verified, issue #20):
// a code goes to an address through the operator's webhook, and only
// that code registers the handle.

func requestCode(t *testing.T, hc *http.Client, base, handle, address string) (int, gateway.CodeResponse, gatewayError) {
	t.Helper()
	var out gateway.CodeResponse
	code, ge := postJSON(t, hc, base+"/v1/register/code", gateway.CodeRequest{Handle: handle, Address: address}, &out)
	return code, out, ge
}

func mustRequestCode(t *testing.T, base, handle, address string) gateway.CodeResponse {
	t.Helper()
	code, out, ge := requestCode(t, http.DefaultClient, base, handle, address)
	if code != http.StatusOK {
		t.Fatalf("request a code for %s: %d %+v", handle, code, ge)
	}
	return out
}

func registerVerified(t *testing.T, base, handle, challenge, code string) (int, gateway.RegisterResponse, gatewayError) {
	t.Helper()
	var reg gateway.RegisterResponse
	status, ge := postJSON(t, http.DefaultClient, base+"/v1/register", gateway.RegisterRequest{Handle: handle, Challenge: challenge, Code: code}, &reg)
	return status, reg, ge
}

// userExists asks the node's store whether handle names a user.
func userExists(t *testing.T, n *node.Node, handle string) bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := n.Store().GetUserByHandle(ctx, handle)
	if err != nil && !errors.Is(err, persistence.ErrNotFound) {
		t.Fatal(err)
	}
	return err == nil
}

func wrongCode(code string) string {
	if code == "000000" {
		return "999999"
	}
	return "000000"
}

func TestVerifiedRegistrationNeedsTheCodeSentToTheWebhook(t *testing.T) {
	rcv := codetest.Start(t)
	n := startNode(t, rcv.Verified)
	base := n.URL()

	// A handle alone no longer registers.
	if status, _, ge := registerVerified(t, base, "alice", "", ""); status != http.StatusForbidden || ge.Code != "VERIFICATION_FAILED" || !strings.Contains(ge.Message, "/v1/register/code") {
		t.Fatalf("register without a code: %d %+v, want 403 VERIFICATION_FAILED saying where codes come from", status, ge)
	}

	ch := mustRequestCode(t, base, "alice", "+15550109999")
	sent := rcv.Last(t, "alice")
	if sent.Type != "registration_code" || sent.Address != "+15550109999" || len(sent.Code) != verification.CodeDigits || !sent.ExpiresAt.Equal(ch.ExpiresAt) {
		t.Fatalf("webhook got %+v; the client was told the code expires at %v", sent, ch.ExpiresAt)
	}
	if until := time.Until(ch.ExpiresAt); until < 9*time.Minute || until > 10*time.Minute {
		t.Fatalf("the code expires in %v, want 10 minutes", until)
	}
	if strings.Contains(ch.Challenge, sent.Code) {
		t.Fatalf("the challenge %q spells the code", ch.Challenge)
	}
	// The challenge is for alice only.
	if status, _, ge := registerVerified(t, base, "mallory", ch.Challenge, sent.Code); status != http.StatusForbidden || ge.Code != "VERIFICATION_FAILED" {
		t.Fatalf("alice's code for another handle: %d %+v", status, ge)
	}

	status, reg, ge := registerVerified(t, base, "alice", ch.Challenge, sent.Code)
	if status != http.StatusCreated || reg.UserID == "" || reg.DeviceID != 1 || reg.DeviceSecret == "" {
		t.Fatalf("register with the code: %d %+v %+v", status, reg, ge)
	}
	var tok gateway.TokenResponse
	if code, ge := postJSON(t, http.DefaultClient, base+"/v1/token", gateway.TokenRequest{Handle: "alice", DeviceSecret: reg.DeviceSecret}, &tok); code != http.StatusOK {
		t.Fatalf("token of the verified user: %d %+v", code, ge)
	}
	// The same code cannot make alice twice, and a taken handle gets no
	// more codes (nothing is texted for nothing).
	if status, _, ge := registerVerified(t, base, "alice", ch.Challenge, sent.Code); status != http.StatusConflict || ge.Code != "HANDLE_TAKEN" {
		t.Fatalf("the code again: %d %+v, want 409 HANDLE_TAKEN", status, ge)
	}
	before := len(rcv.Sent())
	if status, _, ge := requestCode(t, http.DefaultClient, base, "alice", "+15550109999"); status != http.StatusConflict || ge.Code != "HANDLE_TAKEN" {
		t.Fatalf("a code for a taken handle: %d %+v", status, ge)
	}
	if len(rcv.Sent()) != before {
		t.Fatal("a code was sent for a taken handle")
	}

	// Linking a second device uses the first device's code, as before.
	var lc gateway.LinkCodeResponse
	if status := authedPost(t, base+"/v1/devices/link-code", tok.AccessToken, nil, &lc); status != http.StatusCreated || lc.Code == "" {
		t.Fatalf("link code: %d", status)
	}
	var linked gateway.RegisterResponse
	if status, ge := postJSON(t, http.DefaultClient, base+"/v1/devices/link", gateway.LinkRequest{Code: lc.Code}, &linked); status != http.StatusCreated || linked.DeviceID != 2 {
		t.Fatalf("link a device on a verified server: %d %+v %+v", status, linked, ge)
	}
}

// authedPost posts body (nil: none) with a bearer token.
func authedPost(t *testing.T, u, token string, body, out any) int {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(http.MethodPost, u, rd)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if out != nil && resp.StatusCode/100 == 2 {
		if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
			t.Fatal(err)
		}
	}
	return resp.StatusCode
}

func TestWrongCodesUseUpTheAttemptsAndVoidTheCode(t *testing.T) {
	rcv := codetest.Start(t)
	n := startNode(t, func(c *node.Config) {
		rcv.Verified(c)
		c.Limits.RegisterPerHandle = gateway.Off // the attempts are the bound here
	})
	ch := mustRequestCode(t, n.URL(), "bob", "bob@example.org")
	code := rcv.Last(t, "bob").Code
	for left := 4; left >= 1; left-- {
		status, _, ge := registerVerified(t, n.URL(), "bob", ch.Challenge, wrongCode(code))
		if status != http.StatusForbidden || ge.Code != "VERIFICATION_FAILED" || !strings.Contains(ge.Message, strconv.Itoa(left)+" attempts left") {
			t.Fatalf("wrong code, %d attempts left: %d %+v", left, status, ge)
		}
	}
	if status, _, ge := registerVerified(t, n.URL(), "bob", ch.Challenge, wrongCode(code)); status != http.StatusForbidden || !strings.Contains(ge.Message, "void") {
		t.Fatalf("fifth wrong code: %d %+v, want the code void", status, ge)
	}
	if status, _, ge := registerVerified(t, n.URL(), "bob", ch.Challenge, code); status != http.StatusForbidden || ge.Code != "VERIFICATION_FAILED" || !strings.Contains(ge.Message, "void") {
		t.Fatalf("the right code after five wrong ones: %d %+v, want it void", status, ge)
	}
	if userExists(t, n, "bob") {
		t.Fatal("bob was created with a void code")
	}
	// A new code starts over.
	ch = mustRequestCode(t, n.URL(), "bob", "bob@example.org")
	if status, _, ge := registerVerified(t, n.URL(), "bob", ch.Challenge, rcv.Last(t, "bob").Code); status != http.StatusCreated {
		t.Fatalf("a new code: %d %+v", status, ge)
	}
}

func TestAnExpiredCodeIsRefused(t *testing.T) {
	rcv := codetest.Start(t)
	n := startNode(t, func(c *node.Config) {
		rcv.Verified(c)
		c.Registration.CodeTTL = 2 * time.Second
	})
	ch := mustRequestCode(t, n.URL(), "carol", "+15550100001")
	time.Sleep(time.Until(ch.ExpiresAt) + 50*time.Millisecond)
	status, _, ge := registerVerified(t, n.URL(), "carol", ch.Challenge, rcv.Last(t, "carol").Code)
	if status != http.StatusForbidden || ge.Code != "VERIFICATION_FAILED" || !strings.Contains(ge.Message, "expired") {
		t.Fatalf("an expired code: %d %+v, want 403 VERIFICATION_FAILED saying it expired", status, ge)
	}
	if userExists(t, n, "carol") {
		t.Fatal("carol was created with an expired code")
	}
}

// TestCodeRequestsAreLimitedPerAddressHandleAndClient: every code may be
// a paid text message, so each of the three is bounded on its own; a
// refused request sends nothing.
func TestCodeRequestsAreLimitedPerAddressHandleAndClient(t *testing.T) {
	two := gateway.Rate{N: 2, Per: time.Hour}
	cases := []struct {
		name      string
		limits    func(*gateway.Limits)
		handle    func(i int) string
		address   func(i int) string
		client    string
		wantWords string
	}{
		{"per address",
			func(l *gateway.Limits) { l.CodePerAddress = two },
			func(i int) string { return "addr" + strconv.Itoa(i) },
			func(i int) string { return []string{"+1 555 010 0000", "+15550100000", "+1-555-010-0000"}[i] },
			"127.0.0.1", "sent to this address"},
		{"per handle",
			func(l *gateway.Limits) { l.CodePerHandle = two },
			func(i int) string { return []string{"dave", "Dave", "DAVE"}[i] },
			func(i int) string { return "+1555010000" + strconv.Itoa(i) },
			"127.0.0.1", "for this handle"},
		{"per client",
			func(l *gateway.Limits) { l.CodePerIP = two; l.LimitLoopback = true },
			func(i int) string { return "ip" + strconv.Itoa(i) },
			func(i int) string { return "+1555010000" + strconv.Itoa(i) },
			"127.0.0.7", "from this address"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rcv := codetest.Start(t)
			n := startNode(t, func(c *node.Config) {
				rcv.Verified(c)
				tc.limits(&c.Limits)
			})
			hc := from(t, tc.client)
			for i := range 2 {
				if status, _, ge := requestCode(t, hc, n.URL(), tc.handle(i), tc.address(i)); status != http.StatusOK {
					t.Fatalf("code %d: %d %+v", i, status, ge)
				}
			}
			b, _ := json.Marshal(gateway.CodeRequest{Handle: tc.handle(2), Address: tc.address(2)})
			resp, err := hc.Post(n.URL()+"/v1/register/code", "application/json", bytes.NewReader(b))
			if err != nil {
				t.Fatal(err)
			}
			var ge gatewayError
			_ = json.NewDecoder(resp.Body).Decode(&ge)
			resp.Body.Close()
			if resp.StatusCode != http.StatusTooManyRequests || ge.Code != "RATE_LIMITED" || !strings.Contains(ge.Message, tc.wantWords) {
				t.Fatalf("third code: %d %+v, want 429 RATE_LIMITED %q", resp.StatusCode, ge, tc.wantWords)
			}
			if ra, err := strconv.Atoi(resp.Header.Get("Retry-After")); err != nil || ra < 1 || ra > 3600 {
				t.Fatalf("Retry-After %q, want 1-3600 seconds", resp.Header.Get("Retry-After"))
			}
			if got := len(rcv.Sent()); got != 2 {
				t.Fatalf("the webhook got %d codes, want the 2 allowed", got)
			}
		})
	}
}

func TestAWebhookFailureCreatesNothing(t *testing.T) {
	cases := []struct {
		status    int32
		wantCalls int32 // a refusal is not retried, a failure is
	}{
		{http.StatusInternalServerError, 3},
		{http.StatusServiceUnavailable, 3},
		{http.StatusBadRequest, 1},
	}
	for _, tc := range cases {
		t.Run(strconv.Itoa(int(tc.status)), func(t *testing.T) {
			rcv := codetest.Start(t)
			rcv.FailWith.Store(tc.status)
			n := startNode(t, rcv.Verified)
			status, ch, ge := requestCode(t, http.DefaultClient, n.URL(), "erin", "+15550100002")
			if status != http.StatusBadGateway || ge.Code != "UNAVAILABLE" || !strings.Contains(ge.Message, "could not be delivered") || ch.Challenge != "" {
				t.Fatalf("code request while the webhook answers %d: %d %+v %+v, want 502 UNAVAILABLE", tc.status, status, ge, ch)
			}
			if got := rcv.Calls.Load(); got != tc.wantCalls {
				t.Fatalf("the webhook was called %d times, want %d", got, tc.wantCalls)
			}
			if userExists(t, n, "erin") {
				t.Fatal("a user exists after the code could not be sent")
			}
			// Once the webhook recovers, the handle is as free as before.
			rcv.FailWith.Store(0)
			ch2 := mustRequestCode(t, n.URL(), "erin", "+15550100002")
			if status, _, ge := registerVerified(t, n.URL(), "erin", ch2.Challenge, rcv.Last(t, "erin").Code); status != http.StatusCreated {
				t.Fatalf("register once the webhook works: %d %+v", status, ge)
			}
		})
	}
}

func TestOpenRegistrationIsUnchanged(t *testing.T) {
	n := startNode(t, nil)
	register(t, n.URL(), "frank")
	status, _, ge := requestCode(t, http.DefaultClient, n.URL(), "grace", "+15550100003")
	if status != http.StatusNotFound || ge.Code != "NOT_FOUND" || !strings.Contains(ge.Message, "open registration") {
		t.Fatalf("a code from an open server: %d %+v, want 404 saying registration is open", status, ge)
	}
}

func TestVerifiedRegistrationWithoutAWebhookRefusesToStart(t *testing.T) {
	for _, cfg := range []verification.Config{
		{Mode: verification.ModeVerified},
		{Mode: verification.ModeVerified, WebhookURL: "http://127.0.0.1:1/codes"},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		n, err := node.Start(ctx, node.Config{Listen: "127.0.0.1:0", DataDir: t.TempDir(), Logger: nodetest.Logger(), Registration: cfg})
		cancel()
		if err == nil {
			_ = n.Close(context.Background())
			t.Fatalf("%+v: the node started", cfg)
		}
		if !strings.Contains(err.Error(), "--registration-webhook-url") || !strings.Contains(err.Error(), "--registration-webhook-secret") {
			t.Fatalf("%+v: %v, want it to name the flags to set", cfg, err)
		}
	}
}

// TestACodeOutlivesTheNodeThatSentIt: the challenge key lives in the
// store, so a node that did not send a code (here the same store after a
// restart; in a cluster, any node sharing it) checks it.
func TestACodeOutlivesTheNodeThatSentIt(t *testing.T) {
	storematrix.Run(t, func(t *testing.T, store storematrix.Store) {
		rcv := codetest.Start(t)
		dir := t.TempDir()
		cfg := func(c *node.Config) {
			store.Configure(c)
			rcv.Verified(c)
			c.DataDir = dir
		}
		a := startNode(t, cfg)
		ch := mustRequestCode(t, a.URL(), "heidi", "heidi@example.org")
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		if err := a.Close(ctx); err != nil {
			t.Fatal(err)
		}
		b := startNode(t, cfg)
		if status, _, ge := registerVerified(t, b.URL(), "heidi", ch.Challenge, rcv.Last(t, "heidi").Code); status != http.StatusCreated {
			t.Fatalf("register on another node: %d %+v", status, ge)
		}
	})
}
