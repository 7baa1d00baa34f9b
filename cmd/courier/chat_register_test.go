package main

import (
	"context"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/courier-im/courier/internal/codetest"
	"github.com/courier-im/courier/internal/lockedbuf"
	"github.com/courier-im/courier/internal/nodetest"
	"github.com/courier-im/courier/node"
)

// TestRegisterOnAVerifyingServerTakesTheCodeTypedOrPassedLater: with
// --address the code is asked for; typed at once, it registers; not
// typed, the challenge waits for a later `register --code`, as when the
// text message takes a while.
func TestRegisterOnAVerifyingServerTakesTheCodeTypedOrPassedLater(t *testing.T) {
	rcv := codetest.Start(t)
	t.Setenv("XDG_CONFIG_HOME", t.TempDir())
	var cfg node.Config
	rcv.Verified(&cfg)
	e := &chatEnv{t: t, url: nodetest.Start(t, cfg).URL()}

	_, err := e.run("", "register", "--url", e.url, "--handle", "alice")
	if err == nil || !strings.Contains(userMessage(err), "--address") {
		t.Fatalf("register without a code on a verifying server: %v, want a hint to pass --address", err)
	}
	if _, err := e.run("", "register", "--url", e.url, "--handle", "alice", "--code", "123456"); err == nil || !strings.Contains(err.Error(), "--address") {
		t.Fatalf("--code before any code was requested: %v", err)
	}

	// Later: the first run ends without a code.
	out := e.must("register", "--url", e.url, "--handle", "alice", "--address", "+15550109999")
	if !strings.Contains(out, "+15550109999") || !strings.Contains(out, "--code") {
		t.Fatalf("register --address without a code typed printed:\n%s", out)
	}
	code := rcv.Last(t, "alice").Code
	if _, err := e.run("", "register", "--url", e.url, "--handle", "alice", "--code", wrongDigits(code)); err == nil || !strings.Contains(userMessage(err), "wrong code") {
		t.Fatalf("a wrong --code: %v", err)
	}
	if out := e.must("register", "--url", e.url, "--handle", "alice", "--code", code); !strings.Contains(out, "registered alice") {
		t.Fatalf("register --code printed:\n%s", out)
	}

	// At once: the code is typed when asked for.
	stdin, typed := io.Pipe()
	done := make(chan error, 1)
	var buf lockedbuf.Buffer
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		cmd := newChatCmd()
		cmd.SetOut(&buf)
		cmd.SetErr(&buf)
		cmd.SetIn(stdin)
		cmd.SetArgs([]string{"register", "--url", e.url, "--handle", "bob", "--address", "bob@example.org"})
		cmd.SilenceUsage, cmd.SilenceErrors = true, true
		done <- cmd.ExecuteContext(ctx)
	}()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(buf.String(), "code: ") {
		if time.Now().After(deadline) {
			t.Fatalf("register did not ask for the code:\n%s", buf.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if _, err := io.WriteString(typed, rcv.Last(t, "bob").Code+"\n"); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil || !strings.Contains(buf.String(), "registered bob") {
		t.Fatalf("register with the code typed: %v\n%s", err, buf.String())
	}

	// Both are real users: alice writes to bob.
	e.must("send", "--as", "alice", "--to", "bob", "hello from a verified user")
}

func wrongDigits(code string) string {
	if code == "000000" {
		return "111111"
	}
	return "000000"
}

func TestRegisterWithAnAddressOnAnOpenServerNeedsNoCode(t *testing.T) {
	e := newChatEnv(t)
	out := e.must("register", "--url", e.url, "--handle", "carol", "--address", "carol@example.org")
	if !strings.Contains(out, "open registration") || !strings.Contains(out, "registered carol") {
		t.Fatalf("register --address on an open server printed:\n%s", out)
	}
}
