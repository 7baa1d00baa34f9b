package client_test

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/courier-im/courier/client"
	"github.com/courier-im/courier/node"
	"github.com/courier-im/courier/protos/courierpb"
)

// TestOversizedSendFailsAtOnce sends messages just over the server's frame
// limit (256 KiB) and far over it (past the 4x the server still reads):
// each fails at once with TOO_LARGE naming the limit, the session stays up
// without a reconnect, and the next ordinary send goes through.
func TestOversizedSendFailsAtOnce(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts []client.Option
	}{{"binary", nil}, {"json", []client.Option{client.WithJSON()}}} {
		t.Run(tc.name, func(t *testing.T) {
			n := startNode(t, node.Config{})
			aliceCreds, bobCreds := register(t, n, "alice"), register(t, n, "bob")
			alice, bob := dial(t, aliceCreds, tc.opts...), dial(t, bobCreds)
			drain(alice)
			ctx := timeout(t, 60*time.Second)

			for _, size := range []int{256<<10 + 1024, 1100 << 10, 1900 << 10} {
				start := time.Now()
				_, err := alice.Send(ctx, bobCreds.UserID, bytes.Repeat([]byte("x"), size))
				if took := time.Since(start); took > 3*time.Second {
					t.Fatalf("send of %d bytes took %v; want a prompt refusal", size, took)
				}
				if !client.IsCode(err, courierpb.ErrorCode_TOO_LARGE) || !errors.Is(err, client.ErrTooLarge) {
					t.Fatalf("send of %d bytes: %v; want TOO_LARGE", size, err)
				}
				if !strings.Contains(err.Error(), "at most 256 KiB per frame") {
					t.Fatalf("send of %d bytes: %q does not name the 256 KiB limit", size, err)
				}
			}
			time.Sleep(300 * time.Millisecond)
			if !alice.Connected() || alice.Reconnects() != 0 {
				t.Fatalf("connected %v, reconnects %d; want a session that stayed up", alice.Connected(), alice.Reconnects())
			}
			if _, err := alice.Send(ctx, bobCreds.UserID, []byte("small")); err != nil {
				t.Fatalf("send after the refusals: %v", err)
			}
			if e := nextOfKind(t, bob, courierpb.EntryKind_ENTRY_KIND_MESSAGE, 10*time.Second); string(e.Ciphertext) != "small" {
				t.Fatalf("bob got %q", e.Ciphertext)
			}
		})
	}
}

// TestOversizedSendRefusedByTheServer sends what the server refuses, as a
// client that does not check the limit first would (or one talking to a
// server that does not advertise it): a frame up to 4x the limit is
// answered with a TOO_LARGE error frame that names no request, one beyond
// that makes the server close the socket with 1009. Either way the send
// fails at once and is never written again: no resend on the next
// session, no reconnect loop.
func TestOversizedSendRefusedByTheServer(t *testing.T) {
	n := startNode(t, node.Config{})
	aliceCreds, bobCreds := register(t, n, "alice"), register(t, n, "bob")
	alice := dial(t, aliceCreds, client.WithoutFrameLimitForTest(), client.WithBackoff(10*time.Millisecond, 100*time.Millisecond))
	bob := dial(t, bobCreds)
	drain(alice)
	ctx := timeout(t, 60*time.Second)

	send := func(size int) error {
		t.Helper()
		start := time.Now()
		_, err := alice.Send(ctx, bobCreds.UserID, bytes.Repeat([]byte("x"), size))
		if took := time.Since(start); took > 3*time.Second {
			t.Fatalf("send of %d bytes took %v; want a prompt refusal", size, took)
		}
		if !client.IsCode(err, courierpb.ErrorCode_TOO_LARGE) {
			t.Fatalf("send of %d bytes: %v; want TOO_LARGE", size, err)
		}
		return err
	}

	// Read and refused: the session stays.
	if err := send(300 << 10); !strings.Contains(err.Error(), "message is 301 KiB; the server takes at most 256 KiB per frame") {
		t.Fatalf("refusal says %q", err)
	}
	time.Sleep(200 * time.Millisecond)
	if !alice.Connected() || alice.Reconnects() != 0 {
		t.Fatalf("after a refused frame: connected %v, reconnects %d", alice.Connected(), alice.Reconnects())
	}

	// Not even read: the server closes with 1009 and the client reconnects
	// once, without the frame.
	if err := send(1900 << 10); !strings.Contains(err.Error(), "message is 1.9 MiB") {
		t.Fatalf("refusal says %q", err)
	}
	time.Sleep(1500 * time.Millisecond)
	if err := alice.WaitConnected(ctx); err != nil {
		t.Fatal(err)
	}
	if r := alice.Reconnects(); r > 1 {
		t.Fatalf("%d reconnects after one oversized frame; want at most 1 (the frame must not be sent again)", r)
	}
	if _, err := alice.Send(ctx, bobCreds.UserID, []byte("small")); err != nil {
		t.Fatalf("send after the refusals: %v", err)
	}
	if e := nextOfKind(t, bob, courierpb.EntryKind_ENTRY_KIND_MESSAGE, 10*time.Second); string(e.Ciphertext) != "small" {
		t.Fatalf("bob got %d bytes, want the small message", len(e.Ciphertext))
	}
	expectNoMessage(t, bob, 300*time.Millisecond)
	if r := alice.Reconnects(); r > 1 {
		t.Fatalf("%d reconnects; want at most 1", r)
	}
}
