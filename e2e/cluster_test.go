package e2e_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"github.com/courier-im/courier/admin"
	"github.com/courier-im/courier/bench"
	"github.com/courier-im/courier/client"
	"github.com/courier-im/courier/internal/consultest"
)

func TestUsersSpreadOverThreeNodesAndReceiptsFlowAcrossNodes(t *testing.T) {
	c := newCluster(t, consultest.Addr(t))
	all := []*nodeProc{c.start(0), c.start(1), c.start(2)}
	c.waitMembers(30*time.Second, all, all...)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	// 30 users, registered and connected round-robin over the nodes.
	const users = 30
	clients := make([]*client.Client, users)
	for i := range users {
		n := all[i%3]
		cr, err := client.Register(ctx, n.url, fmt.Sprintf("spread-%d-%d", time.Now().UnixNano(), i))
		if err != nil {
			t.Fatalf("register on node %d: %v", n.index+1, err)
		}
		if clients[i], err = client.Dial(ctx, cr); err != nil {
			t.Fatalf("dial node %d: %v", n.index+1, err)
		}
		defer clients[i].Close()
	}

	// The operator's view, through the CLI: every member hosts some users.
	out, err := exec.Command(courierBin, "admin", "grains", "--json", "--url", all[1].url, "--token", adminToken).Output()
	if err != nil {
		t.Fatalf("courier admin grains: %v", err)
	}
	var grains admin.GrainsReply
	if err := json.Unmarshal(out, &grains); err != nil {
		t.Fatalf("courier admin grains printed %q: %v", out, err)
	}
	if len(grains.Members) != 3 {
		t.Fatalf("admin grains shows %d members, want 3: %s", len(grains.Members), out)
	}
	total := int64(0)
	for _, m := range grains.Members {
		if m.Error != "" || m.Activations["user"] == 0 {
			t.Fatalf("member %s hosts no users (error %q): %s", m.Address, m.Error, out)
		}
		total += m.Activations["user"]
	}
	if total < users {
		t.Fatalf("admin grains counts %d user activations, want at least %d", total, users)
	}

	// A sits on node 1 and B on node 3, and neither's grain lives on the
	// node its socket is on: every hop of the exchange crosses nodes.
	where := func(userID string) string {
		r, err := all[0].admin().Where(ctx, "user", userID)
		if err != nil {
			t.Fatal(err)
		}
		return r.Owner.Address
	}
	var a, b *client.Client
	for i := 0; i < users && (a == nil || b == nil); i++ {
		switch i % 3 {
		case 0:
			if a == nil && where(clients[i].UserID()) != all[0].nodeAddr {
				a = clients[i]
			}
		case 2:
			if b == nil && where(clients[i].UserID()) != all[2].nodeAddr {
				b = clients[i]
			}
		}
	}
	if a == nil || b == nil {
		t.Fatal("no user pair with grains away from their sockets; placement is not spreading users")
	}
	t.Logf("A %s socket on node 1, grain on %s; B %s socket on node 3, grain on %s",
		a.UserID(), where(a.UserID()), b.UserID(), where(b.UserID()))

	res, err := a.Send(ctx, b.UserID(), []byte("across the cluster"))
	if err != nil {
		t.Fatal(err)
	}
	got := waitEntry(t, b, 20*time.Second, func(e client.Entry) bool { return e.IsMessage() && e.ClientMsgID == res.ClientMsgID })
	if string(got.Ciphertext) != "across the cluster" || got.FromUserID != a.UserID() {
		t.Fatalf("B got %+v", got)
	}
	waitEntry(t, a, 20*time.Second, func(e client.Entry) bool { return e.IsDelivered() && contains(e.ReceiptFor, res.ClientMsgID) })
	if err := b.MarkRead(ctx, a.UserID(), res.ClientMsgID); err != nil {
		t.Fatal(err)
	}
	waitEntry(t, a, 20*time.Second, func(e client.Entry) bool { return e.IsRead() && contains(e.ReceiptFor, res.ClientMsgID) })
}

func TestKillNineWhileStreamingLosesNothing(t *testing.T) {
	c := newCluster(t, consultest.Addr(t))
	all := []*nodeProc{c.start(0), c.start(1), c.start(2)}
	c.waitMembers(30*time.Second, all, all...)

	// 200 pairs stream over all three gateways; node 3 is killed
	// mid-stream.
	done := streamPairs(t, c.urls(all...), 200)
	time.Sleep(3 * time.Second)
	killed := time.Now()
	c.kill(2)
	t.Logf("node 3 killed")
	survivors := all[:2]
	c.waitMembers(c.ttl+15*time.Second, survivors, survivors...)
	t.Logf("survivors own everything %v after the kill", time.Since(killed).Round(time.Millisecond))

	res := <-done
	if res.err != nil {
		t.Fatal(res.err)
	}
	r := res.r
	t.Logf("sent %d, send errors %d, delivered %d, lost %d, dup %d, reordered %d, reconnects %d, %.0f msgs/s",
		r.Sent, r.SendErrors, r.Delivered, r.Lost, r.Duplicates, r.Reordered, r.Reconnects, r.MsgsPerSec)
	if !r.OK() {
		t.Fatalf("delivery broken after kill -9: %s", r.Problem())
	}
	if r.Reconnects == 0 {
		t.Fatal("no client reconnected: the killed node had no clients, so the test proved nothing")
	}
	if r.Sent < int64(r.Pairs*r.Messages)*9/10 {
		t.Fatalf("only %d of %d sends were acknowledged", r.Sent, r.Pairs*r.Messages)
	}
	// The survivors own every grain.
	for _, n := range survivors {
		st, err := n.admin().Grains(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range st.Members {
			if m.Address == all[2].nodeAddr {
				t.Fatalf("node %d still lists the dead node: %+v", n.index+1, st)
			}
		}
	}
}

func TestNodeJoiningUnderLoadLosesNothing(t *testing.T) {
	c := newCluster(t, consultest.Addr(t))
	first := []*nodeProc{c.start(0), c.start(1)}
	c.waitMembers(30*time.Second, first, first...)

	done := streamPairs(t, c.urls(first...), 100)
	time.Sleep(2 * time.Second)
	third := c.start(2)
	all := append(first, third)
	c.waitMembers(30*time.Second, all, all...)
	t.Logf("node 3 joined under load")
	// Grains moved to it while the stream went on.
	var moved int64
	deadline := time.Now().Add(20 * time.Second)
	for moved == 0 && time.Now().Before(deadline) {
		st, err := third.admin().Stats(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		moved = st.Activations["user"]
		time.Sleep(100 * time.Millisecond)
	}
	if moved == 0 {
		t.Fatal("no user grain moved to the new node")
	}
	res := <-done
	if res.err != nil {
		t.Fatal(res.err)
	}
	r := res.r
	t.Logf("sent %d, delivered %d, lost %d, dup %d, reordered %d; %d users active on the new node",
		r.Sent, r.Delivered, r.Lost, r.Duplicates, r.Reordered, moved)
	if !r.OK() || r.SendErrors > 0 {
		t.Fatalf("delivery broken by a join: %s (send errors %d)", r.Problem(), r.SendErrors)
	}
}

func TestConsulRestartKeepsTheClusterServing(t *testing.T) {
	agent := consultest.Start(t, "127.0.0.4")
	c := newCluster(t, agent.Addr())
	all := []*nodeProc{c.start(0), c.start(1), c.start(2)}
	c.waitMembers(30*time.Second, all, all...)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	a, b := connectedPair(t, ctx, all[0], all[2])

	agent.Stop()
	time.Sleep(3 * c.ttl)
	// Consul is gone; the members the nodes know keep serving each other.
	c.waitMembers(5*time.Second, all, all...)
	exchange(t, ctx, a, b, "while consul is down")

	agent.Restart()
	c.waitMembers(30*time.Second, all, all...)
	exchange(t, ctx, b, a, "after consul came back")
}

func TestPausedNodeRejoinsAndServesAgain(t *testing.T) {
	c := newCluster(t, consultest.Addr(t))
	all := []*nodeProc{c.start(0), c.start(1), c.start(2)}
	c.waitMembers(30*time.Second, all, all...)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	a, b := connectedPair(t, ctx, all[0], all[2])
	exchange(t, ctx, a, b, "before the pause")

	all[2].signal(syscall.SIGSTOP)
	c.waitMembers(c.ttl+15*time.Second, all[:2], all[:2]...)
	t.Logf("node 3 paused past its TTL and dropped")
	// Meanwhile the others serve: a message to B waits in its inbox.
	res, err := a.Send(ctx, b.UserID(), []byte("while node 3 sleeps"))
	if err != nil {
		t.Fatal(err)
	}

	all[2].signal(syscall.SIGCONT)
	c.waitMembers(30*time.Second, all, all...)
	t.Logf("node 3 rejoined without a restart")
	waitEntry(t, b, 30*time.Second, func(e client.Entry) bool { return e.IsMessage() && e.ClientMsgID == res.ClientMsgID })
	// B's socket is still (or again) on node 3, and it serves both ways.
	exchange(t, ctx, b, a, "after the pause")
	exchange(t, ctx, a, b, "after the pause, back")
	if !all[2].alive() {
		t.Fatal("node 3 died")
	}

}

type streamResult struct {
	r   *bench.Report
	err error
}

// streamPairs starts pairs senders streaming 60 numbered messages each, one
// at a time (so "in order per sender" is a promise the server must keep),
// over the gateways, and returns once they are sending; the report arrives
// on the channel when the stream is done.
func streamPairs(t *testing.T, urls string, pairs int) <-chan streamResult {
	t.Helper()
	sending := newPhaseWriter("sending", testWriter{t})
	done := make(chan streamResult, 1)
	go func() {
		r, err := bench.Direct(context.Background(), bench.DirectConfig{
			Target:   bench.Target{URL: urls, DurationLimit: 4 * time.Minute, Progress: sending},
			Pairs:    pairs,
			Messages: 60,
			Window:   1,
		})
		done <- streamResult{r, err}
	}()
	select {
	case <-sending.seen:
	case res := <-done:
		t.Fatalf("bench ended before sending: %v", res.err)
	case <-time.After(3 * time.Minute):
		t.Fatal("bench did not start sending")
	}
	return done
}

// connectedPair registers two users and connects one to each node.
func connectedPair(t *testing.T, ctx context.Context, na, nb *nodeProc) (*client.Client, *client.Client) {
	t.Helper()
	dial := func(n *nodeProc, name string) *client.Client {
		cr, err := client.Register(ctx, n.url, fmt.Sprintf("%s-%d", name, time.Now().UnixNano()))
		if err != nil {
			t.Fatal(err)
		}
		cl, err := client.Dial(ctx, cr, client.WithBackoff(50*time.Millisecond, time.Second))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cl.Close() })
		return cl
	}
	return dial(na, "a"), dial(nb, "b")
}

// exchange sends one message from → to and waits for it and its delivered
// receipt.
func exchange(t *testing.T, ctx context.Context, from, to *client.Client, text string) {
	t.Helper()
	res, err := from.Send(ctx, to.UserID(), []byte(text))
	if err != nil {
		t.Fatalf("send %q: %v", text, err)
	}
	e := waitEntry(t, to, 30*time.Second, func(e client.Entry) bool { return e.IsMessage() && e.ClientMsgID == res.ClientMsgID })
	if string(e.Ciphertext) != text {
		t.Fatalf("got %q, want %q", e.Ciphertext, text)
	}
	waitEntry(t, from, 30*time.Second, func(e client.Entry) bool { return e.IsDelivered() && contains(e.ReceiptFor, res.ClientMsgID) })
}

// waitEntry reads c's entries until one matches.
func waitEntry(t *testing.T, c *client.Client, timeout time.Duration, match func(client.Entry) bool) client.Entry {
	t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case e, ok := <-c.Entries():
			if !ok {
				t.Fatal("client closed")
			}
			if match(e) {
				return e
			}
		case <-deadline:
			t.Fatalf("no matching entry for %s within %v", c.UserID(), timeout)
		}
	}
}

func contains(ids []string, id string) bool {
	for _, x := range ids {
		if x == id {
			return true
		}
	}
	return false
}

// testWriter sends bench progress to the test log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(string(p))
	return len(p), nil
}
