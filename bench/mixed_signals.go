package bench

import (
	"context"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/courier-im/courier/client"
)

// readMarks tracks read receipts: a receiver notes a message before it
// marks it read, its sender's receipt takes it off again.
type readMarks struct {
	pending     sync.Map // client_msg_id -> struct{}
	outstanding atomic.Int64
	sent        atomic.Int64
	received    atomic.Int64
	unexpected  atomic.Int64 // receipts for no pending mark: a repeat (receipts are at-least-once)
}

func (m *readMarks) note(id string) {
	m.pending.Store(id, struct{}{})
	m.outstanding.Add(1)
}

func (m *readMarks) forget(id string) {
	if _, ok := m.pending.LoadAndDelete(id); ok {
		m.outstanding.Add(-1)
	}
}

func (m *readMarks) receipt(ids []string) {
	for _, id := range ids {
		if _, ok := m.pending.LoadAndDelete(id); ok {
			m.outstanding.Add(-1)
			m.received.Add(1)
		} else {
			m.unexpected.Add(1)
		}
	}
}

// markRead marks the messages a receiver queued as read, a batch per peer.
func markRead(ctx context.Context, c *client.Client, q <-chan readReq, marks *readMarks) {
	for req := range q {
		batch := map[string][]string{req.peer: {req.id}}
	drain:
		for range 63 {
			select {
			case r, ok := <-q:
				if !ok {
					break drain
				}
				batch[r.peer] = append(batch[r.peer], r.id)
			default:
				break drain
			}
		}
		for peer, ids := range batch {
			if ctx.Err() != nil {
				for _, id := range ids {
					marks.forget(id)
				}
				continue
			}
			cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			err := c.MarkRead(cctx, peer, ids...)
			cancel()
			if err != nil {
				for _, id := range ids {
					marks.forget(id)
				}
				continue
			}
			marks.sent.Add(int64(len(ids)))
		}
	}
}

// dropConnections drops a random user's connection ReconnectRate times a
// second until stop closes; the SDK reconnects and resumes.
func dropConnections(cfg MixedConfig, clients []*client.Client, stop <-chan struct{}, n *atomic.Int64) {
	if cfg.ReconnectRate <= 0 {
		return
	}
	rng := rand.New(rand.NewPCG(cfg.Seed, 1<<40))
	t := time.NewTicker(time.Duration(float64(time.Second) / cfg.ReconnectRate))
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			clients[rng.IntN(len(clients))].DropConnection()
			n.Add(1)
		}
	}
}

// waitZero waits until n is zero; false when ctx ended or n did not move
// for stall.
func waitZero(ctx context.Context, n *atomic.Int64, stall time.Duration) bool {
	t := time.NewTicker(5 * time.Millisecond)
	defer t.Stop()
	last, movedAt := n.Load(), time.Now()
	for {
		v := n.Load()
		if v <= 0 {
			return true
		}
		select {
		case now := <-t.C:
			if v != last {
				last, movedAt = v, now
			} else if now.Sub(movedAt) > stall {
				return false
			}
		case <-ctx.Done():
			return false
		}
	}
}
