// Package consul is cluster membership kept in a Consul agent: every node
// registers itself as an instance of one service with a TTL health check
// that it keeps passing, and watches the service's passing instances with
// blocking queries.
//
// It differs from Proto.Actor's Consul provider where that one fails in
// production (docs/ARCHITECTURE.md §7): registration and heartbeats back off
// instead of spinning; a node whose TTL lapsed (paused, partitioned, or the
// agent restarted and forgot it) registers again by itself with the same
// identity, so it rejoins without a restart; errors never panic, and every
// goroutine stops with Stop.
package consul

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/courier-im/courier/cluster"
)

// Config tunes the provider. Zero values take the defaults below.
type Config struct {
	// Address is the Consul agent's HTTP address (host:port or a URL).
	Address string
	// Service is the Consul service every node of one cluster registers as.
	Service string
	// TTL is the health check's time to live: a node that has not checked in
	// for this long is dropped from every view. Heartbeats go every TTL/3.
	TTL time.Duration
	// DeregisterAfter removes a node that stayed critical this long from the
	// catalog altogether (Consul's reaper runs about every 30 s and ignores
	// values under a minute).
	DeregisterAfter time.Duration
	// WatchWait bounds one blocking query.
	WatchWait time.Duration
	// Token is the Consul ACL token, if the agent needs one.
	Token  string
	Logger *slog.Logger
}

const (
	DefaultAddress         = "127.0.0.1:8500"
	DefaultService         = "courier"
	DefaultTTL             = 10 * time.Second
	DefaultDeregisterAfter = time.Minute
	DefaultWatchWait       = 30 * time.Second

	metaMemberID = "courier_member_id"
	metaKinds    = "courier_kinds"
	// metaUserPrefix marks the node's own Member.Meta entries so they can be
	// told apart from what Courier stores for itself.
	metaUserPrefix = "m_"
)

// Membership is the Consul provider of cluster.Membership.
type Membership struct {
	cfg    Config
	client *api.Client
	log    *slog.Logger

	mu      sync.Mutex
	self    cluster.Member
	members []cluster.Member
	// graceUntil keeps members that vanished from the first answers after
	// Consul was unreachable: a restarted agent has forgotten everyone until
	// each node heartbeats again, and moving every grain for that moment
	// would be churn, not information.
	graceUntil time.Time
	subs       []chan struct{}

	serviceID string
	checkID   string
	cancel    context.CancelFunc
	done      sync.WaitGroup
}

var _ cluster.Membership = (*Membership)(nil)

// New builds a provider; Start connects it.
func New(cfg Config) (*Membership, error) {
	if cfg.Address == "" {
		cfg.Address = DefaultAddress
	}
	if cfg.Service == "" {
		cfg.Service = DefaultService
	}
	if cfg.TTL <= 0 {
		cfg.TTL = DefaultTTL
	}
	if cfg.TTL < 300*time.Millisecond {
		return nil, fmt.Errorf("consul: TTL %v is too short (heartbeats go every TTL/3; use at least 300ms)", cfg.TTL)
	}
	if cfg.DeregisterAfter <= 0 {
		cfg.DeregisterAfter = DefaultDeregisterAfter
	}
	if cfg.WatchWait <= 0 {
		cfg.WatchWait = DefaultWatchWait
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	acfg := api.DefaultNonPooledConfig()
	acfg.Address = cfg.Address
	acfg.Token = cfg.Token
	// Every call has a context; the transport timeout only catches a dead
	// peer that keeps the TCP connection open. Blocking queries wait up to
	// WatchWait plus Consul's jitter (WatchWait/16).
	acfg.HttpClient = &http.Client{Timeout: cfg.WatchWait + cfg.WatchWait/8 + 5*time.Second}
	client, err := api.NewClient(acfg)
	if err != nil {
		return nil, fmt.Errorf("consul: client for %s: %w", cfg.Address, err)
	}
	return &Membership{cfg: cfg, client: client, log: cfg.Logger.With("component", "consul")}, nil
}

// Start registers self and waits (bounded by ctx) for the first view that
// includes it, so a node never serves with a member list that Consul has
// not confirmed.
func (m *Membership) Start(ctx context.Context, self cluster.Member) error {
	if self.Address == "" {
		return errors.New("consul: the node has no remote address (set --node-addr)")
	}
	host, port, err := splitHostPort(self.Address)
	if err != nil {
		return fmt.Errorf("consul: member address: %w", err)
	}
	m.mu.Lock()
	m.self = self
	m.members = []cluster.Member{self}
	m.serviceID = m.cfg.Service + "-" + self.ID
	m.checkID = "service:" + m.serviceID
	m.mu.Unlock()

	reg := m.registration(self, host, port)
	for attempt := 0; ; attempt++ {
		err = m.register(ctx, reg)
		if err == nil {
			break
		}
		m.log.Warn("registering with consul failed, retrying", "address", m.cfg.Address, "attempt", attempt+1, "error", err)
		if werr := sleep(ctx, backoff(attempt, m.cfg.TTL)); werr != nil {
			return fmt.Errorf("consul: register %s at %s (is the agent running?): %w", m.serviceID, m.cfg.Address, errors.Join(err, werr))
		}
	}
	// One answer before serving: the first view is the cluster, not just self.
	members, index, err := m.query(ctx, 0)
	if err != nil {
		_ = m.deregister(context.Background())
		return fmt.Errorf("consul: first member list from %s: %w", m.cfg.Address, err)
	}
	m.apply(members, false)

	loopCtx, cancel := context.WithCancel(context.Background())
	m.cancel = cancel
	m.done.Add(2)
	go m.heartbeat(loopCtx, reg)
	go m.watch(loopCtx, index)
	m.log.Info("joined consul", "service", m.cfg.Service, "member", self.ID, "address", self.Address, "ttl", m.cfg.TTL, "members", len(members))
	return nil
}

// Members returns the current view.
func (m *Membership) Members() []cluster.Member {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.members)
}

// Changes returns a new subscription, signalled (coalesced) on each change.
func (m *Membership) Changes() <-chan struct{} {
	m.mu.Lock()
	defer m.mu.Unlock()
	ch := make(chan struct{}, 1)
	m.subs = append(m.subs, ch)
	return ch
}

// Stop ends the loops and deregisters, so peers see the node leave at once
// instead of after its TTL.
func (m *Membership) Stop(ctx context.Context) error {
	if m.cancel == nil {
		return nil
	}
	m.cancel()
	m.done.Wait()
	m.cancel = nil
	if err := m.deregister(ctx); err != nil {
		return fmt.Errorf("consul: leave: %w (peers drop this node when its TTL lapses)", err)
	}
	return nil
}

func (m *Membership) registration(self cluster.Member, host string, port int) *api.AgentServiceRegistration {
	meta := map[string]string{metaMemberID: self.ID, metaKinds: strings.Join(self.Kinds, ",")}
	for k, v := range self.Meta {
		meta[metaUserPrefix+k] = v
	}
	return &api.AgentServiceRegistration{
		ID:      m.serviceID,
		Name:    m.cfg.Service,
		Address: host,
		Port:    port,
		Meta:    meta,
		Check: &api.AgentServiceCheck{
			CheckID:                        m.checkID,
			TTL:                            m.cfg.TTL.String(),
			Status:                         api.HealthPassing, // serve from the first second, not after one TTL
			DeregisterCriticalServiceAfter: m.cfg.DeregisterAfter.String(),
		},
	}
}

func (m *Membership) register(ctx context.Context, reg *api.AgentServiceRegistration) error {
	return m.client.Agent().ServiceRegisterOpts(reg, api.ServiceRegisterOpts{ReplaceExistingChecks: true}.WithContext(ctx))
}

func (m *Membership) deregister(ctx context.Context) error {
	return m.client.Agent().ServiceDeregisterOpts(m.serviceID, (&api.QueryOptions{}).WithContext(ctx))
}

// heartbeat keeps the TTL check passing. When a heartbeat fails the check
// may be gone (the agent restarted, or reaped this node after a long
// pause), so the next attempt registers again; attempts back off up to the
// heartbeat interval so a down agent is not hammered.
func (m *Membership) heartbeat(ctx context.Context, reg *api.AgentServiceRegistration) {
	defer m.done.Done()
	interval := m.cfg.TTL / 3
	failures := 0
	wait := interval
	for {
		due := time.Now().Add(wait)
		if sleep(ctx, wait) != nil {
			return
		}
		if late := time.Since(due); late > m.cfg.TTL/2 {
			// This process did not run for a while (SIGSTOP, a VM pause, a
			// long GC stall): peers have likely dropped it and moved its
			// grains. Stop owning anything before the grains' stale state
			// can serve a request; self comes back with the next answer
			// from Consul after the re-registration below.
			m.log.Warn("this node was paused past its TTL; giving up ownership until re-registered", "paused_for", late)
			m.dropSelf()
			failures = max(failures, 1)
		}
		var err error
		cctx, cancel := context.WithTimeout(ctx, interval)
		if failures == 0 {
			err = m.client.Agent().UpdateTTLOpts(m.checkID, "", api.HealthPassing, (&api.QueryOptions{}).WithContext(cctx))
		} else {
			err = m.register(cctx, reg)
		}
		cancel()
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			failures++
			wait = backoff(failures, interval)
			level := slog.LevelWarn
			if failures > 1 {
				level = slog.LevelDebug // one warning per outage is enough
			}
			m.log.Log(ctx, level, "consul heartbeat failed; registering again", "error", err, "failures", failures)
			continue
		}
		if failures > 0 {
			m.log.Info("re-registered with consul", "after_failures", failures)
		}
		failures, wait = 0, interval
	}
}

// watch follows the service's passing instances with blocking queries.
// While Consul is unreachable the last view stays in force: the members
// that are known keep serving each other.
func (m *Membership) watch(ctx context.Context, index uint64) {
	defer m.done.Done()
	failures := 0
	for {
		members, next, err := m.query(ctx, index)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			failures++
			if failures == 1 {
				m.log.Warn("consul unreachable; keeping the last member list", "error", err)
			}
			if sleep(ctx, backoff(failures, m.cfg.TTL)) != nil {
				return
			}
			continue
		}
		if next < index {
			// The agent restarted and its index went back: start over.
			next = 0
		}
		m.apply(members, failures > 0)
		if failures > 0 {
			m.log.Info("consul reachable again", "members", len(members))
		}
		failures, index = 0, next
	}
}

func (m *Membership) query(ctx context.Context, index uint64) ([]cluster.Member, uint64, error) {
	q := (&api.QueryOptions{WaitIndex: index, WaitTime: m.cfg.WatchWait}).WithContext(ctx)
	entries, meta, err := m.client.Health().Service(m.cfg.Service, "", true, q)
	if err != nil {
		return nil, index, err
	}
	out := make([]cluster.Member, 0, len(entries))
	for _, e := range entries {
		if mb, ok := memberOf(e.Service); ok {
			out = append(out, mb)
		}
	}
	return out, meta.LastIndex, nil
}

// dropSelf removes this node from its own view, so it owns no grain.
func (m *Membership) dropSelf() {
	m.mu.Lock()
	defer m.mu.Unlock()
	kept := make([]cluster.Member, 0, len(m.members))
	for _, mb := range m.members {
		if mb.Address != m.self.Address {
			kept = append(kept, mb)
		}
	}
	m.graceUntil = time.Time{}
	m.installLocked(kept)
}

// apply installs a fresh list from Consul. Self is in it only while Consul
// reports this node passing.
func (m *Membership) apply(fresh []cluster.Member, recovered bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := time.Now()
	if recovered {
		m.graceUntil = now.Add(m.cfg.TTL)
	}
	if now.Before(m.graceUntil) {
		have := make(map[string]bool, len(fresh))
		for _, f := range fresh {
			have[f.Address] = true
		}
		for _, old := range m.members {
			if !have[old.Address] {
				fresh = append(fresh, old)
			}
		}
	}
	m.installLocked(fresh)
}

func (m *Membership) installLocked(fresh []cluster.Member) {
	sort.Slice(fresh, func(i, j int) bool { return fresh[i].Address < fresh[j].Address })
	if equalMembers(fresh, m.members) {
		return
	}
	m.log.Info("member list changed", "members", addresses(fresh), "was", addresses(m.members))
	m.members = fresh
	for _, ch := range m.subs {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

func memberOf(s *api.AgentService) (cluster.Member, bool) {
	if s == nil || s.Meta[metaMemberID] == "" || s.Port == 0 {
		return cluster.Member{}, false
	}
	mb := cluster.Member{ID: s.Meta[metaMemberID], Address: net.JoinHostPort(s.Address, strconv.Itoa(s.Port))}
	if k := s.Meta[metaKinds]; k != "" {
		mb.Kinds = strings.Split(k, ",")
	}
	for k, v := range s.Meta {
		if name, ok := strings.CutPrefix(k, metaUserPrefix); ok {
			if mb.Meta == nil {
				mb.Meta = make(map[string]string)
			}
			mb.Meta[name] = v
		}
	}
	return mb, true
}

func equalMembers(a, b []cluster.Member) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].ID != b[i].ID || a[i].Address != b[i].Address || !slices.Equal(a[i].Kinds, b[i].Kinds) {
			return false
		}
		if len(a[i].Meta) != len(b[i].Meta) {
			return false
		}
		for k, v := range a[i].Meta {
			if b[i].Meta[k] != v {
				return false
			}
		}
	}
	return true
}

func addresses(ms []cluster.Member) string {
	s := make([]string, len(ms))
	for i, m := range ms {
		s[i] = m.Address
	}
	return strings.Join(s, ",")
}

func splitHostPort(addr string) (string, int, error) {
	host, p, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, err
	}
	port, err := strconv.Atoi(p)
	if err != nil || port <= 0 || port > 65535 {
		return "", 0, fmt.Errorf("bad port in %q", addr)
	}
	return host, port, nil
}

// backoff is exponential from 100 ms, capped, with ±20% jitter so a cluster
// that lost its agent does not come back in lockstep.
func backoff(attempt int, limit time.Duration) time.Duration {
	d := 100 * time.Millisecond
	for i := 0; i < attempt && d < limit; i++ {
		d *= 2
	}
	d = min(d, limit)
	return d - d/5 + time.Duration(rand.Int64N(int64(d/5)*2+1))
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
