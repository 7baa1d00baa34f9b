package gateway

import (
	"time"

	"github.com/asynkron/protoactor-go/actor"
)

// renewSlots is how many groups the sessions' lease renewals are spread
// over: the renewer wakes LeaseRenew/renewSlots apart and renews one group.
const renewSlots = 64

// renewLoop asks the sessions of one slot per tick to renew their
// attachment, so each renews once per LeaseRenew. One ticker for the
// gateway replaces a timer per connection (with its closure and a stop hook
// on the session's context): about 600 bytes an idle connection would
// otherwise keep all its life. It runs while any session is open.
func (g *Gateway) renewLoop() {
	t := time.NewTicker(max(g.cfg.LeaseRenew/renewSlots, time.Millisecond))
	defer t.Stop()
	var due []string
	for range t.C {
		g.mu.Lock()
		if g.nSessions == 0 || g.closing {
			g.renewing = false
			g.mu.Unlock()
			return
		}
		due = due[:0]
		for s := range g.sessions[g.slotAt] {
			due = append(due, s.id)
		}
		g.slotAt = (g.slotAt + 1) % renewSlots
		g.mu.Unlock()
		// A session's PID is its id at this system's address; building it
		// here keeps the session from storing a second copy.
		addr := g.system.Address()
		for _, id := range due {
			g.system.Root.Send(actor.NewPID(addr, id), renewLease{})
		}
	}
}

// A renewal that reaches a session already gone is no news.
func (renewLease) IgnoreDeadLetterLogging() {}
