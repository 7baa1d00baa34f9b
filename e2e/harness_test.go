// Package e2e runs the courier binary as a real cluster: three `courier
// serve` processes on 127.0.0.1–3 with membership in a real Consul agent and
// a shared CQL store (the Cassandra node `make test` starts), so that a test
// can kill -9, pause and add nodes the way production does.
package e2e_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/courier-im/courier/admin"
	"github.com/courier-im/courier/persistence/scylla/scyllatest"
)

var courierBin string

// TestMain builds the courier binary once (without the race detector: the
// nodes are separate processes; this test binary keeps -race), unless
// COURIER_TEST_COURIER_BIN names one.
func TestMain(m *testing.M) {
	courierBin = os.Getenv("COURIER_TEST_COURIER_BIN")
	cleanup := func() {}
	if courierBin == "" {
		dir, err := os.MkdirTemp("", "courier-e2e-bin")
		if err != nil {
			fmt.Fprintln(os.Stderr, "e2e:", err)
			os.Exit(1)
		}
		cleanup = func() { os.RemoveAll(dir) }
		courierBin = filepath.Join(dir, "courier")
		cmd := exec.Command("go", "build", "-o", courierBin, "github.com/courier-im/courier/cmd/courier")
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			fmt.Fprintln(os.Stderr, "e2e: build courier:", err)
			cleanup()
			os.Exit(1)
		}
	}
	code := m.Run()
	cleanup()
	os.Exit(code)
}

const adminToken = "e2e-admin-token"

// testCluster is up to a few courier processes sharing one Consul service
// and one keyspace.
type testCluster struct {
	t        *testing.T
	consul   string
	service  string
	hosts    []string
	keyspace string
	ttl      time.Duration
	// tokenKeys is the key file every node is given, as an operator
	// hands one to each node of a cluster.
	tokenKeys string

	mu    sync.Mutex
	nodes []*nodeProc
}

type nodeProc struct {
	index    int
	ip       string
	nodeAddr string
	url      string
	logPath  string
	cmd      *exec.Cmd
	exited   chan struct{}
}

func newCluster(t *testing.T, consul string) *testCluster {
	t.Helper()
	hosts := scyllatest.Hosts(t)
	c := &testCluster{
		t:        t,
		consul:   consul,
		service:  fmt.Sprintf("courier-e2e-%d", time.Now().UnixNano()),
		hosts:    hosts,
		keyspace: scyllatest.Keyspace(t, hosts),
		ttl:      2 * time.Second,
	}
	c.tokenKeys = filepath.Join(t.TempDir(), "token-keys")
	if out, err := exec.Command(courierBin, "token-keys", "new", c.tokenKeys).CombinedOutput(); err != nil {
		t.Fatalf("courier token-keys new: %v\n%s", err, out)
	}
	t.Cleanup(c.stopAll)
	return c
}

// freePort finds a port free on ip right now.
func freePort(t *testing.T, ip string) string {
	t.Helper()
	ln, err := net.Listen("tcp", ip+":0")
	if err != nil {
		t.Fatalf("no free port on %s: %v", ip, err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// start launches node i (0-based) on 127.0.0.(i+1) and waits until it
// serves.
func (c *testCluster) start(i int) *nodeProc {
	t := c.t
	t.Helper()
	ip := fmt.Sprintf("127.0.0.%d", i+1)
	n := &nodeProc{index: i, ip: ip, nodeAddr: freePort(t, ip), exited: make(chan struct{})}
	listen := freePort(t, ip)
	n.url = "http://" + listen
	n.logPath = filepath.Join(t.TempDir(), fmt.Sprintf("node%d.log", i+1))
	logf, err := os.Create(n.logPath)
	if err != nil {
		t.Fatal(err)
	}
	n.cmd = exec.Command(courierBin, "serve",
		"--listen", listen,
		"--node-addr", n.nodeAddr,
		"--cluster", "consul",
		"--consul-addr", c.consul,
		"--consul-service", c.service,
		"--consul-ttl", c.ttl.String(),
		"--store", "scylla",
		"--scylla-hosts", strings.Join(c.hosts, ","),
		"--scylla-keyspace", c.keyspace,
		"--token-keys", c.tokenKeys,
		"--request-timeout", "2s",
		"--admin-token", adminToken,
		"--log-level", "info",
		// Every client of the test comes from one loopback address.
		"--max-conns-per-ip", "-1", "--register-limit-ip", "off", "--token-limit-ip", "off",
	)
	n.cmd.Stdout, n.cmd.Stderr = logf, logf
	if err := n.cmd.Start(); err != nil {
		t.Fatalf("start node %d: %v", i+1, err)
	}
	go func() {
		_ = n.cmd.Wait()
		logf.Close()
		close(n.exited)
	}()
	c.mu.Lock()
	for len(c.nodes) <= i {
		c.nodes = append(c.nodes, nil)
	}
	c.nodes[i] = n
	c.mu.Unlock()

	deadline := time.Now().Add(90 * time.Second)
	for {
		resp, err := http.Get(n.url + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return n
			}
		}
		select {
		case <-n.exited:
			t.Fatalf("node %d exited while starting:\n%s", i+1, n.logTail(40))
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("node %d not healthy after 90 s (%v):\n%s", i+1, err, n.logTail(40))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (n *nodeProc) logTail(lines int) string {
	b, _ := os.ReadFile(n.logPath)
	ls := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(ls) > lines {
		ls = ls[len(ls)-lines:]
	}
	return strings.Join(ls, "\n")
}

func (n *nodeProc) admin() *admin.Client {
	return &admin.Client{URL: n.url, Token: adminToken}
}

func (n *nodeProc) alive() bool {
	select {
	case <-n.exited:
		return false
	default:
		return true
	}
}

func (n *nodeProc) signal(sig syscall.Signal) {
	_ = n.cmd.Process.Signal(sig)
}

// kill is kill -9: no deregistration, no flush, no goodbye.
func (c *testCluster) kill(i int) {
	n := c.node(i)
	n.signal(syscall.SIGKILL)
	<-n.exited
}

func (c *testCluster) node(i int) *nodeProc {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.nodes[i]
}

func (c *testCluster) live() []*nodeProc {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []*nodeProc
	for _, n := range c.nodes {
		if n != nil && n.alive() {
			out = append(out, n)
		}
	}
	return out
}

func (c *testCluster) urls(nodes ...*nodeProc) string {
	us := make([]string, len(nodes))
	for i, n := range nodes {
		us[i] = n.url
	}
	return strings.Join(us, ",")
}

// stopAll ends every node gracefully (SIGTERM, then SIGKILL) and shows the
// logs of a failed test.
func (c *testCluster) stopAll() {
	c.mu.Lock()
	nodes := slices.Clone(c.nodes)
	c.mu.Unlock()
	for _, n := range nodes {
		if n == nil {
			continue
		}
		n.signal(syscall.SIGCONT)
		n.signal(syscall.SIGTERM)
	}
	for _, n := range nodes {
		if n == nil {
			continue
		}
		select {
		case <-n.exited:
		case <-time.After(20 * time.Second):
			n.signal(syscall.SIGKILL)
			<-n.exited
		}
		if c.t.Failed() {
			c.t.Logf("--- node %d (%s) log tail:\n%s", n.index+1, n.nodeAddr, n.logTail(60))
		}
	}
}

// waitMembers waits until every given node sees exactly the want nodes.
func (c *testCluster) waitMembers(timeout time.Duration, observers []*nodeProc, want ...*nodeProc) {
	t := c.t
	t.Helper()
	wantAddrs := make([]string, len(want))
	for i, n := range want {
		wantAddrs[i] = n.nodeAddr
	}
	slices.Sort(wantAddrs)
	deadline := time.Now().Add(timeout)
	for {
		ok := true
		var last []string
		for _, o := range observers {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			r, err := o.admin().Members(ctx)
			cancel()
			if err != nil {
				ok = false
				last = []string{err.Error()}
				break
			}
			got := make([]string, len(r.Members))
			for i, m := range r.Members {
				got[i] = m.Address
			}
			slices.Sort(got)
			if !slices.Equal(got, wantAddrs) {
				ok, last = false, got
				break
			}
		}
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("members did not become %v within %v (last seen %v)", wantAddrs, timeout, last)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// phaseWriter signals once a progress line containing word is written.
type phaseWriter struct {
	word string
	once sync.Once
	seen chan struct{}
	out  io.Writer
}

func newPhaseWriter(word string, out io.Writer) *phaseWriter {
	return &phaseWriter{word: word, seen: make(chan struct{}), out: out}
}

func (w *phaseWriter) Write(p []byte) (int, error) {
	sc := bufio.NewScanner(strings.NewReader(string(p)))
	for sc.Scan() {
		if strings.Contains(sc.Text(), w.word) {
			w.once.Do(func() { close(w.seen) })
		}
	}
	if w.out != nil {
		return w.out.Write(p)
	}
	return len(p), nil
}
