package gateway

import "github.com/asynkron/protoactor-go/actor"

// Proto.Actor keeps the Props an actor was spawned from for its whole life
// (a restart calls the producer again). A producer closure per session
// means a Props copy per session: 240 bytes on every idle socket. Sessions
// share one Props instead, and the producer takes its session from a
// hand-off slot. That works because SpawnNamed calls the producer on the
// caller's goroutine before it returns, and because a session is never
// restarted (its guardian stops it), so the producer runs once per spawn.

// spawnSession starts s's actor under the name s.id.
func (g *Gateway) spawnSession(s *session) error {
	g.spawnMu.Lock()
	defer g.spawnMu.Unlock()
	g.spawning = s
	_, err := g.system.Root.SpawnNamed(g.props, s.id)
	g.spawning = nil
	return err
}

// produceSession is the shared Props' producer; g.spawnMu is held.
func (g *Gateway) produceSession() actor.Actor {
	s := g.spawning
	if s == nil {
		// Only a restart could get here, and sessions are never restarted.
		panic("gateway: session producer called outside spawnSession")
	}
	g.spawning = nil
	return s
}
