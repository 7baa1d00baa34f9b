// Package cluster is Courier's virtual-actor (grain) layer on Proto.Actor's
// actor and remote packages: membership, placement by rendezvous hashing,
// an O(1) activation registry per node, passivation, and request/response
// with deadlines and idempotency keys. Cross-node messages always travel in
// clusterpb.Envelope.
//
// CONTRACT (the rest of Courier codes against exactly these names).
package cluster

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"google.golang.org/protobuf/proto"
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
	Producer func(identity string) actor.Actor
	// PassivateAfter overrides Config.PassivateAfter for this kind.
	PassivateAfter time.Duration
}

// Member is one node of the cluster.
type Member struct {
	ID      string   // unique per process lifetime
	Address string   // Proto.Actor remote address host:port ("" on a local-only node)
	Kinds   []string // grain kinds it hosts
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
	NodeAddress string
	// AdvertiseAddress is what peers dial, when different from NodeAddress.
	AdvertiseAddress string
	Membership       Membership // default: Local()
	PassivateAfter   time.Duration // default 5m
	RequestTimeout   time.Duration // default 5s, per attempt
	RequestRetries   int           // default 3
	Logger           *slog.Logger
}

// Cluster is one node's view of the grain space.
type Cluster struct{ _ struct{} }

// New builds a node on system hosting kinds. Call Start before use.
func New(system *actor.ActorSystem, cfg Config, kinds ...Kind) (*Cluster, error) {
	panic("unimplemented")
}

func (c *Cluster) Start(ctx context.Context) error     { panic("unimplemented") }
func (c *Cluster) Shutdown(ctx context.Context) error  { panic("unimplemented") }
func (c *Cluster) System() *actor.ActorSystem           { panic("unimplemented") }

// Request sends msg to the grain and waits for its reply, retrying retryable
// failures with the same key until ctx ends.
func (c *Cluster) Request(ctx context.Context, id GrainID, msg proto.Message, key string) (proto.Message, error) {
	panic("unimplemented")
}

// RequestFuture is Request for callers inside an actor (use with
// ctx.ReenterAfter): the future resolves to the reply proto.Message or an
// error. One attempt, no retries.
func (c *Cluster) RequestFuture(id GrainID, msg proto.Message, key string, timeout time.Duration) *actor.Future {
	panic("unimplemented")
}

// Tell sends msg one-way to an actor PID that may live on another node
// (sessions): wrapped in an Envelope when remote.
func (c *Cluster) Tell(pid *actor.PID, msg proto.Message) { panic("unimplemented") }

// IdempotencyKey returns the key the current request was sent with.
func IdempotencyKey(ctx actor.Context) string { panic("unimplemented") }

// UnwrapReceiver is receiver middleware for plain actors (sessions) that get
// Tell messages from other nodes: it decodes Envelopes before the actor sees them.
func UnwrapReceiver(next actor.ReceiverFunc) actor.ReceiverFunc { panic("unimplemented") }

// RegisterMessages makes types decodable from Envelopes on this node.
func RegisterMessages(msgs ...proto.Message) { panic("unimplemented") }

// Local is the single-node membership provider.
func Local() Membership { panic("unimplemented") }
