//go:build linux

package readiness

import (
	"net"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// socketPair returns both ends of a loopback TCP connection.
func socketPair(t *testing.T) (server *net.TCPConn, client net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server = (<-accepted).(*net.TCPConn)
	t.Cleanup(func() { server.Close(); client.Close() })
	return server, client
}

func newPoller(t *testing.T) *Poller {
	t.Helper()
	p, err := New()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := p.Close(); err != nil {
			t.Error(err)
		}
	})
	return p
}

// fired is a Watch callback that reports each firing on a channel.
func fired() (func(), chan struct{}) {
	ch := make(chan struct{}, 8)
	return func() { ch <- struct{}{} }, ch
}

// armedWatch watches conn, arms the watch and returns it with the channel
// that reports its firings.
func armedWatch(t *testing.T, p *Poller, conn *net.TCPConn) (*Watch, chan struct{}) {
	t.Helper()
	onReady, ch := fired()
	w, err := p.Watch(conn, onReady)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Arm(); err != nil {
		t.Fatal(err)
	}
	return w, ch
}

func mustFire(t *testing.T, ch chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(5 * time.Second):
		t.Fatalf("%s: the watch did not fire", what)
	}
}

// mustNotFire waits long enough for a wrongly delivered event to show.
func mustNotFire(t *testing.T, ch chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
		t.Fatalf("%s: the watch fired", what)
	case <-time.After(150 * time.Millisecond):
	}
}

func TestWatchFiresOncePerArmWhenDataArrives(t *testing.T) {
	p := newPoller(t)
	server, client := socketPair(t)
	w, ch := armedWatch(t, p, server)
	mustNotFire(t, ch, "silent socket")
	if _, err := client.Write([]byte("a")); err != nil {
		t.Fatal(err)
	}
	mustFire(t, ch, "after a write")
	// One-shot: the unread byte is still there, but nothing fires until
	// the watch is armed again, and then at once (level-triggered).
	mustNotFire(t, ch, "spent watch")
	if p.Armed() != 0 {
		t.Fatalf("Armed = %d after firing, want 0", p.Armed())
	}
	if err := w.Arm(); err != nil {
		t.Fatal(err)
	}
	mustFire(t, ch, "re-armed with a byte unread")

	// Drained and re-armed: waits for the next byte.
	buf := make([]byte, 8)
	if _, err := server.Read(buf); err != nil {
		t.Fatal(err)
	}
	if err := w.Arm(); err != nil {
		t.Fatal(err)
	}
	mustNotFire(t, ch, "drained socket")
	if _, err := client.Write([]byte("b")); err != nil {
		t.Fatal(err)
	}
	mustFire(t, ch, "after the second write")
}

func TestWatchFiresWhenThePeerHangsUp(t *testing.T) {
	p := newPoller(t)
	server, client := socketPair(t)
	_, ch := armedWatch(t, p, server)
	client.Close()
	mustFire(t, ch, "peer closed")
}

func TestDisarmedWatchDoesNotFire(t *testing.T) {
	p := newPoller(t)
	server, client := socketPair(t)
	w, ch := armedWatch(t, p, server)
	w.Disarm()
	if p.Armed() != 0 {
		t.Fatalf("Armed = %d after Disarm, want 0", p.Armed())
	}
	if _, err := client.Write([]byte("a")); err != nil {
		t.Fatal(err)
	}
	mustNotFire(t, ch, "disarmed")
}

func TestWatchesOfManySocketsFireForTheirOwnSocketOnly(t *testing.T) {
	p := newPoller(t)
	const n = 50
	clients := make([]net.Conn, n)
	chans := make([]chan struct{}, n)
	for i := range n {
		server, client := socketPair(t)
		_, ch := armedWatch(t, p, server)
		clients[i], chans[i] = client, ch
	}
	for i := 0; i < n; i += 3 {
		if _, err := clients[i].Write([]byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < n; i += 3 {
		mustFire(t, chans[i], "written socket")
	}
	for i := range n {
		if i%3 != 0 && len(chans[i]) != 0 {
			t.Fatalf("socket %d fired without data", i)
		}
	}
	if want := n - (n+2)/3; p.Armed() != want {
		t.Fatalf("Armed = %d, want %d", p.Armed(), want)
	}
}

func TestArmAfterCloseFails(t *testing.T) {
	p, err := New()
	if err != nil {
		t.Fatal(err)
	}
	server, _ := socketPair(t)
	w, err := p.Watch(server, func() {})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if err := w.Arm(); err != ErrClosed {
		t.Fatalf("Arm after Close = %v, want ErrClosed", err)
	}
	if err := p.Close(); err != nil {
		t.Fatalf("second Close = %v", err)
	}
}

func TestTokensSurviveTheEventsSixtyFourBits(t *testing.T) {
	for _, tok := range []uint64{1, 1<<31 + 5, 1<<32 + 7, ^uint64(0) - 1} {
		var e unix.EpollEvent
		setToken(&e, tok)
		if got := token(&e); got != tok {
			t.Fatalf("token round trip %d -> %d", tok, got)
		}
	}
}
