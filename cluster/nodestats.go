package cluster

import (
	"context"
	"fmt"
	"runtime"
	"time"

	"github.com/courier-im/courier/protos/clusterpb"
)

// Node-level requests are Envelopes that name no grain. They answer
// operators' questions about a member (activations per kind, memory), so
// `courier admin grains` can ask any node about every node.

var startedAt = time.Now()

func init() { registerMessages(&clusterpb.NodeStatsRequest{}, &clusterpb.NodeStats{}) }

// SetStatsHook adds figures the cluster does not know (the gateway's open
// sessions) to this node's NodeStats.
func (c *Cluster) SetStatsHook(fn func(*clusterpb.NodeStats)) { c.statsHook.Store(&fn) }

// LocalStats reports this node.
func (c *Cluster) LocalStats() *clusterpb.NodeStats {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	st := &clusterpb.NodeStats{
		MemberId:    c.self.ID,
		Address:     c.self.Address,
		Activations: make(map[string]int64, len(c.kindNames)),
		Goroutines:  int64(runtime.NumGoroutine()),
		HeapBytes:   ms.HeapAlloc,
		UptimeMs:    time.Since(startedAt).Milliseconds(),
	}
	for k, n := range c.Activations() {
		st.Activations[k] = int64(n)
	}
	if fn := c.statsHook.Load(); fn != nil {
		(*fn)(st)
	}
	return st
}

// MemberStats asks one member for its NodeStats (this node answers itself).
func (c *Cluster) MemberStats(ctx context.Context, m Member) (*clusterpb.NodeStats, error) {
	if memberKey(m) == c.selfKey {
		return c.LocalStats(), nil
	}
	if c.remote == nil || m.Address == "" {
		return nil, fmt.Errorf("stats of %s: %w: this node has no remote", memberKey(m), ErrUnavailable)
	}
	env, err := encodePayload(&clusterpb.NodeStatsRequest{})
	if err != nil {
		return nil, err
	}
	deadline := time.Now().Add(c.cfg.RequestTimeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	env.DeadlineUnixMs = deadline.UnixMilli()
	s := &replySlot{remote: true, ch: make(chan interface{}, 1)}
	c.register(s)
	defer c.system.ProcessRegistry.Remove(s.pid)
	c.sendTo(m.Address, env, s.pid)
	t := time.NewTimer(time.Until(deadline))
	defer t.Stop()
	select {
	case r := <-s.ch:
		reply, err := decodeReply(r, true)
		if err != nil {
			return nil, fmt.Errorf("stats of %s: %w", m.Address, err)
		}
		st, ok := reply.(*clusterpb.NodeStats)
		if !ok {
			return nil, fmt.Errorf("stats of %s: %w: reply is %T", m.Address, ErrBadEnvelope, reply)
		}
		return st, nil
	case <-t.C:
		return nil, fmt.Errorf("stats of %s: %w: no reply by the deadline", m.Address, ErrUnavailable)
	case <-ctx.Done():
		return nil, fmt.Errorf("stats of %s: %w: %w", m.Address, ErrUnavailable, ctx.Err())
	}
}

// handleNodeRequest answers an Envelope that names no grain.
func (c *Cluster) handleNodeRequest(env *clusterpb.Envelope) (*clusterpb.Envelope, bool) {
	if env.TypeName != typeName(&clusterpb.NodeStatsRequest{}) {
		return nil, false
	}
	return encodeReply(c.LocalStats()), true
}
