package gateway

import (
	"time"

	"github.com/asynkron/protoactor-go/actor"
)

// renewSlots is how many groups the sessions' lease renewals are spread
// over: the renewer wakes LeaseRenew/renewSlots apart and renews one group.
const renewSlots = 64

// housekeep runs the gateway's per-session chores from two tickers, while
// any session is open. One ticker for the gateway replaces a timer per
// connection: about 600 bytes (a lease timer with its closure and a stop
// hook) plus 130 (an idle timer) that an idle connection would otherwise
// keep all its life.
//   - Lease renewal: the sessions of one slot per tick are asked to renew
//     their attachment, so each renews once per LeaseRenew.
//   - Idle timeout of parked sockets (park.go): every IdleTimeout/8, those
//     whose time is up are closed, so a silent socket goes between 1 and
//     1.125 idle timeouts after it last spoke. (A socket with a reader has
//     its read deadline for this.)
func (g *Gateway) housekeep() {
	renew := time.NewTicker(max(g.cfg.LeaseRenew/renewSlots, time.Millisecond))
	defer renew.Stop()
	var idleC <-chan time.Time
	if g.poller != nil {
		idle := time.NewTicker(max(g.cfg.IdleTimeout/8, time.Millisecond))
		defer idle.Stop()
		idleC = idle.C
	}
	var due []string
	var expired []*session
	for {
		select {
		case <-renew.C:
		case <-idleC:
			expired = g.idleParked(expired[:0])
			for i, s := range expired {
				s.idleExpired()
				expired[i] = nil
			}
			continue
		}
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

// idleParked appends the parked sessions whose idle time is up.
func (g *Gateway) idleParked(out []*session) []*session {
	now := g.clock()
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, slot := range g.sessions {
		for s := range slot {
			if s.reader.Load() == readerParked && s.idleAt.Load() <= int64(now) {
				out = append(out, s)
			}
		}
	}
	return out
}

// A renewal that reaches a session already gone is no news.
func (renewLease) IgnoreDeadLetterLogging() {}
