package bench

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/courier-im/courier/admin"
)

// ServerSample is one reading of a server process.
type ServerSample struct {
	RSSBytes   uint64 `json:"rss_bytes"`
	Goroutines int64  `json:"goroutines"` // 0 when read from /proc
	Sessions   int64  `json:"sessions"`   // 0 when read from /proc
}

// ServerFigures are a server's readings before the connections opened and
// at the end of the hold.
type ServerFigures struct {
	Name   string       `json:"name"` // a gateway URL or "pid N"
	Before ServerSample `json:"before"`
	After  ServerSample `json:"after"`
	Error  string       `json:"error,omitempty"`
}

// serverProbe reads the servers' memory and goroutines: through each
// gateway's admin API (/v1/admin/stats, needs the admin token), or from
// /proc/<pid>/status for server processes on this machine.
type serverProbe struct {
	names []string
	read  []func(ctx context.Context) (ServerSample, error)
}

func newServerProbe(bases []string, adminToken string, pids []int) *serverProbe {
	p := &serverProbe{}
	switch {
	case adminToken != "":
		for _, b := range bases {
			c := &admin.Client{URL: b, Token: adminToken}
			p.names = append(p.names, b)
			p.read = append(p.read, func(ctx context.Context) (ServerSample, error) {
				st, err := c.Stats(ctx)
				if err != nil {
					return ServerSample{}, err
				}
				return ServerSample{RSSBytes: st.RSSBytes, Goroutines: st.Goroutines, Sessions: st.Sessions}, nil
			})
		}
	default:
		for _, pid := range pids {
			p.names = append(p.names, fmt.Sprintf("pid %d", pid))
			p.read = append(p.read, func(context.Context) (ServerSample, error) {
				rss, err := procRSS(strconv.Itoa(pid))
				return ServerSample{RSSBytes: rss}, err
			})
		}
	}
	return p
}

// sample reads every server at once.
func (p *serverProbe) sample(ctx context.Context) ([]ServerSample, []error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	out := make([]ServerSample, len(p.read))
	errs := make([]error, len(p.read))
	var wg sync.WaitGroup
	for i, read := range p.read {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out[i], errs[i] = read(ctx)
		}()
	}
	wg.Wait()
	return out, errs
}

// procRSS reads VmRSS of a process ("self" for this one) from /proc.
func procRSS(pid string) (uint64, error) {
	b, err := os.ReadFile("/proc/" + pid + "/status")
	if err != nil {
		return 0, fmt.Errorf("read server memory: %w", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("parse VmRSS of %s: %w", pid, err)
			}
			return kb << 10, nil
		}
	}
	return 0, fmt.Errorf("no VmRSS in /proc/%s/status", pid)
}
