package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/courier-im/courier/admin"
)

// PresenceConfig describes a presence fan-out run: Users users are online,
// each subscribed to the presence of Subscriptions others; a FlapShare of
// them drop their connection every FlapEvery (the SDK reconnects at once)
// for Duration. It measures what the server's debounce lets through.
type PresenceConfig struct {
	Target
	Users         int           // default 1000
	Subscriptions int           // per user, default 20
	FlapShare     float64       // default 0.1
	FlapEvery     time.Duration // default 2s (jittered ±50%)
	Duration      time.Duration // default 30s
	// Settle is how long after the flapping the final states are checked
	// (default 5s: past the server's debounce).
	Settle time.Duration
	// AdminToken reads the server's CPU time and presence counters from its
	// admin API (first URL); without it the server side is not reported.
	AdminToken string
}

// PresenceReport is what a presence run measured.
type PresenceReport struct {
	Scenario      string  `json:"scenario"`
	Users         int     `json:"users"`
	Subscriptions int     `json:"subscriptions"`
	Flappers      int     `json:"flappers"`
	DurationSec   float64 `json:"duration_sec"`
	// Flaps counts connection drops forced by the bench.
	Flaps int64 `json:"flaps"`
	// UpdatesReceived counts presence events the clients got while the run
	// lasted, and UpdatesPerSec its rate.
	UpdatesReceived int64   `json:"updates_received"`
	UpdatesPerSec   float64 `json:"updates_per_sec"`
	// Server side (admin API), deltas over the flapping period: user
	// online/offline transitions, updates sent to subscribers, transitions
	// the debounce folded into a later update (suppressed), and presence or
	// typing frames dropped for slow clients.
	ServerChanges    int64   `json:"server_changes"`
	ServerSent       int64   `json:"server_sent"`
	ServerSuppressed int64   `json:"server_suppressed"`
	ServerDropped    int64   `json:"server_dropped"`
	SuppressedShare  float64 `json:"suppressed_share"`
	ServerCPUSeconds float64 `json:"server_cpu_seconds"`
	ServerCores      float64 `json:"server_cores"`
	// StaleFinal counts (subscriber, user) pairs whose last event said
	// offline although the user was online at the end: a wrong final state.
	StaleFinal int64  `json:"stale_final"`
	Problem    string `json:"problem,omitempty"`
}

// OK reports a run whose final states were all right.
func (r *PresenceReport) OK() bool { return r.Problem == "" }

// WriteJSON writes the report as one JSON object.
func (r *PresenceReport) WriteJSON(w io.Writer) error { return json.NewEncoder(w).Encode(r) }

// WriteText writes the report for people.
func (r *PresenceReport) WriteText(w io.Writer) error {
	_, err := fmt.Fprintf(w, `courier bench presence: %d users x %d subscriptions, %d flapping, %.0fs
flaps:            %d connection drops
updates received: %d (%.0f/s)
server:           %d transitions, %d updates sent, %d suppressed by the debounce (%.0f%%), %d dropped
server CPU:       %.1f s (%.2f cores)
stale finals:     %d
`, r.Users, r.Subscriptions, r.Flappers, r.DurationSec, r.Flaps, r.UpdatesReceived, r.UpdatesPerSec,
		r.ServerChanges, r.ServerSent, r.ServerSuppressed, 100*r.SuppressedShare, r.ServerDropped,
		r.ServerCPUSeconds, r.ServerCores, r.StaleFinal)
	if err == nil && r.Problem != "" {
		_, err = fmt.Fprintf(w, "FAILED:           %s\n", r.Problem)
	}
	return err
}

// Presence runs the presence scenario.
func Presence(ctx context.Context, cfg PresenceConfig) (*PresenceReport, error) {
	cfg.Users = orDefault(cfg.Users, 1000)
	cfg.Subscriptions = orDefault(cfg.Subscriptions, 20)
	cfg.FlapShare = orDefault(cfg.FlapShare, 0.1)
	cfg.FlapEvery = orDefault(cfg.FlapEvery, 2*time.Second)
	cfg.Duration = orDefault(cfg.Duration, 30*time.Second)
	cfg.Settle = orDefault(cfg.Settle, 5*time.Second)
	if cfg.Users < 2 || cfg.Subscriptions < 1 || cfg.Subscriptions >= cfg.Users || cfg.FlapShare < 0 || cfg.FlapShare > 1 {
		return nil, errors.New("bench: presence needs users >= 2, 1 <= subscriptions < users and 0 <= flap share <= 1")
	}
	var err error
	if cfg.Target, err = cfg.Target.withDefaults(); err != nil {
		return nil, err
	}
	r, con, f, release, err := startFleet(ctx, cfg.Target, cfg.net())
	if err != nil {
		return nil, err
	}
	defer release()
	creds, err := f.register(r.ctx, cfg.Users)
	if err != nil {
		return nil, r.setupErr(err)
	}
	clients, err := f.dial(r.ctx, creds, 0)
	if err != nil {
		return nil, r.setupErr(err)
	}
	defer closeAll(clients, f.conc)

	// Every user subscribes to Subscriptions distinct others.
	con.say("subscribing %d x %d", cfg.Users, cfg.Subscriptions)
	rng := rand.New(rand.NewPCG(1, 2))
	targets := make([][]int, cfg.Users)
	for i := range targets {
		seen := map[int]bool{i: true}
		for len(targets[i]) < cfg.Subscriptions {
			if j := rng.IntN(cfg.Users); !seen[j] {
				seen[j] = true
				targets[i] = append(targets[i], j)
			}
		}
	}
	// last[i] holds, per subscribed user id, whether the last event said
	// online; written only by client i's reader.
	last := make([]map[string]bool, cfg.Users)
	var received atomic.Int64
	stop := make(chan struct{})
	var readers sync.WaitGroup
	var lastMu sync.Mutex
	for i, c := range clients {
		last[i] = make(map[string]bool, cfg.Subscriptions)
		readers.Add(2)
		go func() {
			defer readers.Done()
			for {
				select {
				case ev := <-c.Presence():
					received.Add(1)
					lastMu.Lock()
					last[i][ev.UserID] = ev.Online && !ev.Gone
					lastMu.Unlock()
				case <-stop:
					return
				}
			}
		}()
		go func() {
			defer readers.Done()
			for {
				select {
				case <-c.Entries():
				case <-stop:
					return
				}
			}
		}()
	}
	err = forEach(r.ctx, cfg.Users, f.conc, func(ctx context.Context, i int) error {
		ids := make([]string, len(targets[i]))
		for k, j := range targets[i] {
			ids[k] = creds[j].UserID
		}
		return clients[i].SubscribePresence(ctx, ids...)
	})
	if err != nil {
		close(stop)
		readers.Wait()
		return nil, r.setupErr(fmt.Errorf("bench: subscribe: %w", err))
	}

	adm := func() (admin.StatsReply, bool) {
		if cfg.AdminToken == "" {
			return admin.StatsReply{}, false
		}
		c := &admin.Client{URL: f.bases[0], Token: cfg.AdminToken, HTTP: f.hc}
		actx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		st, err := c.Stats(actx)
		if err != nil {
			con.say("admin stats unavailable: %v", err)
			return admin.StatsReply{}, false
		}
		return st, true
	}
	flappers := int(float64(cfg.Users) * cfg.FlapShare)
	con.say("flapping %d of %d users every ~%v for %v", flappers, cfg.Users, cfg.FlapEvery, cfg.Duration)
	before, haveBefore := adm()
	startRecv := received.Load()
	start := time.Now()
	var flaps atomic.Int64
	m := con.track("flapping", func() status {
		return status{Done: received.Load() - startRecv, Unit: "updates", Extra: fmt.Sprintf("%d flaps", flaps.Load())}
	})
	var wg sync.WaitGroup
	flapCtx, cancelFlaps := context.WithTimeout(r.ctx, cfg.Duration)
	for i := range flappers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			jit := rand.New(rand.NewPCG(uint64(i), 7))
			for {
				wait := cfg.FlapEvery/2 + time.Duration(jit.Int64N(int64(cfg.FlapEvery)))
				select {
				case <-flapCtx.Done():
					return
				case <-time.After(wait):
				}
				clients[i].DropConnection()
				flaps.Add(1)
			}
		}()
	}
	wg.Wait()
	cancelFlaps()
	elapsed := time.Since(start)
	m.Stop()
	after, haveAfter := adm()
	recv := received.Load() - startRecv

	// Every client reconnects by itself (after its backoff, which grows
	// with repeated drops); once all are back and the debounce has passed,
	// every subscriber must have heard that its users are online.
	con.say("waiting for the flappers to reconnect, then settling %v", cfg.Settle)
	reconnected := true
	for _, c := range clients[:flappers] {
		wctx, cancel := context.WithTimeout(r.ctx, time.Minute)
		if c.WaitConnected(wctx) != nil {
			reconnected = false
		}
		cancel()
	}
	sleep(r.ctx, cfg.Settle)
	close(stop)
	readers.Wait()
	rep := &PresenceReport{Scenario: "presence", Users: cfg.Users, Subscriptions: cfg.Subscriptions, Flappers: flappers,
		DurationSec: elapsed.Seconds(), Flaps: flaps.Load(), UpdatesReceived: recv}
	if elapsed > 0 {
		rep.UpdatesPerSec = float64(recv) / elapsed.Seconds()
	}
	if haveBefore && haveAfter {
		rep.ServerChanges = after.PresenceChanges - before.PresenceChanges
		rep.ServerSent = after.PresenceSent - before.PresenceSent
		rep.ServerSuppressed = after.PresenceCoalesced - before.PresenceCoalesced
		rep.ServerDropped = after.EphemeralDropped - before.EphemeralDropped
		if rep.ServerChanges > 0 {
			rep.SuppressedShare = float64(rep.ServerSuppressed) / float64(rep.ServerChanges)
		}
		rep.ServerCPUSeconds = after.CPUSeconds - before.CPUSeconds
		rep.ServerCores = rep.ServerCPUSeconds / elapsed.Seconds()
	}
	for i := range last {
		for _, j := range targets[i] {
			if online, heard := last[i][creds[j].UserID]; heard && !online {
				rep.StaleFinal++
			}
		}
	}
	switch {
	case r.interrupted():
		rep.Problem = "interrupted"
	case !reconnected:
		rep.Problem = "a flapping client did not reconnect within a minute"
	case rep.StaleFinal > 0:
		rep.Problem = fmt.Sprintf("%d subscribers still believe an online user is offline", rep.StaleFinal)
	}
	return rep, nil
}
