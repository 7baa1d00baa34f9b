package cluster

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/asynkron/protoactor-go/remote"

	"github.com/courier-im/courier/protos/clusterpb"
)

// routerName is the well-known process every node registers; peers address
// it as actor.NewPID(member.Address, routerName).
const routerName = "courier-router"

func pidString(p *actor.PID) string {
	if p == nil {
		return "<none>"
	}
	return p.Address + "/" + p.Id
}

// router receives requests from peers. It is a bare actor.Process rather
// than an actor: Proto.Actor's endpoint reader hands it each message on the
// stream's goroutine, and all it does is decode and push into the sharded
// registry (never blocking), so a mailbox would only add a hop and one more
// place where all cross-node traffic is serialised.
type router struct{ c *Cluster }

var _ actor.Process = (*router)(nil)

func (r *router) SendUserMessage(_ *actor.PID, m interface{}) { r.c.handlePeer(m) }
func (r *router) SendSystemMessage(*actor.PID, interface{})   {}
func (r *router) Stop(*actor.PID)                             {}

// handlePeer routes one Envelope from a peer to the local grain and arranges
// for the reply to go back as an Envelope. Every failure is an Envelope
// status for the sender, never a panic.
func (c *Cluster) handlePeer(m interface{}) {
	_, msg, sender := actor.UnwrapEnvelope(m)
	env, ok := msg.(*clusterpb.Envelope)
	if !ok {
		c.log.Warn("router: refusing non-envelope", "type", fmt.Sprintf("%T", msg), "from", pidString(sender))
		c.refuse(sender, fmt.Errorf("%w: router accepts only %s, got %T", ErrBadEnvelope, typeName(&clusterpb.Envelope{}), msg))
		return
	}
	if env.Kind == "" && env.Identity == "" {
		if reply, ok := c.handleNodeRequest(env); ok {
			if sender != nil {
				c.system.Root.Send(sender, reply)
			}
			return
		}
	}
	if env.Kind == "" || env.Identity == "" {
		c.refuse(sender, fmt.Errorf("%w: envelope names no grain and is no node request", ErrBadEnvelope))
		return
	}
	id := GrainID{Kind: env.Kind, Identity: env.Identity}
	payload, err := decodePayload(env.TypeName, env.Payload)
	if err != nil {
		c.log.Warn("router: refusing request", "grain", id.String(), "type", env.TypeName, "error", err)
		c.refuse(sender, err)
		return
	}
	// The caller's deadline is another machine's wall clock: with skew,
	// treating it as authoritative could drop every request from that node.
	// It only extends how long the relay waits for the grain.
	deadline := time.Now().Add(c.cfg.RequestTimeout)
	if d := time.UnixMilli(env.DeadlineUnixMs); env.DeadlineUnixMs > 0 && d.After(deadline) {
		deadline = d
	}
	var replyTo *actor.PID
	var rl *relay
	if sender != nil {
		rl = c.newRelay(sender, deadline)
		replyTo = rl.pid
	}
	local := &actor.MessageEnvelope{Header: keyHeader(env.IdempotencyKey), Message: payload, Sender: replyTo}
	if err := c.deliverLocal(id, keyHash(id), local); err != nil && rl != nil {
		rl.SendUserMessage(nil, &failure{err: err})
	}
}

// relay stands in for a remote requester inside this node: the grain
// answers it like any local sender, and it forwards the answer as an
// Envelope. It unregisters itself after one message or at the deadline.
type relay struct {
	c       *Cluster
	pid     *actor.PID
	replyTo *actor.PID
	done    atomic.Bool
	timer   *time.Timer
}

var _ actor.Process = (*relay)(nil)

func (c *Cluster) newRelay(replyTo *actor.PID, deadline time.Time) *relay {
	r := &relay{c: c, replyTo: replyTo}
	r.pid, _ = c.system.ProcessRegistry.Add(r, "courier-relay"+c.system.ProcessRegistry.NextId())
	r.timer = time.AfterFunc(time.Until(deadline), func() {
		// The requester has given up; just stop holding the registration.
		if r.done.CompareAndSwap(false, true) {
			c.system.ProcessRegistry.Remove(r.pid)
		}
	})
	return r
}

func (r *relay) SendUserMessage(_ *actor.PID, m interface{}) {
	if !r.done.CompareAndSwap(false, true) {
		return
	}
	r.timer.Stop()
	r.c.system.ProcessRegistry.Remove(r.pid)
	_, msg, _ := actor.UnwrapEnvelope(m)
	r.c.system.Root.Send(r.replyTo, encodeReply(msg))
}

func (r *relay) SendSystemMessage(*actor.PID, interface{}) {}
func (r *relay) Stop(*actor.PID)                           {}

// startRemote registers the router and starts Proto.Actor remote.
func (c *Cluster) startRemote() (err error) {
	host, portStr, err := net.SplitHostPort(c.cfg.NodeAddress)
	if err != nil {
		return fmt.Errorf("cluster: node address %q: %w", c.cfg.NodeAddress, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return fmt.Errorf("cluster: node address %q: bad port: %w", c.cfg.NodeAddress, err)
	}
	// Registered before the listener opens so no early request dead-letters.
	pid, ok := c.system.ProcessRegistry.Add(&router{c: c}, routerName)
	if !ok {
		return fmt.Errorf("cluster: %s already registered (one Cluster per actor system)", routerName)
	}
	var opts []remote.ConfigOption
	if c.cfg.AdvertiseAddress != "" {
		opts = append(opts, remote.WithAdvertisedHost(c.cfg.AdvertiseAddress))
	}
	r := remote.NewRemote(c.system, remote.Configure(host, port, opts...))
	defer func() {
		// remote.Start panics when it cannot listen.
		if p := recover(); p != nil {
			c.system.ProcessRegistry.Remove(pid)
			err = fmt.Errorf("cluster: start remote on %s: %v", c.cfg.NodeAddress, p)
		}
	}()
	r.Start()
	c.remote = r
	c.routerPID = pid
	return nil
}

// stopRemote unregisters the router and stops remote, waiting at most until
// ctx ends. Proto.Actor's graceful stop bounds itself at 10 s, so a
// goroutine abandoned by an expired ctx still ends.
func (c *Cluster) stopRemote(ctx context.Context) error {
	if c.remote == nil {
		return nil
	}
	c.system.ProcessRegistry.Remove(c.routerPID)
	done := make(chan struct{})
	go func() {
		defer close(done)
		c.remote.Shutdown(true)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("cluster: stop remote: %w", ctx.Err())
	}
}
