package bench

import (
	"context"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/courier-im/courier/internal/nodetest"
	"github.com/courier-im/courier/node"
)

// TestConnsWithWorkerProcesses runs conns as the command does: worker
// processes (this test binary, re-run as a worker) and per-process figures.
func TestConnsWithWorkerProcesses(t *testing.T) {
	n := nodetest.Start(t, node.Config{AdminToken: testAdminToken})
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	var progress strings.Builder
	r, err := Conns(context.Background(), ConnsConfig{URL: n.URL(), Count: 30, Procs: 3, Hold: 300 * time.Millisecond,
		AdminToken: testAdminToken, Exec: []string{exe}, ExecEnv: []string{workerEnv + "=1"}, DurationLimit: time.Minute,
		Progress: &lockedWriter{w: &progress}})
	if err != nil {
		t.Fatal(err)
	}
	if !r.OK() || r.Held != 30 {
		t.Fatalf("conns with worker processes: %s\n%s", r.Problem(), progress.String())
	}
	pids := map[int]bool{}
	for _, p := range r.Conns.Processes {
		if p.Count != 10 || p.Held != 10 || p.PID == os.Getpid() {
			t.Errorf("process figures: %+v", p)
		}
		pids[p.PID] = true
	}
	if len(pids) != 3 {
		t.Fatalf("%d distinct worker processes, want 3", len(pids))
	}
}

// TestConnsWithoutServerFigures: without an admin token or a pid the run
// still works and says why it has no memory figures.
func TestConnsWithoutServerFigures(t *testing.T) {
	n := startNode(t)
	r, err := Conns(context.Background(), ConnsConfig{URL: n.URL(), Count: 5, Hold: 100 * time.Millisecond, DurationLimit: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if !r.OK() || r.Held != 5 || r.RSSPerConnKiB != 0 || !strings.Contains(r.Conns.ServerNote, "--admin-token") {
		t.Fatalf("held %d, rss/conn %v, note %q: %s", r.Held, r.RSSPerConnKiB, r.Conns.ServerNote, r.Problem())
	}
}

// TestConnsReadsServerPID measures a server process through /proc.
func TestConnsReadsServerPID(t *testing.T) {
	n := startNode(t) // in this process: its pid is ours
	r, err := Conns(context.Background(), ConnsConfig{URL: n.URL(), Count: 5, Hold: 100 * time.Millisecond, ServerPIDs: []int{os.Getpid()}, DurationLimit: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if c := r.Conns; c.ServerNote != "" || len(c.Servers) != 1 || c.Servers[0].After.RSSBytes == 0 {
		t.Fatalf("server figures from /proc: note %q, %+v", c.ServerNote, c.Servers)
	}
}

func TestConnsRefusesTooManyPerProcess(t *testing.T) {
	limit, ok := openFilesLimit()
	if !ok {
		t.Skip("no open-files limit on this system")
	}
	over := int(limit) + 1000
	tests := []struct {
		name string
		cfg  ConnsConfig
		want string
	}{
		{"one process", ConnsConfig{URL: "ws://127.0.0.1:1", Count: over, Procs: 1, Exec: []string{"x"}}, "--procs 2"},
		{"in-process workers", ConnsConfig{URL: "ws://127.0.0.1:1", Count: over, Procs: 2}, "workers run in this process"},
		{"more procs than conns", ConnsConfig{URL: "ws://127.0.0.1:1", Count: 2, Procs: 3}, "more worker processes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Conns(context.Background(), tt.cfg)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want %q", err, tt.want)
			}
		})
	}
}

// TestSourceAddressesSpreadOverLoopback dials a loopback listener through
// the dialers conns uses: connections come from 127.0.1.x addresses in
// turn; a gateway elsewhere gets the OS's choice.
func TestSourceAddressesSpreadOverLoopback(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan string, 8)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted <- c.RemoteAddr().(*net.TCPAddr).IP.String()
			c.Close()
		}
	}()
	gw, err := gatewayOf("http://" + ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	ds := newDialers(nil, 3)
	for g, want := range []string{"127.0.1.1", "127.0.1.2", "127.0.1.3", "127.0.1.1"} {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		c, err := ds.forConn(gw, g).NetDialContext(ctx, "tcp", ln.Addr().String())
		cancel()
		if err != nil {
			t.Fatalf("dial from source %d: %v", g, err)
		}
		c.Close()
		if got := <-accepted; got != want {
			t.Fatalf("connection %d came from %s, want %s", g, got, want)
		}
	}
	remote, _ := gatewayOf("https://chat.example.com")
	if ds.forConn(remote, 1) != ds.plain || remote.ws != "wss://chat.example.com/v1/ws" {
		t.Fatalf("a remote gateway got a bound dialer or a wrong URL %q", remote.ws)
	}
	if sourceIP(253).String() != "127.0.1.254" || sourceIP(254).String() != "127.0.2.1" {
		t.Fatalf("source addresses: %v %v", sourceIP(253), sourceIP(254))
	}
}
