// Package cluster is Courier's virtual-actor (grain) layer on Proto.Actor's
// actor and remote packages: membership, placement by rendezvous hashing,
// an O(1) activation registry per node, passivation, and request/response
// with deadlines and idempotency keys. Cross-node messages always travel in
// clusterpb.Envelope.
//
// CONTRACT (the rest of Courier codes against exactly these names).
//
// How a grain is written: Kind.Producer returns a plain actor.Actor. It
// receives *actor.Started on every activation and every supervisor restart
// (load state from the store there), the original request proto message as
// ctx.Message(), answers with ctx.Respond(reply) where reply is a
// proto.Message, and reads the request's key with IdempotencyKey(ctx). It sees
// *actor.Stopping / *actor.Stopped when it is passivated. It must not stop or
// poison itself: passivation belongs to the cluster (see registry.go). A
// grain with nothing worth keeping in memory asks for it early with
// Passivate(ctx).
package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/asynkron/protoactor-go/remote"
	"google.golang.org/protobuf/proto"

	"github.com/courier-im/courier/protos/clusterpb"
)

// Errors callers branch on.
var (
	// ErrUnavailable: the grain could not be reached or did not answer in
	// time; the request may be retried with the same idempotency key.
	ErrUnavailable = errors.New("grain unavailable")
	// ErrUnknownType: the receiving node does not know the message type.
	ErrUnknownType = errors.New("unknown message type")
	// ErrUnknownKind: no member hosts this grain kind.
	ErrUnknownKind = errors.New("unknown grain kind")
	// ErrBadEnvelope: a message could not be encoded or decoded, or a grain
	// replied with something that is not a proto.Message. Not retryable.
	ErrBadEnvelope = errors.New("bad envelope")
)

// GrainID names one virtual actor.
type GrainID struct {
	Kind     string
	Identity string
}

func (id GrainID) String() string { return id.Kind + "/" + id.Identity }

// Kind describes a grain kind this node hosts.
type Kind struct {
	Name string
	// Producer builds the actor for one identity. It is called on every
	// activation and on every supervisor restart; the actor restores its
	// state from the store when it receives *actor.Started.
	// Keep it cheap and free of I/O: on first activation it runs on the
	// requesting goroutine while the grain's registry shard is locked.
	Producer func(identity string) actor.Actor
	// PassivateAfter overrides Config.PassivateAfter for this kind.
	// Negative disables passivation for the kind.
	PassivateAfter time.Duration
}

// Member is one node of the cluster.
type Member struct {
	ID      string   // unique per process lifetime
	Address string   // Proto.Actor remote address host:port ("" on a local-only node)
	Kinds   []string // grain kinds it hosts
	// Meta is what the node tells operators about itself (its gateway URL,
	// version); placement never reads it.
	Meta map[string]string
}

// Membership is where the member list comes from: "local" (this node
// only), "static" (a fixed list, for tests) and later "consul".
type Membership interface {
	// Start joins with self and begins tracking members.
	Start(ctx context.Context, self Member) error
	// Members returns the current view, including self.
	Members() []Member
	// Changes is signalled (non-blocking, coalesced) whenever Members changes.
	Changes() <-chan struct{}
	Stop(ctx context.Context) error
}

// Config tunes a node.
type Config struct {
	// NodeAddress is host:port for Proto.Actor remote; "" runs without remote.
	// Port 0 picks a free port (see Cluster.Self for the result).
	NodeAddress string
	// AdvertiseAddress is what peers dial, when different from NodeAddress.
	AdvertiseAddress string
	// Meta is published with this node's membership entry (Member.Meta).
	Meta           map[string]string
	Membership     Membership    // default: Local()
	PassivateAfter time.Duration // default 5m; negative disables passivation
	RequestTimeout time.Duration // default 5s, per attempt
	RequestRetries int           // default 3; negative means no retries
	Logger         *slog.Logger  // default slog.Default()
}

const (
	defaultPassivateAfter = 5 * time.Minute
	defaultRequestTimeout = 5 * time.Second
	defaultRequestRetries = 3
)

// Cluster is one node's view of the grain space. One Cluster per
// actor.ActorSystem: it owns the system's remote extension.
type Cluster struct {
	system *actor.ActorSystem
	cfg    Config
	log    *slog.Logger

	kinds     map[string]*kindState
	kindNames []string
	shards    [shardCount]shard

	// self and selfKey are written once by Start, before view is published.
	self    Member
	selfKey string
	view    atomic.Pointer[view]

	remote    *remote.Remote
	routerPID *actor.PID
	// discard is the sender of Notify requests: it drops their replies.
	discard   *actor.PID
	statsHook atomic.Pointer[func(*clusterpb.NodeStats)]

	// closing turns every new delivery away (Shutdown has begun).
	closing atomic.Bool
	// live counts activations; drained is closed when it reaches 0 while
	// closing, so Shutdown can wait without polling.
	live atomic.Int64
	// buffered counts messages that arrived while their grain was stopping
	// and were handed to its next activation (observability, tests).
	buffered  atomic.Int64
	drained   chan struct{}
	drainOnce sync.Once

	// lifecycle guards Start/Shutdown against each other.
	lifecycle sync.Mutex
	started   bool
	stopped   bool
	// stopWatch stops the membership watch and the idle sweep; watchDone
	// waits for both.
	stopWatch chan struct{}
	watchDone sync.WaitGroup
}

// New builds a node on system hosting kinds. Call Start before use.
func New(system *actor.ActorSystem, cfg Config, kinds ...Kind) (*Cluster, error) {
	if system == nil {
		return nil, errors.New("cluster: nil actor system")
	}
	if cfg.Membership == nil {
		cfg.Membership = Local()
	}
	if cfg.PassivateAfter == 0 {
		cfg.PassivateAfter = defaultPassivateAfter
	}
	if cfg.RequestTimeout <= 0 {
		cfg.RequestTimeout = defaultRequestTimeout
	}
	switch {
	case cfg.RequestRetries == 0:
		cfg.RequestRetries = defaultRequestRetries
	case cfg.RequestRetries < 0:
		cfg.RequestRetries = 0
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	c := &Cluster{
		system:    system,
		cfg:       cfg,
		log:       cfg.Logger.With("component", "cluster"),
		kinds:     make(map[string]*kindState, len(kinds)),
		drained:   make(chan struct{}),
		stopWatch: make(chan struct{}),
	}
	for i, k := range kinds {
		switch {
		case k.Name == "":
			return nil, fmt.Errorf("cluster: kind #%d has no name", i)
		case k.Producer == nil:
			return nil, fmt.Errorf("cluster: kind %q has no producer", k.Name)
		case c.kinds[k.Name] != nil:
			return nil, fmt.Errorf("cluster: kind %q registered twice", k.Name)
		}
		c.kinds[k.Name] = newKindState(c, k, len(c.kindNames))
		c.kindNames = append(c.kindNames, k.Name)
	}
	for i := range c.shards {
		c.shards[i].grains = make(map[GrainID]*activation)
		c.shards[i].counts = make([]int, len(c.kindNames))
	}
	return c, nil
}

// Start starts remote (when Config.NodeAddress is set), joins the
// membership and begins serving requests.
func (c *Cluster) Start(ctx context.Context) error {
	c.lifecycle.Lock()
	defer c.lifecycle.Unlock()
	if c.started {
		return errors.New("cluster: already started")
	}
	if c.cfg.NodeAddress != "" {
		if err := c.startRemote(); err != nil {
			return err
		}
	}
	addr := ""
	if c.remote != nil {
		addr = c.system.Address()
	}
	// After remote: a PID takes the system's address when it is made, and
	// peers must be able to send replies back to this one.
	c.discard, _ = c.system.ProcessRegistry.Add(discardProcess{}, "courier-discard")
	c.self = Member{ID: c.system.ID, Address: addr, Kinds: append([]string(nil), c.kindNames...), Meta: maps.Clone(c.cfg.Meta)}
	c.selfKey = memberKey(c.self)
	if err := c.cfg.Membership.Start(ctx, c.self); err != nil {
		c.stopRemote(ctx)
		return fmt.Errorf("cluster: join membership as %s: %w", c.selfKey, err)
	}
	changes := c.cfg.Membership.Changes()
	c.refreshView()
	c.started = true
	c.watchDone.Add(2)
	go c.watchMembership(changes)
	go func() {
		defer c.watchDone.Done()
		c.sweepIdle(c.stopWatch)
	}()
	c.log.Info("cluster node started", "member", c.self.ID, "address", addr, "kinds", strings.Join(c.kindNames, ","))
	return nil
}

// Shutdown stops accepting requests, passivates every activation and waits
// (bounded by ctx) for them to stop, then stops remote and the membership.
// The actor system itself belongs to the caller and keeps running.
func (c *Cluster) Shutdown(ctx context.Context) error {
	c.lifecycle.Lock()
	defer c.lifecycle.Unlock()
	if !c.started || c.stopped {
		return nil
	}
	c.stopped = true
	c.closing.Store(true)

	var errs []error
	n := c.passivateWhere(func(*activation) bool { return true })
	// Grains that passivated themselves and wait for a continuation stop
	// now, as a PoisonPill would have stopped them (registry.go).
	c.walkShards(func(a *activation) bool { return a.drainWait.Load() }, func(pid *actor.PID) { c.system.Root.Stop(pid) })
	if c.live.Load() > 0 {
		select {
		case <-c.drained:
		case <-ctx.Done():
			errs = append(errs, fmt.Errorf("cluster: %d of %d grains still stopping: %w", c.live.Load(), n, ctx.Err()))
		}
	}
	close(c.stopWatch)
	c.watchDone.Wait()
	if err := c.stopRemote(ctx); err != nil {
		errs = append(errs, err)
	}
	if err := c.cfg.Membership.Stop(ctx); err != nil {
		errs = append(errs, fmt.Errorf("cluster: leave membership: %w", err))
	}
	c.log.Info("cluster node stopped", "member", c.self.ID, "passivated", n)
	return errors.Join(errs...)
}

// System is the actor system the node runs on.
func (c *Cluster) System() *actor.ActorSystem { return c.system }

// Self is this node as the membership sees it (valid after Start).
func (c *Cluster) Self() Member { return c.self }

// Request sends msg to the grain and waits for its reply, retrying retryable
// failures with the same key until ctx ends.
//
// Each attempt waits at most min(ctx deadline, Config.RequestTimeout); only
// ErrUnavailable-class failures (no reply in time, dead letter, wrong owner
// during a membership change, node stopping) are retried, at most
// Config.RequestRetries times, after a jittered 5–250 ms backoff, always with
// the same key. Errors read "request <kind/id> <msg type>: ..." and wrap
// ErrUnavailable (plus ctx.Err() when ctx ended), ErrUnknownKind,
// ErrUnknownType or ErrBadEnvelope.
func (c *Cluster) Request(ctx context.Context, id GrainID, msg proto.Message, key string) (proto.Message, error) {
	return c.request(ctx, id, msg, key)
}

// RequestAsync is Request for callers inside an actor, without blocking
// it: cont runs on the calling actor's goroutine (see Continuation) with
// the grain's reply, or an error wrapping ErrUnavailable / ErrUnknownKind /
// ErrUnknownType / ErrBadEnvelope. One attempt, no retries; a timeout <= 0
// means Config.RequestTimeout. Call it only from the actor's own goroutine.
func (c *Cluster) RequestAsync(ctx actor.Context, id GrainID, msg proto.Message, key string, timeout time.Duration, cont func(proto.Message, error)) {
	c.requestAsync(ctx, id, msg, key, timeout, cont)
}

// Notify sends msg to the grain as a request whose reply nobody reads (a
// typing notice, a best-effort detach): no reply slot, no timer. Delivery is
// at most once; the error says only that it could not even be sent. A peer
// drops it once ttl has passed (ttl <= 0 means Config.RequestTimeout).
func (c *Cluster) Notify(id GrainID, msg proto.Message, key string, ttl time.Duration) error {
	return c.notify(id, msg, key, ttl, c.discard)
}

// Post is Notify with a reader for the reply: whatever the grain answers
// goes to replyTo as an ordinary message (an Envelope that UnwrapTell
// decodes when it crosses nodes). For requests whose answer matters only
// when it is a refusal, and whose loss is harmless (cumulative acks): no
// reply slot, no timer, nothing to correlate.
func (c *Cluster) Post(id GrainID, msg proto.Message, key string, ttl time.Duration, replyTo *actor.PID) error {
	return c.notify(id, msg, key, ttl, replyTo)
}

// Tell sends msg one-way to an actor PID that may live on another node
// (sessions): wrapped in an Envelope when remote.
func (c *Cluster) Tell(pid *actor.PID, msg proto.Message) { c.tell(pid, msg) }

// IdempotencyKey returns the key the current request was sent with.
func IdempotencyKey(ctx actor.Context) string {
	if ctx == nil {
		return ""
	}
	h := ctx.MessageHeader()
	if h == nil {
		return ""
	}
	return h.Get(idempotencyHeader)
}

// UnwrapReceiver is receiver middleware for plain actors that get Tell
// messages from other nodes: it decodes Envelopes before the actor sees them.
func UnwrapReceiver(next actor.ReceiverFunc) actor.ReceiverFunc { return unwrapReceiver(next) }

// UnwrapTell is UnwrapReceiver for an actor that calls it itself on each
// message (sessions do: with a receiver middleware Proto.Actor gives every
// actor a context extension, 180 bytes on each idle socket). It returns the
// decoded message of a Tell from another node, anything else as it is, and
// false for an envelope to drop (it logs why).
func UnwrapTell(ctx actor.Context) (any, bool) { return unwrapTell(ctx, ctx.Message()) }

// RegisterMessages makes types decodable from Envelopes on this node.
func RegisterMessages(msgs ...proto.Message) { registerMessages(msgs...) }

// Local is the single-node membership provider.
func Local() Membership { return &localMembership{changes: make(chan struct{})} }
