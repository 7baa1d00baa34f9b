package cluster

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"google.golang.org/protobuf/proto"

	"github.com/courier-im/courier/protos/clusterpb"
)

// idempotencyHeader carries the request's key in the local MessageEnvelope
// header (Envelope.idempotency_key on the wire).
const idempotencyHeader = "courier-idempotency-key"

func keyHeader(key string) map[string]string {
	if key == "" {
		return nil
	}
	return map[string]string{idempotencyHeader: key}
}

// Retry backoff between attempts: 5 ms, 10 ms, 20 ms ... capped at 250 ms,
// jittered ±50 %. Long enough for a membership change or a grain restart to
// land, short next to a 5 s attempt.
const (
	retryBaseBackoff = 5 * time.Millisecond
	retryMaxBackoff  = 250 * time.Millisecond
)

func retryBackoff(attempt int) time.Duration {
	d := retryMaxBackoff
	if attempt < 16 {
		d = min(retryBaseBackoff<<(attempt-1), retryMaxBackoff)
	}
	return d/2 + rand.N(d+1)
}

// request: see Cluster.Request. Only ErrUnavailable-class failures (no
// reply in time, dead letter, wrong owner, node stopping) are retried; every
// attempt carries the same key, so a grain that did the work but whose reply
// was lost can answer the retry without doing it twice.
func (c *Cluster) request(ctx context.Context, id GrainID, msg proto.Message, key string) (proto.Message, error) {
	if msg == nil {
		return nil, fmt.Errorf("request %s: %w: nil message", id, ErrBadEnvelope)
	}
	attempts := 1 + c.cfg.RequestRetries
	var err error
	for attempt := 1; ; attempt++ {
		var reply proto.Message
		if reply, err = c.attempt(ctx, id, msg, key); err == nil {
			return reply, nil
		}
		if !errors.Is(err, ErrUnavailable) || attempt >= attempts || c.closing.Load() ||
			ctx.Err() != nil || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
			break
		}
		t := time.NewTimer(retryBackoff(attempt))
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			err = fmt.Errorf("%w; gave up: %w", err, ctx.Err())
		}
		if ctx.Err() != nil {
			break
		}
	}
	return nil, fmt.Errorf("request %s %T: %w", id, msg, err)
}

// attempt sends msg once and waits until the reply, the per-attempt timeout
// or the end of ctx, whichever comes first.
func (c *Cluster) attempt(ctx context.Context, id GrainID, msg proto.Message, key string) (proto.Message, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	v := c.view.Load()
	if v == nil {
		return nil, errNotStarted
	}
	if c.closing.Load() {
		return nil, errStopping
	}
	h := keyHash(id)
	owner := v.owner(id.Kind, h)
	if owner == nil {
		return nil, fmt.Errorf("%w: no member hosts %q", ErrUnknownKind, id.Kind)
	}
	timeout := c.cfg.RequestTimeout
	deadline := time.Now().Add(timeout)
	ctxBound := false // the attempt ends at ctx's deadline, not its own
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline, ctxBound = d, true
	}

	s := &replySlot{remote: !owner.self, ch: make(chan interface{}, 1)}
	c.register(s)
	defer c.system.ProcessRegistry.Remove(s.pid)

	if err := c.send(owner, id, h, msg, key, deadline, s.pid); err != nil {
		return nil, err
	}
	t := time.NewTimer(time.Until(deadline))
	defer t.Stop()
	select {
	case m := <-s.ch:
		return decodeReply(m, s.remote)
	case <-t.C:
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrUnavailable, err)
		}
		if ctxBound {
			// Our timer may fire a hair before ctx's own.
			return nil, fmt.Errorf("%w: %w", ErrUnavailable, context.DeadlineExceeded)
		}
		return nil, fmt.Errorf("%w: no reply within %v", ErrUnavailable, timeout)
	case <-ctx.Done():
		return nil, fmt.Errorf("%w: %w", ErrUnavailable, ctx.Err())
	}
}

// send delivers msg to the owner: straight into the local registry, or as an
// Envelope to the owner's router with replyTo as the sender.
func (c *Cluster) send(owner *candidate, id GrainID, h uint64, msg proto.Message, key string, deadline time.Time, replyTo *actor.PID) error {
	if owner.self {
		return c.deliverLocal(id, h, &actor.MessageEnvelope{Header: keyHeader(key), Message: msg, Sender: replyTo})
	}
	if owner.router == nil || c.remote == nil {
		return fmt.Errorf("%w: %s is owned by %s, which this node cannot reach", ErrUnavailable, id, owner.key)
	}
	env, err := encodePayload(msg)
	if err != nil {
		return err
	}
	env.Kind, env.Identity = id.Kind, id.Identity
	env.IdempotencyKey = key
	env.DeadlineUnixMs = deadline.UnixMilli()
	c.system.Root.Send(owner.router, &actor.MessageEnvelope{Message: env, Sender: replyTo})
	return nil
}

// sendTo sends an Envelope to the router of the member at address.
func (c *Cluster) sendTo(address string, env *clusterpb.Envelope, replyTo *actor.PID) {
	c.system.Root.Send(actor.NewPID(address, routerName), &actor.MessageEnvelope{Message: env, Sender: replyTo})
}

func (c *Cluster) register(s *replySlot) {
	// NextId is unique per actor system, so Add cannot collide.
	s.pid, _ = c.system.ProcessRegistry.Add(s, "courier-reply"+c.system.ProcessRegistry.NextId())
}

// requestAsync: see Cluster.RequestAsync.
func (c *Cluster) requestAsync(ctx actor.Context, id GrainID, msg proto.Message, key string, timeout time.Duration, cont func(proto.Message, error)) {
	post := continueOn(ctx)
	c.requestOnce(id, msg, key, timeout, func(reply proto.Message, err error) {
		post(func() { cont(reply, err) })
	})
}

// requestOnce sends msg in one attempt and calls done exactly once, from
// whichever goroutine resolves it, with the reply or an error that reads
// "request <id> <type>: ...".
func (c *Cluster) requestOnce(id GrainID, msg proto.Message, key string, timeout time.Duration, done func(proto.Message, error)) {
	if timeout <= 0 {
		timeout = c.cfg.RequestTimeout
	}
	s := &replySlot{c: c, then: done, id: id, msg: msg}
	if msg == nil {
		s.resolve(nil, fmt.Errorf("%w: nil message", ErrBadEnvelope))
		return
	}
	v := c.view.Load()
	switch {
	case v == nil:
		s.resolve(nil, errNotStarted)
		return
	case c.closing.Load():
		s.resolve(nil, errStopping)
		return
	}
	h := keyHash(id)
	owner := v.owner(id.Kind, h)
	if owner == nil {
		s.resolve(nil, fmt.Errorf("%w: no member hosts %q", ErrUnknownKind, id.Kind))
		return
	}
	s.remote = !owner.self
	c.register(s)
	s.timer = time.AfterFunc(timeout, func() {
		s.resolve(nil, fmt.Errorf("%w: no reply within %v", ErrUnavailable, timeout))
	})
	if err := c.send(owner, id, h, msg, key, time.Now().Add(timeout), s.pid); err != nil {
		s.timer.Stop()
		s.resolve(nil, err)
	}
}

// notify: see Cluster.Notify and Cluster.Post.
func (c *Cluster) notify(id GrainID, msg proto.Message, key string, ttl time.Duration, replyTo *actor.PID) error {
	if ttl <= 0 {
		ttl = c.cfg.RequestTimeout
	}
	if msg == nil {
		return fmt.Errorf("notify %s: %w: nil message", id, ErrBadEnvelope)
	}
	v := c.view.Load()
	switch {
	case v == nil:
		return fmt.Errorf("notify %s %T: %w", id, msg, errNotStarted)
	case c.closing.Load():
		return fmt.Errorf("notify %s %T: %w", id, msg, errStopping)
	}
	h := keyHash(id)
	owner := v.owner(id.Kind, h)
	if owner == nil {
		return fmt.Errorf("notify %s %T: %w: no member hosts %q", id, msg, ErrUnknownKind, id.Kind)
	}
	if err := c.send(owner, id, h, msg, key, time.Now().Add(ttl), replyTo); err != nil {
		return fmt.Errorf("notify %s %T: %w", id, msg, err)
	}
	return nil
}

// discardProcess is the sender of every Notify: it drops the replies.
type discardProcess struct{}

func (discardProcess) SendUserMessage(*actor.PID, interface{})   {}
func (discardProcess) SendSystemMessage(*actor.PID, interface{}) {}
func (discardProcess) Stop(*actor.PID)                           {}

// replySlot is the sender of one request: a process in Proto.Actor's
// registry that takes the first message it gets. Request waits on ch;
// requestOnce calls done.
type replySlot struct {
	pid    *actor.PID
	remote bool // the owner is a peer: replies are Envelopes
	done   atomic.Bool
	ch     chan interface{}

	c     *Cluster
	then  func(proto.Message, error)
	timer *time.Timer
	id    GrainID
	msg   proto.Message
}

var _ actor.Process = (*replySlot)(nil)

func (s *replySlot) SendUserMessage(_ *actor.PID, m interface{}) {
	_, msg, _ := actor.UnwrapEnvelope(m)
	if s.then == nil {
		if s.done.CompareAndSwap(false, true) {
			s.ch <- msg // buffered 1 and sent once: never blocks the grain
		}
		return
	}
	if s.done.Load() {
		return // timed out already
	}
	if s.timer != nil {
		s.timer.Stop()
	}
	s.resolve(decodeReply(msg, s.remote))
}

// resolve completes a requestOnce exactly once.
func (s *replySlot) resolve(reply proto.Message, err error) {
	if !s.done.CompareAndSwap(false, true) {
		return
	}
	if s.pid != nil {
		s.c.system.ProcessRegistry.Remove(s.pid)
	}
	if err != nil {
		err = fmt.Errorf("request %s %T: %w", s.id, s.msg, err)
	}
	s.then(reply, err)
}

func (s *replySlot) SendSystemMessage(*actor.PID, interface{}) {}
func (s *replySlot) Stop(*actor.PID)                           {}

// decodeReply interprets what arrived at a reply slot.
func decodeReply(m interface{}, remote bool) (proto.Message, error) {
	switch r := m.(type) {
	case *failure:
		return nil, r.err
	case *actor.DeadLetterResponse:
		return nil, fmt.Errorf("%w: dead letter", ErrUnavailable)
	}
	if remote {
		env, ok := m.(*clusterpb.Envelope)
		if !ok {
			return nil, fmt.Errorf("%w: peer replied with %T", ErrBadEnvelope, m)
		}
		if st := env.GetStatus(); st != nil && st.GetCode() != clusterpb.StatusCode_STATUS_OK {
			return nil, statusError(st)
		}
		return decodePayload(env.TypeName, env.Payload)
	}
	reply, ok := m.(proto.Message)
	if !ok {
		return nil, fmt.Errorf("%w: grain replied with non-protobuf %T", ErrBadEnvelope, m)
	}
	return reply, nil
}
