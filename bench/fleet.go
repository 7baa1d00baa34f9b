package bench

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/courier-im/courier/client"
)

// netConfig is how every scenario reaches the server: newFleet reads the
// Target's URL, Concurrency, CAFile, JSON, AckInterval and Logger.
type netConfig struct {
	Target
	// E2EEDir, when set, makes every client end-to-end encrypted with its
	// key file in this directory (the bench then measures the clients'
	// encryption too).
	E2EEDir string
}

// fleet registers and connects the bench's users, spread over the
// gateways: user i registers at and first connects to gateway i mod n, and
// fails over to the others.
type fleet struct {
	bases  []string
	opts   []client.Option
	hc     *http.Client
	prefix string // unique per run, so runs against one server never collide
	conc   int
	con    *console
	e2ee   string // key file directory; "" for plain clients
}

// parseURLs splits a comma-separated list of gateways into base URLs.
func parseURLs(raw string) ([]string, error) {
	var bases []string
	for _, u := range strings.Split(raw, ",") {
		if strings.TrimSpace(u) == "" {
			continue
		}
		base, err := client.BaseURL(u)
		if err != nil {
			return nil, fmt.Errorf("bench: %w", err)
		}
		bases = append(bases, base)
	}
	if len(bases) == 0 {
		return nil, errors.New("bench: a server URL is required")
	}
	return bases, nil
}

// newHTTPClient pools API connections but bounds them per gateway, so a
// storm of token requests cannot exhaust the process's file descriptors.
func newHTTPClient(t *tls.Config, conc int) *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = conc
	tr.MaxConnsPerHost = conc
	if t != nil {
		tr.TLSClientConfig = t
	}
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}
}

func newFleet(nc netConfig, con *console) (*fleet, error) {
	bases, err := parseURLs(nc.URL)
	if err != nil {
		return nil, err
	}
	var tlsConf *tls.Config
	if nc.CAFile != "" {
		if tlsConf, err = client.TLSConfigWithCA(nc.CAFile); err != nil {
			return nil, fmt.Errorf("bench: %w", err)
		}
	}
	conc := max(nc.Concurrency, 1)
	f := &fleet{bases: bases, hc: newHTTPClient(tlsConf, conc), prefix: runPrefix(), conc: conc, con: con, e2ee: nc.E2EEDir}
	logger := nc.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	f.opts = []client.Option{client.WithHTTPClient(f.hc), client.WithLogger(logger), client.WithServers(bases...)}
	if tlsConf != nil {
		f.opts = append(f.opts, client.WithTLSConfig(tlsConf))
	}
	if nc.JSON {
		f.opts = append(f.opts, client.WithJSON())
	}
	if nc.AckInterval > 0 {
		f.opts = append(f.opts, client.WithAckInterval(nc.AckInterval))
	}
	return f, nil
}

// runPrefix is "bench-<8 hex digits>": handles of one run share it.
func runPrefix() string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return "bench-" + hex.EncodeToString(b)
}

func (f *fleet) close() { f.hc.CloseIdleConnections() }

// startFleet opens what every client scenario runs on: the run (its
// deadline and interrupt), the console and the fleet; stop releases them.
func startFleet(ctx context.Context, t Target, nc netConfig) (r *run, con *console, f *fleet, stop func(), err error) {
	r = newRun(ctx, t.DurationLimit)
	con = newConsole(t.Progress, t.ProgressInterval)
	if f, err = newFleet(nc, con); err != nil {
		r.cancel()
		return nil, nil, nil, nil, err
	}
	return r, con, f, func() { f.close(); r.cancel() }, nil
}

// register creates n users, retrying a few times on retryable refusals.
func (f *fleet) register(ctx context.Context, n int) ([]client.Credentials, error) {
	f.con.say("registering %d users at %s", n, strings.Join(f.bases, ", "))
	creds := make([]client.Credentials, n)
	var done atomic.Int64
	m := f.con.track("registering", func() status { return status{Done: done.Load(), Total: int64(n), Unit: "users"} })
	err := forEach(ctx, n, f.conc, func(ctx context.Context, i int) error {
		var err error
		for attempt := range 5 {
			creds[i], err = client.Register(ctx, f.bases[i%len(f.bases)], fmt.Sprintf("%s-%d", f.prefix, i), f.opts...)
			if err == nil || !retryable(err) {
				break
			}
			sleep(ctx, time.Duration(50<<attempt)*time.Millisecond)
		}
		if err == nil {
			done.Add(1)
		}
		return err
	})
	m.Stop()
	if err != nil {
		return nil, fmt.Errorf("bench: register: %w", err)
	}
	return creds, nil
}

// dial connects a client for each credential, at most conc at once (0: the
// fleet's concurrency). A client that cannot connect fails the whole dial.
func (f *fleet) dial(ctx context.Context, creds []client.Credentials, conc int) ([]*client.Client, error) {
	if conc <= 0 {
		conc = f.conc
	}
	f.con.say("connecting %d clients", len(creds))
	clients := make([]*client.Client, len(creds))
	var done atomic.Int64
	m := f.con.track("connecting", func() status { return status{Done: done.Load(), Total: int64(len(creds)), Unit: "clients"} })
	err := forEach(ctx, len(creds), conc, func(ctx context.Context, i int) error {
		c, err := f.dialOne(ctx, creds[i])
		clients[i] = c
		if err == nil {
			done.Add(1)
		}
		return err
	})
	m.Stop()
	if err != nil {
		closeAll(clients, f.conc)
		return nil, fmt.Errorf("bench: connect: %w", err)
	}
	return clients, nil
}

func (f *fleet) dialOne(ctx context.Context, cr client.Credentials) (*client.Client, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if f.e2ee != "" {
		keys := filepath.Join(f.e2ee, fmt.Sprintf("%s-%d.keys", cr.UserID, cr.DeviceID))
		return client.Dial(ctx, cr, append(slices.Clip(f.opts), client.WithE2EE(keys))...)
	}
	return client.Dial(ctx, cr, f.opts...)
}

// forEach runs fn for 0..n-1 with at most limit at once and stops at the
// first error.
func forEach(ctx context.Context, n, limit int, fn func(ctx context.Context, i int) error) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	sem := make(chan struct{}, max(limit, 1))
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			if err := fn(ctx, i); err != nil {
				cancel(fmt.Errorf("#%d: %w", i, err))
			}
		}()
	}
	wg.Wait()
	return context.Cause(ctx)
}

// closeAll closes every client (nil entries are skipped).
func closeAll(clients []*client.Client, limit int) {
	_ = forEach(context.Background(), len(clients), limit, func(_ context.Context, i int) error {
		if clients[i] != nil {
			_ = clients[i].Close()
		}
		return nil
	})
}

func reconnectsOf(clients []*client.Client) int64 {
	var n int64
	for _, c := range clients {
		if c != nil {
			n += c.Reconnects()
		}
	}
	return n
}

func retryable(err error) bool {
	var e *client.Error
	return errors.As(err, &e) && e.Retryable
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}
