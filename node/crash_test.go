package node_test

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/courier-im/courier/gateway"
	"github.com/courier-im/courier/internal/storematrix"
	"github.com/courier-im/courier/node"
	"github.com/courier-im/courier/protos/courierpb"
)

// TestMain lets a test re-run this binary as a bare server process that a
// test can SIGKILL: a crash, not a graceful shutdown.
func TestMain(m *testing.M) {
	if dir := os.Getenv("COURIER_TEST_CHILD_DATA"); dir != "" {
		runChildServer(dir, os.Getenv("COURIER_TEST_CHILD_LISTEN"))
		return
	}
	os.Exit(m.Run())
}

func runChildServer(dir, listen string) {
	// The restart signs tokens alike: embedded, with the key file the
	// first start made in dir; scylla, with the subtest's key file.
	cfg := node.Config{Listen: listen, DataDir: dir, Logger: testLogger(nil),
		// Every client of the test comes from 127.0.0.1 (as in nodetest).
		MaxConnsPerIP: -1, Limits: gateway.Limits{RegisterPerIP: gateway.Off, TokenPerIP: gateway.Off}}
	storematrix.FromEnv(&cfg) // the store the parent test runs against
	n, err := node.Start(context.Background(), cfg)
	if err != nil {
		fmt.Println("error", err)
		os.Exit(1)
	}
	fmt.Println("listening", n.Addr())
	select {} // until killed
}

type childServer struct {
	cmd  *exec.Cmd
	addr string
}

func startChild(t *testing.T, dir, listen string) *childServer {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "COURIER_TEST_CHILD_DATA="+dir, "COURIER_TEST_CHILD_LISTEN="+listen)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	lines := bufio.NewScanner(out)
	ready := make(chan string, 1)
	go func() {
		for lines.Scan() {
			if addr, ok := strings.CutPrefix(lines.Text(), "listening "); ok {
				ready <- addr
			}
		}
	}()
	select {
	case addr := <-ready:
		return &childServer{cmd: cmd, addr: addr}
	case <-time.After(30 * time.Second):
		t.Fatal("child server did not start")
		return nil
	}
}

func (c *childServer) kill(t *testing.T) {
	t.Helper()
	if err := c.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = c.cmd.Wait()
}

func TestAckedMessagesSurviveServerSIGKILL(t *testing.T) {
	storematrix.Run(t, testAckedMessagesSurviveServerSIGKILL)
}

func testAckedMessagesSurviveServerSIGKILL(t *testing.T, store storematrix.Store) {
	store.Setenv(t) // the child servers use the store
	dir := t.TempDir()
	srv := startChild(t, dir, "127.0.0.1:0")
	base := "http://" + srv.addr
	a := register(t, base, "alice")
	b := register(t, base, "bob")

	// Alice streams as fast as the server acks; the server is killed in the
	// middle. Every SendAck she got is a promise the restarted server keeps.
	ca := dial(t, base, a.Token, 0)
	ca.attached()
	var mu sync.Mutex
	acked := map[string]bool{}
	refused, lastRefusal := 0, ""
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			f, err := ca.read(20 * time.Second)
			if err != nil {
				return
			}
			mu.Lock()
			if ack := f.GetSendAck(); ack != nil {
				acked[ack.ClientMsgId] = true
			} else if e := f.GetError(); e != nil {
				// A store overloaded by the other packages' tests may refuse
				// (retryably); this client does not retry, so such a send
				// is simply not acked.
				refused++
				lastRefusal = e.String()
			}
			mu.Unlock()
		}
	}()
	const total = 5000
	sent := 0
	for i := range total {
		if err := ca.c.WriteMessage(2, mustMarshal(&courierpb.ClientFrame{ReqId: uint64(i + 1), Body: &courierpb.ClientFrame_Send{Send: &courierpb.Send{
			ClientMsgId: fmt.Sprintf("m%05d", i), ToUserId: b.UserID, Ciphertext: []byte("payload"),
		}}})); err != nil {
			break
		}
		sent++
		if i == 1500 {
			// Let acks flow, then pull the plug mid-stream. The deadline is
			// generous: in `make test` the CQL node is shared with the
			// cluster tests, and 500 acks can take well over 10 s there.
			// Or, when the store refused some, once every send is answered.
			answered := func() bool {
				mu.Lock()
				defer mu.Unlock()
				return len(acked) > 500 || (len(acked) > 0 && len(acked)+refused >= sent)
			}
			if !eventually(time.Minute, answered) {
				mu.Lock()
				t.Fatalf("after a minute: %d of %d sends acked, %d refused (last: %s)", len(acked), sent, refused, lastRefusal)
			}
			srv.kill(t)
			break
		}
	}
	<-done
	mu.Lock()
	nAcked := len(acked)
	mu.Unlock()
	if nAcked == 0 {
		t.Fatal("no message was acked before the kill")
	}

	restarted := startChild(t, dir, srv.addr)
	base = "http://" + restarted.addr
	cb := dial(t, base, b.Token, 0)
	att := cb.attached()
	seen := map[string]int{}
	var lastSeq uint64
	for {
		e, err := cb.nextEntry(3 * time.Second)
		if err != nil {
			break
		}
		if e.InboxSeq <= lastSeq {
			t.Fatalf("inbox_seq %d after %d: out of order", e.InboxSeq, lastSeq)
		}
		lastSeq = e.InboxSeq
		seen[e.ClientMsgId]++
	}
	for id := range acked {
		if seen[id] != 1 {
			t.Errorf("acked message %s delivered %d times after the crash", id, seen[id])
		}
	}
	for id, c := range seen {
		if c != 1 {
			t.Errorf("message %s delivered %d times", id, c)
		}
	}
	t.Logf("sent %d, acked %d before SIGKILL, %d delivered after restart (replay through %d)", sent, nAcked, len(seen), att.ReplayThrough)
}

func waitFor(t *testing.T, timeout time.Duration, cond func() bool) {
	t.Helper()
	if !eventually(timeout, cond) {
		t.Fatal("condition not met in time")
	}
}

// eventually reports whether cond became true within timeout.
func eventually(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
	return true
}
