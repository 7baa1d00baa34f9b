package client_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/courier-im/courier/client"
	"github.com/courier-im/courier/gateway"
	"github.com/courier-im/courier/internal/nodetest"
	"github.com/courier-im/courier/internal/storematrix"
	"github.com/courier-im/courier/node"
	"github.com/courier-im/courier/protos/courierpb"
)

// testLogger logs warnings and errors to the test log (everything with
// COURIER_TEST_LOG=debug).
func testLogger(t testing.TB) *slog.Logger {
	level := slog.LevelWarn
	if os.Getenv("COURIER_TEST_LOG") == "debug" {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: level}))
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func startNode(t testing.TB, cfg node.Config) *node.Node {
	t.Helper()
	return nodetest.Start(t, cfg)
}

func timeout(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

var handleSeq = rand.Uint32()

func register(t testing.TB, n *node.Node, name string, opts ...client.Option) client.Credentials {
	t.Helper()
	handleSeq++
	creds, err := client.Register(timeout(t, 10*time.Second), n.URL(), fmt.Sprintf("%s-%d", name, handleSeq), opts...)
	if err != nil {
		t.Fatalf("register %s: %v", name, err)
	}
	return creds
}

func dial(t testing.TB, creds client.Credentials, opts ...client.Option) *client.Client {
	t.Helper()
	c, err := client.Dial(timeout(t, 10*time.Second), creds, append([]client.Option{client.WithLogger(testLogger(t))}, opts...)...)
	if err != nil {
		t.Fatalf("dial %s: %v", creds.Handle, err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// next returns the next entry or fails the test.
func next(t testing.TB, c *client.Client, d time.Duration) client.Entry {
	t.Helper()
	select {
	case e, ok := <-c.Entries():
		if !ok {
			t.Fatal("entries channel closed")
		}
		return e
	case <-time.After(d):
		t.Fatalf("no entry within %v", d)
	}
	panic("unreachable")
}

// nextOfKind skips entries of other kinds.
func nextOfKind(t testing.TB, c *client.Client, kind courierpb.EntryKind, d time.Duration) client.Entry {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		e := next(t, c, time.Until(deadline))
		if e.Kind == kind {
			return e
		}
	}
}

// expectNothing fails if a message arrives within d.
func expectNoMessage(t testing.TB, c *client.Client, d time.Duration) {
	t.Helper()
	timer := time.After(d)
	for {
		select {
		case e := <-c.Entries():
			if e.IsMessage() {
				t.Fatalf("unexpected message seq %d id %s %q", e.Seq, e.ClientMsgID, e.Ciphertext)
			}
		case <-timer:
			return
		}
	}
}

// drain consumes a client's entries in the background (receipts a test does
// not look at) until the client closes.
func drain(c *client.Client) {
	go func() {
		for range c.Entries() {
		}
	}()
}

func payload(i int) []byte { return fmt.Appendf(nil, "message %06d", i) }

func TestSendAndReceiveInOrderWithReceipts(t *testing.T) {
	storematrix.Run(t, testSendAndReceiveInOrderWithReceipts)
}

func testSendAndReceiveInOrderWithReceipts(t *testing.T, store storematrix.Store) {
	n := startNode(t, store.Apply(node.Config{}))
	aliceCreds, bobCreds := register(t, n, "alice"), register(t, n, "bob")
	alice, bob := dial(t, aliceCreds), dial(t, bobCreds)
	ctx := timeout(t, 30*time.Second)

	bobID, err := alice.LookupHandle(ctx, bobCreds.Handle)
	if err != nil || bobID != bobCreds.UserID {
		t.Fatalf("LookupHandle(bob) = %q, %v; want %q", bobID, err, bobCreds.UserID)
	}
	if _, err := alice.LookupHandle(ctx, "nobody-"+bobCreds.Handle); !client.IsCode(err, courierpb.ErrorCode_NOT_FOUND) {
		t.Fatalf("LookupHandle(unknown) error = %v, want NOT_FOUND", err)
	}
	if rtt, err := alice.Ping(ctx); err != nil || rtt <= 0 {
		t.Fatalf("Ping = %v, %v", rtt, err)
	}

	const count = 20
	var ids []string
	for i := range count {
		res, err := alice.Send(ctx, bobID, payload(i), client.WithContentType("text"))
		if err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
		if res.Duplicate || res.ClientMsgID == "" || res.StoredAt.IsZero() {
			t.Fatalf("send %d: single tick %+v", i, res)
		}
		ids = append(ids, res.ClientMsgID)
	}

	var lastSeq uint64
	for i := range count {
		e := next(t, bob, 10*time.Second)
		if !e.IsMessage() || e.FromUserID != aliceCreds.UserID || e.ClientMsgID != ids[i] || !bytes.Equal(e.Ciphertext, payload(i)) || e.ContentType != "text" {
			t.Fatalf("bob entry %d = %+v; want message %s %q from alice", i, e, ids[i], payload(i))
		}
		if e.Seq <= lastSeq {
			t.Fatalf("entry %d seq %d after %d", i, e.Seq, lastSeq)
		}
		lastSeq = e.Seq
	}

	// Double ticks: every message is covered by delivered receipts.
	delivered := map[string]bool{}
	for len(delivered) < count {
		e := next(t, alice, 10*time.Second)
		if !e.IsDelivered() {
			t.Fatalf("alice got %v before all delivered receipts (%d/%d)", e.Kind, len(delivered), count)
		}
		if e.FromUserID != bobCreds.UserID {
			t.Fatalf("delivered receipt from %s, want bob", e.FromUserID)
		}
		for _, id := range e.ReceiptFor {
			delivered[id] = true
		}
	}
	for _, id := range ids {
		if !delivered[id] {
			t.Fatalf("no delivered receipt for %s", id)
		}
	}

	// Blue ticks.
	if err := bob.MarkRead(ctx, aliceCreds.UserID, ids...); err != nil {
		t.Fatalf("MarkRead: %v", err)
	}
	read := nextOfKind(t, alice, courierpb.EntryKind_ENTRY_KIND_READ, 10*time.Second)
	if read.FromUserID != bobCreds.UserID || strings.Join(read.ReceiptFor, ",") != strings.Join(ids, ",") {
		t.Fatalf("read receipt %+v; want from bob for %v", read, ids)
	}
	expectNoMessage(t, bob, 200*time.Millisecond)
}

// sendAll pipelines count messages from c to `to` with up to window in
// flight, in order, and fails on any error.
func sendAll(t testing.TB, ctx context.Context, c *client.Client, to string, from, count, window int) []string {
	t.Helper()
	ids := make([]string, 0, count)
	inflight := make([]*client.PendingSend, 0, window)
	wait := func(p *client.PendingSend) {
		if _, err := p.Result(); err != nil {
			t.Errorf("send %s: %v", p.ClientMsgID(), err)
		}
	}
	for i := from; i < from+count; i++ {
		if len(inflight) == window {
			wait(inflight[0])
			inflight = inflight[1:]
		}
		p := c.SendAsync(ctx, to, payload(i))
		ids = append(ids, p.ClientMsgID())
		inflight = append(inflight, p)
	}
	for _, p := range inflight {
		wait(p)
	}
	return ids
}

func TestOfflineRecipientGetsAllMessagesOnConnect(t *testing.T) {
	storematrix.Run(t, testOfflineRecipientGetsAllMessagesOnConnect)
}

func testOfflineRecipientGetsAllMessagesOnConnect(t *testing.T, store storematrix.Store) {
	n := startNode(t, store.Apply(node.Config{}))
	aliceCreds, bobCreds := register(t, n, "alice"), register(t, n, "bob")
	alice := dial(t, aliceCreds)
	drain(alice)
	ctx := timeout(t, 60*time.Second)

	const count = 1000
	ids := sendAll(t, ctx, alice, bobCreds.UserID, 0, count, 64)
	if t.Failed() {
		t.FailNow()
	}

	bob := dial(t, bobCreds)
	var lastSeq uint64
	for i := range count {
		e := next(t, bob, 10*time.Second)
		if !e.IsMessage() || e.ClientMsgID != ids[i] || !bytes.Equal(e.Ciphertext, payload(i)) {
			t.Fatalf("entry %d: got %s %q, want %s %q", i, e.ClientMsgID, e.Ciphertext, ids[i], payload(i))
		}
		if e.Seq <= lastSeq {
			t.Fatalf("entry %d seq %d after %d", i, e.Seq, lastSeq)
		}
		lastSeq = e.Seq
	}
	expectNoMessage(t, bob, 300*time.Millisecond)

	// The acks reach the store asynchronously.
	deadline := time.Now().Add(10 * time.Second)
	for {
		left, err := n.Store().Range(ctx, bobCreds.UserID, 1, 0, 10)
		if err != nil {
			t.Fatalf("store range: %v", err)
		}
		if len(left) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("bob's inbox still holds %d+ entries, first seq %d (last handed %d)", len(left), left[0].InboxSeq, bob.LastSeq())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestResendSameClientMsgIDIsStoredOnce(t *testing.T) {
	storematrix.Run(t, testResendSameClientMsgIDIsStoredOnce)
}

func testResendSameClientMsgIDIsStoredOnce(t *testing.T, store storematrix.Store) {
	n := startNode(t, store.Apply(node.Config{}))
	aliceCreds, bobCreds := register(t, n, "alice"), register(t, n, "bob")
	alice, bob := dial(t, aliceCreds), dial(t, bobCreds)
	drain(alice)
	ctx := timeout(t, 30*time.Second)

	const id = "0191e5b0-7c1a-7000-8000-000000000001"
	first, err := alice.SendWithID(ctx, bobCreds.UserID, id, []byte("once"))
	if err != nil || first.Duplicate || first.ClientMsgID != id {
		t.Fatalf("first send = %+v, %v", first, err)
	}
	second, err := alice.SendWithID(ctx, bobCreds.UserID, id, []byte("once"))
	if err != nil || !second.Duplicate || second.ClientMsgID != id {
		t.Fatalf("second send = %+v, %v; want Duplicate", second, err)
	}
	if !second.StoredAt.Equal(first.StoredAt) {
		t.Errorf("duplicate stored_at %v, first %v", second.StoredAt, first.StoredAt)
	}
	after, err := alice.Send(ctx, bobCreds.UserID, []byte("after"))
	if err != nil {
		t.Fatal(err)
	}

	e := next(t, bob, 10*time.Second)
	if e.ClientMsgID != id || string(e.Ciphertext) != "once" {
		t.Fatalf("first entry %+v", e)
	}
	e = next(t, bob, 10*time.Second)
	if e.ClientMsgID != after.ClientMsgID {
		t.Fatalf("second entry is %s %q, want the next message %s (the retry was stored twice?)", e.ClientMsgID, e.Ciphertext, after.ClientMsgID)
	}
	expectNoMessage(t, bob, 200*time.Millisecond)
}

// receiveSequence reads count messages from c, checking they are exactly
// payload(0..count-1) in order; onMessage runs after each.
func receiveSequence(t testing.TB, c *client.Client, count int, d time.Duration, onMessage func(i int)) {
	t.Helper()
	deadline := time.Now().Add(d)
	for i := 0; i < count; {
		e := next(t, c, time.Until(deadline))
		if !e.IsMessage() {
			continue
		}
		if !bytes.Equal(e.Ciphertext, payload(i)) {
			t.Fatalf("message %d is %q, want %q (gap, duplicate or reorder)", i, e.Ciphertext, payload(i))
		}
		i++
		if onMessage != nil {
			onMessage(i)
		}
	}
}

func TestReconnectStormDeliversExactlyTheSentSequence(t *testing.T) {
	storematrix.Run(t, testReconnectStormDeliversExactlyTheSentSequence)
}

func testReconnectStormDeliversExactlyTheSentSequence(t *testing.T, store storematrix.Store) {
	n := startNode(t, store.Apply(node.Config{}))
	aliceCreds, bobCreds := register(t, n, "alice"), register(t, n, "bob")
	fast := client.WithBackoff(10*time.Millisecond, 200*time.Millisecond)
	alice, bob := dial(t, aliceCreds, fast), dial(t, bobCreds, fast)
	drain(alice)
	ctx := timeout(t, 90*time.Second)

	const count, drops = 2000, 20
	points := map[int]bool{}
	for len(points) < drops {
		points[50+rand.IntN(count-100)] = true
	}
	sendErr := make(chan error, 1)
	go func() {
		var inflight []*client.PendingSend
		for i := range count {
			if len(inflight) == 32 {
				if _, err := inflight[0].Result(); err != nil {
					sendErr <- err
					return
				}
				inflight = inflight[1:]
			}
			inflight = append(inflight, alice.SendAsync(ctx, bobCreds.UserID, payload(i)))
		}
		for _, p := range inflight {
			if _, err := p.Result(); err != nil {
				sendErr <- err
				return
			}
		}
		sendErr <- nil
	}()

	dropped := 0
	receiveSequence(t, bob, count, 60*time.Second, func(i int) {
		if points[i] {
			// Drop the session the previous drop's reconnect opened, not the
			// one already dying.
			for bob.Reconnects() < int64(dropped) {
				if ctx.Err() != nil {
					t.Fatal("bob never reconnected")
				}
				time.Sleep(time.Millisecond)
			}
			if err := bob.WaitConnected(ctx); err != nil {
				t.Fatalf("bob never reconnected: %v", err)
			}
			bob.DropConnection()
			dropped++
		}
	})
	if err := <-sendErr; err != nil {
		t.Fatalf("alice send: %v", err)
	}
	expectNoMessage(t, bob, 500*time.Millisecond)
	if dropped != drops || bob.Reconnects() < drops {
		t.Fatalf("dropped %d times, bob reconnected %d times; want %d", dropped, bob.Reconnects(), drops)
	}
	t.Logf("bob reconnected %d times", bob.Reconnects())
}

func TestSenderReconnectResendsPendingSends(t *testing.T) {
	n := startNode(t, node.Config{})
	aliceCreds, bobCreds := register(t, n, "alice"), register(t, n, "bob")
	fast := client.WithBackoff(10*time.Millisecond, 200*time.Millisecond)
	alice, bob := dial(t, aliceCreds, fast), dial(t, bobCreds, fast)
	drain(alice)
	ctx := timeout(t, 90*time.Second)

	const count = 1000
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range 10 {
			time.Sleep(time.Duration(5+rand.IntN(30)) * time.Millisecond)
			_ = alice.WaitConnected(ctx)
			alice.DropConnection()
		}
	}()
	ids := sendAll(t, ctx, alice, bobCreds.UserID, 0, count, 64)
	<-done
	if t.Failed() {
		t.FailNow()
	}
	receiveSequence(t, bob, count, 30*time.Second, nil)
	expectNoMessage(t, bob, 300*time.Millisecond)
	if len(ids) != count {
		t.Fatalf("sent %d", len(ids))
	}
	t.Logf("alice reconnected %d times", alice.Reconnects())
}

func TestJSONSubprotocolCarriesTheSameMessages(t *testing.T) {
	n := startNode(t, node.Config{})
	aliceCreds, bobCreds := register(t, n, "alice"), register(t, n, "bob")
	alice := dial(t, aliceCreds, client.WithJSON())
	bobJSON := dial(t, bobCreds, client.WithJSON())
	ctx := timeout(t, 30*time.Second)

	binary := []byte{0, 1, 2, 0xfe, 0xff, '"', '\\', '\n'}
	var ids []string
	for i := range 10 {
		ct := append(append([]byte{}, binary...), payload(i)...)
		res, err := alice.Send(ctx, bobCreds.UserID, ct, client.WithContentType("bin"))
		if err != nil {
			t.Fatalf("json send %d: %v", i, err)
		}
		ids = append(ids, res.ClientMsgID)
	}
	dup, err := alice.SendWithID(ctx, bobCreds.UserID, ids[0], []byte("x"))
	if err != nil || !dup.Duplicate {
		t.Fatalf("json resend = %+v, %v; want duplicate", dup, err)
	}
	for i := range 10 {
		e := next(t, bobJSON, 10*time.Second)
		want := append(append([]byte{}, binary...), payload(i)...)
		if e.ClientMsgID != ids[i] || !bytes.Equal(e.Ciphertext, want) || e.ContentType != "bin" || e.FromUserID != aliceCreds.UserID {
			t.Fatalf("json entry %d = %+v; want %s %q", i, e, ids[i], want)
		}
	}
	delivered := nextOfKind(t, alice, courierpb.EntryKind_ENTRY_KIND_DELIVERED, 10*time.Second)
	if delivered.FromUserID != bobCreds.UserID || len(delivered.ReceiptFor) == 0 {
		t.Fatalf("json delivered receipt %+v", delivered)
	}
	if err := bobJSON.MarkRead(ctx, aliceCreds.UserID, ids[:3]...); err != nil {
		t.Fatal(err)
	}
	read := nextOfKind(t, alice, courierpb.EntryKind_ENTRY_KIND_READ, 10*time.Second)
	if strings.Join(read.ReceiptFor, ",") != strings.Join(ids[:3], ",") {
		t.Fatalf("json read receipt %+v", read)
	}
	if _, err := bobJSON.Ping(ctx); err != nil {
		t.Fatal(err)
	}

	// A binary client and a JSON client see the same entries.
	_ = bobJSON.Close()
	res, err := alice.Send(ctx, bobCreds.UserID, binary)
	if err != nil {
		t.Fatal(err)
	}
	bobBin := dial(t, bobCreds)
	e := nextOfKind(t, bobBin, courierpb.EntryKind_ENTRY_KIND_MESSAGE, 10*time.Second)
	if e.ClientMsgID != res.ClientMsgID || !bytes.Equal(e.Ciphertext, binary) {
		t.Fatalf("binary client got %+v after json session; want %s %q", e, res.ClientMsgID, binary)
	}
}

func TestSendErrorsAreTyped(t *testing.T) {
	n := startNode(t, node.Config{})
	alice := dial(t, register(t, n, "alice"))
	drain(alice)
	ctx := timeout(t, 30*time.Second)

	_, err := alice.Send(ctx, "01900000-0000-7000-8000-000000000000", []byte("hi"))
	var ce *client.Error
	if !errors.As(err, &ce) || ce.Code != courierpb.ErrorCode_NOT_FOUND || ce.Retryable {
		t.Fatalf("send to unknown user: %v; want non-retryable NOT_FOUND", err)
	}
	if _, err := alice.Send(ctx, "someone", nil); !client.IsCode(err, courierpb.ErrorCode_INVALID_ARGUMENT) {
		t.Fatalf("empty ciphertext: %v; want INVALID_ARGUMENT", err)
	}
	if _, err := client.Register(ctx, n.URL(), "bad handle!"); !client.IsCode(err, courierpb.ErrorCode_INVALID_ARGUMENT) {
		t.Fatalf("bad handle: %v; want INVALID_ARGUMENT", err)
	}
	taken := register(t, n, "carol")
	if _, err := client.Register(ctx, n.URL(), taken.Handle); !client.IsCode(err, courierpb.ErrorCode_HANDLE_TAKEN) {
		t.Fatalf("taken handle: %v; want HANDLE_TAKEN", err)
	}
	bad := taken
	bad.DeviceSecret = "wrong"
	if _, err := client.Dial(ctx, bad); !client.IsCode(err, courierpb.ErrorCode_UNAUTHENTICATED) {
		t.Fatalf("wrong secret: %v; want UNAUTHENTICATED", err)
	}
	// Canceling a send that can never be answered ends it.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := alice.Send(cctx, taken.UserID, []byte("x")); !errors.Is(err, context.Canceled) {
		t.Fatalf("canceled send: %v", err)
	}
}

func TestExpiredTokenIsRefreshed(t *testing.T) {
	n := startNode(t, node.Config{TokenTTL: 2 * time.Second})
	aliceCreds, bobCreds := register(t, n, "alice"), register(t, n, "bob")
	alice := dial(t, aliceCreds, client.WithBackoff(10*time.Millisecond, 100*time.Millisecond))
	drain(alice)
	bob := dial(t, bobCreds)
	ctx := timeout(t, 30*time.Second)
	time.Sleep(2500 * time.Millisecond) // every token issued so far expired

	if _, err := alice.LookupHandle(ctx, bobCreds.Handle); err != nil {
		t.Fatalf("lookup with an expired token: %v", err)
	}
	alice.DropConnection()
	if _, err := alice.Send(ctx, bobCreds.UserID, []byte("after expiry")); err != nil {
		t.Fatalf("send after reconnect with an expired token: %v", err)
	}
	if e := next(t, bob, 10*time.Second); string(e.Ciphertext) != "after expiry" {
		t.Fatalf("bob got %q", e.Ciphertext)
	}
	if alice.Reconnects() < 1 {
		t.Fatal("alice did not reconnect")
	}
}

func TestSlowReaderResumesWithoutLoss(t *testing.T) {
	n := startNode(t, node.Config{})
	aliceCreds, bobCreds := register(t, n, "alice"), register(t, n, "bob")
	alice := dial(t, aliceCreds)
	drain(alice)
	bob := dial(t, bobCreds, client.WithEntryBuffer(8), client.WithBackoff(10*time.Millisecond, 100*time.Millisecond))
	ctx := timeout(t, 60*time.Second)

	const count = 300
	sendAll(t, ctx, alice, bobCreds.UserID, 0, count, 32)
	// Bob has not read a thing: his requests must still be answered.
	if _, err := bob.Ping(ctx); err != nil {
		t.Fatalf("ping while not reading: %v", err)
	}
	if _, err := bob.Send(ctx, aliceCreds.UserID, []byte("busy")); err != nil {
		t.Fatalf("send while not reading: %v", err)
	}
	receiveSequence(t, bob, count, 30*time.Second, func(i int) {
		if i%50 == 0 {
			time.Sleep(20 * time.Millisecond)
		}
	})
	expectNoMessage(t, bob, 300*time.Millisecond)
}

func TestCloseStopsEverything(t *testing.T) {
	n := startNode(t, node.Config{})
	aliceCreds, bobCreds := register(t, n, "alice"), register(t, n, "bob")
	alice := dial(t, aliceCreds)
	bob := dial(t, bobCreds)
	ctx := timeout(t, 30*time.Second)
	if _, err := alice.Send(ctx, bobCreds.UserID, []byte("x")); err != nil {
		t.Fatal(err)
	}
	_ = next(t, bob, 10*time.Second)
	// A send that is waiting when the client closes fails with ErrClosed.
	bob.DropConnection()
	_ = alice.Close()
	_ = bob.Close()
	if _, ok := <-alice.Entries(); ok {
		// Entries may still hold nothing: the channel must be closed.
		for range alice.Entries() {
		}
	}
	if _, err := alice.Send(ctx, bobCreds.UserID, []byte("y")); !errors.Is(err, client.ErrClosed) {
		t.Fatalf("send after close: %v", err)
	}
	if err := alice.Close(); err != nil {
		t.Fatalf("second close: %v", err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		buf := make([]byte, 1<<20)
		stacks := string(buf[:runtime.Stack(buf, true)])
		var leaked []string
		for _, g := range strings.Split(stacks, "\n\n") {
			if strings.Contains(g, "courier/client.(*Client)") || strings.Contains(g, "courier/client.(*conn)") {
				leaked = append(leaked, g)
			}
		}
		if len(leaked) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d client goroutines left after Close:\n%s", len(leaked), strings.Join(leaked, "\n\n"))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestManyConcurrentSenders(t *testing.T) {
	n := startNode(t, node.Config{})
	bobCreds := register(t, n, "bob")
	bob := dial(t, bobCreds)
	ctx := timeout(t, 60*time.Second)
	const senders, each = 8, 100
	var wg sync.WaitGroup
	for s := range senders {
		c := dial(t, register(t, n, fmt.Sprintf("s%d", s)))
		drain(c)
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Many goroutines share one client: req_id multiplexing.
			var inner sync.WaitGroup
			for g := range 4 {
				inner.Add(1)
				go func() {
					defer inner.Done()
					for i := range each / 4 {
						if _, err := c.Send(ctx, bobCreds.UserID, fmt.Appendf(nil, "%d/%d/%d", s, g, i)); err != nil {
							t.Errorf("send: %v", err)
							return
						}
					}
				}()
			}
			inner.Wait()
		}()
	}
	seen := map[string]bool{}
	for len(seen) < senders*each {
		e := next(t, bob, 20*time.Second)
		if seen[string(e.Ciphertext)] {
			t.Fatalf("duplicate %q", e.Ciphertext)
		}
		seen[string(e.Ciphertext)] = true
	}
	wg.Wait()
}

func TestSecondConnectionOfADeviceReplacesTheFirst(t *testing.T) {
	n := startNode(t, node.Config{})
	aliceCreds, bobCreds := register(t, n, "alice"), register(t, n, "bob")
	alice := dial(t, aliceCreds)
	drain(alice)
	first := dial(t, bobCreds)
	second := dial(t, bobCreds)

	// The first connection is told it was replaced and stops for good
	// instead of fighting the second for the inbox.
	select {
	case _, ok := <-first.Entries():
		for ok {
			_, ok = <-first.Entries()
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the replaced connection is still open")
	}
	if !first.Replaced() {
		t.Fatal("first connection closed without being marked replaced")
	}
	// The newest connection gets the messages.
	ctx := timeout(t, 10*time.Second)
	if _, err := alice.Send(ctx, bobCreds.UserID, []byte("to the newest")); err != nil {
		t.Fatal(err)
	}
	e := nextOfKind(t, second, courierpb.EntryKind_ENTRY_KIND_MESSAGE, 10*time.Second)
	if string(e.Ciphertext) != "to the newest" {
		t.Fatalf("got %q", e.Ciphertext)
	}
}

func TestClientFailsOverToTheNextServer(t *testing.T) {
	n := startNode(t, node.Config{})
	creds := register(t, n, "failover")
	// The first server in the list is down (a port nothing listens on): the
	// client moves on to the next one instead of retrying a dead node.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "http://" + ln.Addr().String()
	ln.Close()
	creds.BaseURL = dead
	c := dial(t, creds, client.WithServers(n.URL()), client.WithBackoff(10*time.Millisecond, 100*time.Millisecond))
	if !c.Connected() {
		t.Fatal("not connected")
	}
	peer := dial(t, register(t, n, "failover-peer"))
	ctx := timeout(t, 10*time.Second)
	if _, err := c.Send(ctx, peer.UserID(), []byte("via the second server")); err != nil {
		t.Fatal(err)
	}
	if e := nextOfKind(t, peer, courierpb.EntryKind_ENTRY_KIND_MESSAGE, 10*time.Second); string(e.Ciphertext) != "via the second server" {
		t.Fatalf("peer got %q", e.Ciphertext)
	}
}

// TestARateLimitedSendWaitsTheServersRetryAfter: a send refused by the
// per-user limit is retried by the SDK no sooner than the server said, so
// it lands once the bucket refills after a single refusal, instead of
// hammering the limit with backoff retries (50 ms, 100 ms, ... would make
// four more refusals within the second).
func TestARateLimitedSendWaitsTheServersRetryAfter(t *testing.T) {
	limits := gateway.Limits{}.WithDefaults()
	limits.Actions[gateway.ActionSend].PerUser = gateway.Rate{N: 1, Per: time.Second}
	n := startNode(t, node.Config{Limits: limits})
	alice, bob := register(t, n, "alice"), register(t, n, "bob")
	a, b := dial(t, alice), dial(t, bob)
	ctx := timeout(t, 10*time.Second)
	if _, err := a.Send(ctx, bob.UserID, []byte("one")); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if _, err := a.Send(ctx, bob.UserID, []byte("two")); err != nil {
		t.Fatalf("second send: %v", err)
	}
	if waited := time.Since(start); waited < 800*time.Millisecond {
		t.Fatalf("second send of a 1/s budget stored after %v", waited)
	}
	if got := n.Gateway().RateLimited()["send/user"]; got != 1 {
		t.Fatalf("the SDK was refused %d times, want once: it must wait the retry_after", got)
	}
	for _, want := range []string{"one", "two"} {
		if e := nextOfKind(t, b, courierpb.EntryKind_ENTRY_KIND_MESSAGE, 5*time.Second); string(e.Ciphertext) != want {
			t.Fatalf("bob got %q, want %q", e.Ciphertext, want)
		}
	}
}
