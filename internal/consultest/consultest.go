// Package consultest gives tests a real Consul agent: the shared one that
// `make test` starts (scripts/consul.sh), or a private one a test starts,
// stops and restarts itself from the same cached binary.
package consultest

import (
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// Addr is the shared agent's HTTP address (COURIER_TEST_CONSUL_ADDR). Without
// one the test is skipped, or fails under CI, where `make test` must have
// started it.
func Addr(t testing.TB) string {
	t.Helper()
	addr := os.Getenv("COURIER_TEST_CONSUL_ADDR")
	if addr == "" {
		if os.Getenv("CI") != "" {
			t.Fatal("COURIER_TEST_CONSUL_ADDR is not set: run the tests with `make test`, which starts a Consul agent")
		}
		t.Skip("no Consul agent: set COURIER_TEST_CONSUL_ADDR (make test does)")
	}
	return addr
}

// Agent is a private -dev agent on one loopback address, HTTP on port 8500.
type Agent struct {
	t    testing.TB
	bin  string
	bind string
	dir  string

	mu  sync.Mutex
	cmd *exec.Cmd
}

// Start runs a private agent bound to bind (pick a loopback address no other
// test package uses: packages run in parallel) and waits for its leader.
func Start(t testing.TB, bind string) *Agent {
	t.Helper()
	bin := os.Getenv("COURIER_TEST_CONSUL_BIN")
	if bin == "" {
		if os.Getenv("CI") != "" {
			t.Fatal("COURIER_TEST_CONSUL_BIN is not set: run the tests with `make test`")
		}
		t.Skip("set COURIER_TEST_CONSUL_BIN to a consul binary (scripts/consul.sh install prints one)")
	}
	a := &Agent{t: t, bin: bin, bind: bind, dir: t.TempDir()}
	a.Restart()
	t.Cleanup(a.Stop)
	return a
}

// Addr is the agent's HTTP address.
func (a *Agent) Addr() string { return a.bind + ":8500" }

// Stop kills the agent; a -dev agent forgets everything.
func (a *Agent) Stop() {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.cmd == nil {
		return
	}
	_ = a.cmd.Process.Kill()
	_ = a.cmd.Wait()
	a.cmd = nil
}

// Restart starts the agent (again) and waits until it has a leader.
func (a *Agent) Restart() {
	t := a.t
	t.Helper()
	a.Stop()
	logPath := filepath.Join(a.dir, "consul.log")
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd := exec.Command(a.bin, "agent", "-dev", "-bind", a.bind, "-client", a.bind, "-log-level", "warn")
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatalf("start consul: %v", err)
	}
	a.mu.Lock()
	a.cmd = cmd
	a.mu.Unlock()
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get("http://" + a.Addr() + "/v1/status/leader")
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if strings.Contains(string(b), ":") {
				return
			}
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(logPath)
			t.Fatalf("consul on %s has no leader after 30 s: %v\n%s", a.bind, err, log)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
