package client_test

import (
	"errors"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/courier-im/courier/client"
	"github.com/courier-im/courier/internal/codetest"
	"github.com/courier-im/courier/node"
	"github.com/courier-im/courier/protos/courierpb"
)

// TestRegisterWithTheCodeTheServerSent: on a server with verified
// registration, the SDK asks for a code, and registers (and publishes its
// keys) with it; without it, or with a wrong one, it gets an *Error a
// program can act on.
func TestRegisterWithTheCodeTheServerSent(t *testing.T) {
	rcv := codetest.Start(t)
	var cfg node.Config
	rcv.Verified(&cfg)
	n := startNode(t, cfg)
	ctx := timeout(t, 30*time.Second)

	_, err := client.Register(ctx, n.URL(), "ivan")
	var ce *client.Error
	if !errors.As(err, &ce) || ce.Code != courierpb.ErrorCode_VERIFICATION_FAILED || ce.HTTPStatus != http.StatusForbidden || ce.Retryable {
		t.Fatalf("register without a code: %v, want a VERIFICATION_FAILED *Error, not retryable", err)
	}

	ch, err := client.RequestCode(ctx, n.URL(), "ivan", "ivan@example.org")
	if err != nil {
		t.Fatal(err)
	}
	if ch.Handle != "ivan" || ch.Challenge == "" || time.Until(ch.ExpiresAt) < 9*time.Minute {
		t.Fatalf("challenge %+v", ch)
	}
	code := rcv.Last(t, "ivan").Code
	wrong := "000000"
	if code == wrong {
		wrong = "111111"
	}
	if _, err := client.Register(ctx, n.URL(), "ivan", client.WithVerificationCode(ch.Challenge, wrong)); !client.IsCode(err, courierpb.ErrorCode_VERIFICATION_FAILED) {
		t.Fatalf("register with a wrong code: %v", err)
	}
	creds, err := client.Register(ctx, n.URL(), "ivan", client.WithVerificationCode(ch.Challenge, code), client.WithE2EE(filepath.Join(t.TempDir(), "ivan.keys")))
	if err != nil {
		t.Fatalf("register with the code: %v", err)
	}
	if creds.Handle != "ivan" || creds.DeviceID != 1 || creds.DeviceSecret == "" {
		t.Fatalf("credentials %+v", creds)
	}
	c := dial(t, creds)
	if _, err := c.LookupHandle(ctx, "ivan"); err != nil {
		t.Fatalf("the verified user signs in and is found: %v", err)
	}

	if _, err := client.RequestCode(ctx, n.URL(), "ivan", "ivan@example.org"); !client.IsCode(err, courierpb.ErrorCode_HANDLE_TAKEN) {
		t.Fatalf("a code for a taken handle: %v, want HANDLE_TAKEN", err)
	}
	rcv.FailWith.Store(http.StatusServiceUnavailable)
	if _, err := client.RequestCode(ctx, n.URL(), "judy", "judy@example.org"); !client.IsCode(err, courierpb.ErrorCode_UNAVAILABLE) || !errors.As(err, &ce) || ce.HTTPStatus != http.StatusBadGateway || !ce.Retryable {
		t.Fatalf("a code the webhook could not take: %v, want a retryable UNAVAILABLE (502)", err)
	}
}

func TestRequestCodeFromAnOpenServerSaysNoCodeIsNeeded(t *testing.T) {
	n := startNode(t, node.Config{})
	_, err := client.RequestCode(timeout(t, 10*time.Second), n.URL(), "kim", "+15550100004")
	if !client.IsCode(err, courierpb.ErrorCode_NOT_FOUND) {
		t.Fatalf("RequestCode on an open server: %v, want NOT_FOUND", err)
	}
}
