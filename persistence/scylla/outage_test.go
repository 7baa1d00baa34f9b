package scylla_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"google.golang.org/protobuf/proto"

	"github.com/courier-im/courier/gateway"
	"github.com/courier-im/courier/internal/nodetest"
	"github.com/courier-im/courier/node"
	"github.com/courier-im/courier/protos/courierpb"
)

// outageEnv enables the database-outage test and names the run directory
// of the Cassandra node the test starts for itself (scripts/cassandra.sh,
// other ports), so stopping it never disturbs the tests sharing the
// suite's node. scripts/test.sh sets it, and stops that node on exit even
// when this test's binary dies before its cleanup runs.
const outageEnv = "COURIER_TEST_CASSANDRA_OUTAGE"

// cassandraNode is a Cassandra node this test owns.
type cassandraNode struct {
	t      *testing.T
	script string
	env    []string
	port   int
}

func startOwnCassandra(t *testing.T) *cassandraNode {
	t.Helper()
	dir := os.Getenv(outageEnv)
	if dir == "" {
		msg := outageEnv + " is not set: this test starts and stops a Cassandra node of its own; run it with `make test`"
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	script, err := filepath.Abs("../../scripts/cassandra.sh")
	if err != nil {
		t.Fatal(err)
	}
	c := &cassandraNode{t: t, script: script, port: 19042}
	c.env = append(os.Environ(),
		"COURIER_CASSANDRA_DIR="+dir,
		fmt.Sprintf("COURIER_CASSANDRA_PORT=%d", c.port),
		"COURIER_CASSANDRA_STORAGE_PORT=17000",
		"COURIER_CASSANDRA_JMX_PORT=17199",
		"COURIER_CASSANDRA_HEAP=512M",
	)
	c.run("stop") // a node an earlier, killed run left behind
	t.Cleanup(func() { c.run("stop") })
	c.run("start")
	return c
}

// run runs one scripts/cassandra.sh command and fails the test if it does.
func (c *cassandraNode) run(cmd string) {
	c.t.Helper()
	start := time.Now()
	x := exec.Command(c.script, cmd)
	x.Env = c.env
	out, err := x.CombinedOutput()
	if err != nil {
		c.t.Fatalf("cassandra.sh %s: %v\n%s", cmd, err, out)
	}
	c.t.Logf("cassandra.sh %s took %v", cmd, time.Since(start).Round(time.Millisecond))
}

// TestSendsFailRetryablyWhileTheDatabaseIsDown stops the database while a
// sender streams through a node on the scylla store. Sends during the
// outage must fail with a retryable UNAVAILABLE (never a SendAck for
// something not stored); the node must reconnect by itself when the
// database is back; and afterwards every acknowledged message is delivered
// exactly once, and every message the sender retried at least once.
func TestSendsFailRetryablyWhileTheDatabaseIsDown(t *testing.T) {
	db := startOwnCassandra(t)
	hosts := []string{fmt.Sprintf("127.0.0.1:%d", db.port)}

	ctx, cancel := context.WithTimeout(t.Context(), 4*time.Minute)
	defer cancel()
	n, err := node.Start(ctx, node.Config{
		// Thousands of sends from one user: the per-user limits would refuse
		// them before the outage could.
		Limits: gateway.Limits{}.WithoutActionLimits(),
		Listen: "127.0.0.1:0", Store: "scylla", ScyllaHosts: hosts, ScyllaKeyspace: "courier_outage",
		TokenKeysFile: nodetest.TokenKeysFile(t), // a scylla node makes none of its own
		Logger:        testLogger(),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		_ = n.Close(cctx)
	})
	base := "http://" + n.Addr()
	alice, bob := registerRaw(t, base, "alice"), registerRaw(t, base, "bob")

	s := newStreamer(t, base, alice.token, bob.userID)
	defer s.close()
	go s.run(ctx)

	s.waitAcks(t, 200, 20*time.Second)
	db.run("halt") // SIGTERM: the node drains and exits
	downAt := time.Now()
	s.waitErrors(t, 20, 20*time.Second)
	db.run("start")
	upAt := time.Now()
	// The node was not told anything: its driver must find the database
	// again by itself.
	s.waitAckAfter(t, upAt, 60*time.Second)
	t.Logf("database down for %v; first ack %v after it answered again",
		upAt.Sub(downAt).Round(time.Millisecond), s.firstAckAfter(upAt).Sub(upAt).Round(time.Millisecond))
	time.Sleep(500 * time.Millisecond)
	s.stop(t)

	acked, failed := s.outcomes(t)
	if len(failed) == 0 {
		t.Fatal("no send failed while the database was down")
	}
	// A real client retries failed sends with the same client_msg_id.
	s.resend(t, failed)
	t.Logf("%d sends acked while streaming, %d failed (all UNAVAILABLE, retryable) and were retried", len(acked), len(failed))

	seen := readAll(t, base, bob.token)
	for _, id := range acked {
		if seen[id] != 1 {
			t.Errorf("acked message %s delivered %d times, want exactly once", id, seen[id])
		}
	}
	dups := 0
	for _, id := range failed {
		switch {
		case seen[id] == 0:
			t.Errorf("retried message %s was never delivered", id)
		case seen[id] > 1:
			// A send whose first attempt had an unknown outcome (its
			// entry landed, its reply did not) is stored again by the
			// retry; see Store.Append. The SDK drops such a duplicate.
			dups++
		}
	}
	if dups > 0 {
		t.Logf("%d of %d retried messages were delivered twice (first attempt's outcome was unknown)", dups, len(failed))
	}
}

type rawAccount struct{ userID, token string }

func registerRaw(t *testing.T, base, handle string) rawAccount {
	t.Helper()
	handle = fmt.Sprintf("%s-%d", handle, time.Now().UnixNano())
	var reg gateway.RegisterResponse
	postJSON(t, base+"/v1/register", gateway.RegisterRequest{Handle: handle}, http.StatusCreated, &reg)
	var tok gateway.TokenResponse
	postJSON(t, base+"/v1/token", gateway.TokenRequest{UserID: reg.UserID, DeviceID: 1, DeviceSecret: reg.DeviceSecret}, http.StatusOK, &tok)
	return rawAccount{userID: reg.UserID, token: tok.AccessToken}
}

func postJSON(t *testing.T, url string, body any, want int, out any) {
	t.Helper()
	b, _ := json.Marshal(body)
	resp, err := http.Post(url, "application/json", bytes.NewReader(b))
	if err != nil {
		t.Fatalf("POST %s: %v", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != want {
		t.Fatalf("POST %s: HTTP %d, want %d", url, resp.StatusCode, want)
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		t.Fatalf("POST %s: decode: %v", url, err)
	}
}

func dialWS(t *testing.T, base, token string) *websocket.Conn {
	t.Helper()
	u := "ws" + strings.TrimPrefix(base, "http") + "/v1/ws?token=" + token
	c, _, err := websocket.DefaultDialer.Dial(u, nil)
	if err != nil {
		t.Fatalf("dial %s: %v", u, err)
	}
	f := readFrame(t, c, 10*time.Second)
	if f.GetAttached() == nil {
		t.Fatalf("first frame %v, want Attached", f)
	}
	return c
}

func readFrame(t *testing.T, c *websocket.Conn, d time.Duration) *courierpb.ServerFrame {
	t.Helper()
	f, err := tryReadFrame(c, d)
	if err != nil {
		t.Fatalf("read frame: %v", err)
	}
	return f
}

func tryReadFrame(c *websocket.Conn, d time.Duration) (*courierpb.ServerFrame, error) {
	_ = c.SetReadDeadline(time.Now().Add(d))
	_, b, err := c.ReadMessage()
	if err != nil {
		return nil, err
	}
	f := &courierpb.ServerFrame{}
	return f, proto.Unmarshal(b, f)
}

// streamer sends messages as fast as a window of 32 unanswered sends
// allows, and records every reply.
type streamer struct {
	c      *websocket.Conn
	to     string
	window chan struct{}

	mu      sync.Mutex
	wmu     sync.Mutex // serialises socket writes
	nextReq uint64
	ids     map[uint64]string    // req_id → client_msg_id
	ackAt   map[string]time.Time // client_msg_id → first SendAck
	errs    map[string]*courierpb.Error
	sent    int
	replies int
	halt    chan struct{}
	done    chan struct{}
	readErr chan error
}

func newStreamer(t *testing.T, base, token, to string) *streamer {
	s := &streamer{
		c: dialWS(t, base, token), to: to, window: make(chan struct{}, 32),
		ids: map[uint64]string{}, ackAt: map[string]time.Time{}, errs: map[string]*courierpb.Error{},
		halt: make(chan struct{}), done: make(chan struct{}), readErr: make(chan error, 1),
	}
	go s.read()
	return s
}

func (s *streamer) close() { _ = s.c.Close() }

func (s *streamer) send(id string) error {
	s.mu.Lock()
	s.nextReq++
	req := s.nextReq
	s.ids[req] = id
	s.mu.Unlock()
	b, _ := proto.Marshal(&courierpb.ClientFrame{ReqId: req, Body: &courierpb.ClientFrame_Send{Send: &courierpb.Send{
		ClientMsgId: id, ToUserId: s.to, Ciphertext: []byte("payload " + id),
	}}})
	s.wmu.Lock()
	defer s.wmu.Unlock()
	return s.c.WriteMessage(websocket.BinaryMessage, b)
}

// run streams until stop, at most one send per 4 ms: fast enough to keep a
// group commit busy, well under the socket's rate limit even when every
// send fails at once.
func (s *streamer) run(ctx context.Context) {
	defer close(s.done)
	tick := time.NewTicker(4 * time.Millisecond)
	defer tick.Stop()
	for i := 0; ; i++ {
		select {
		case <-tick.C:
		case <-s.halt:
			return
		}
		select {
		case s.window <- struct{}{}:
		case <-s.halt:
			return
		case <-ctx.Done():
			return
		}
		if err := s.send(fmt.Sprintf("m%06d", i)); err != nil {
			return
		}
		s.mu.Lock()
		s.sent++
		s.mu.Unlock()
	}
}

func (s *streamer) read() {
	for {
		f, err := tryReadFrame(s.c, 5*time.Minute)
		if err != nil {
			s.readErr <- err
			return
		}
		s.mu.Lock()
		id, ok := s.ids[f.ReqId]
		switch {
		case !ok:
		case f.GetSendAck() != nil:
			if _, dup := s.ackAt[id]; !dup {
				s.ackAt[id] = time.Now()
			}
			delete(s.errs, id)
			s.replies++
		case f.GetError() != nil:
			if _, acked := s.ackAt[id]; !acked {
				s.errs[id] = f.GetError()
			}
			s.replies++
		}
		s.mu.Unlock()
		if ok && (f.GetSendAck() != nil || f.GetError() != nil) {
			select {
			case <-s.window:
			default:
			}
		}
	}
}

func (s *streamer) waitFor(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		s.mu.Lock()
		ok := cond()
		s.mu.Unlock()
		if ok {
			return
		}
		select {
		case err := <-s.readErr:
			t.Fatalf("waiting for %s: sender socket failed: %v", what, err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %s within %v", what, d)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (s *streamer) waitAcks(t *testing.T, n int, d time.Duration) {
	s.waitFor(t, fmt.Sprintf("%d acks", n), d, func() bool { return len(s.ackAt) >= n })
}

func (s *streamer) waitErrors(t *testing.T, n int, d time.Duration) {
	s.waitFor(t, fmt.Sprintf("%d failed sends", n), d, func() bool { return len(s.errs) >= n })
}

func (s *streamer) firstAckAfter(at time.Time) time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	var first time.Time
	for _, a := range s.ackAt {
		if a.After(at) && (first.IsZero() || a.Before(first)) {
			first = a
		}
	}
	return first
}

func (s *streamer) waitAckAfter(t *testing.T, at time.Time, d time.Duration) {
	s.waitFor(t, "ack after the database returned", d, func() bool {
		for _, a := range s.ackAt {
			if a.After(at) {
				return true
			}
		}
		return false
	})
}

// stop ends streaming and waits until every send has its reply.
func (s *streamer) stop(t *testing.T) {
	close(s.halt)
	<-s.done
	s.waitFor(t, "replies to every send", 30*time.Second, func() bool { return s.replies >= s.sent })
}

// outcomes checks every failure is a retryable UNAVAILABLE and returns the
// acked and failed client_msg_ids.
func (s *streamer) outcomes(t *testing.T) (acked, failed []string) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	for id := range s.ackAt {
		acked = append(acked, id)
	}
	for id, e := range s.errs {
		if e.GetCode() != courierpb.ErrorCode_UNAVAILABLE || !e.GetRetryable() {
			t.Errorf("send %s failed with %v (retryable %v), want a retryable UNAVAILABLE", id, e.GetCode(), e.GetRetryable())
		}
		failed = append(failed, id)
	}
	return acked, failed
}

// resend retries failed sends (same client_msg_ids) until each is acked,
// through the same window as the stream.
func (s *streamer) resend(t *testing.T, ids []string) {
	t.Helper()
	for round := 0; len(ids) > 0; round++ {
		if round == 10 {
			t.Fatalf("%d resends still not acked after %d rounds", len(ids), round)
		}
		s.mu.Lock()
		for _, id := range ids {
			delete(s.errs, id)
		}
		before := s.replies
		s.mu.Unlock()
		for _, id := range ids {
			s.window <- struct{}{}
			if err := s.send(id); err != nil {
				t.Fatalf("resend %s: %v", id, err)
			}
		}
		s.waitFor(t, "replies to the resends", time.Minute, func() bool { return s.replies >= before+len(ids) })
		s.mu.Lock()
		var again []string
		for _, id := range ids {
			if _, ok := s.ackAt[id]; !ok {
				again = append(again, id)
			}
		}
		s.mu.Unlock()
		ids = again
		time.Sleep(100 * time.Millisecond)
	}
}

// readAll connects as the recipient and counts deliveries per
// client_msg_id until the inbox is quiet, checking the order.
func readAll(t *testing.T, base, token string) map[string]int {
	t.Helper()
	c := dialWS(t, base, token)
	defer c.Close()
	seen := map[string]int{}
	var last uint64
	for {
		f, err := tryReadFrame(c, 3*time.Second)
		if err != nil {
			return seen
		}
		for _, e := range f.GetDeliver().GetEntries() {
			if e.GetInboxSeq() <= last {
				t.Fatalf("inbox_seq %d after %d", e.GetInboxSeq(), last)
			}
			last = e.GetInboxSeq()
			if e.GetKind() == courierpb.EntryKind_ENTRY_KIND_MESSAGE {
				seen[e.GetClientMsgId()]++
			}
		}
	}
}
