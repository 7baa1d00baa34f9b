package actors

import "github.com/asynkron/protoactor-go/actor"

// deviceSessions is the session attached to each online device of a user.
// A user has a handful of devices and every online user's grain keeps
// this: a slice costs 16 bytes a device where a map cost about 190 bytes
// for the first one.
type deviceSessions []deviceSession

type deviceSession struct {
	device uint32
	pid    *actor.PID
}

// get is the session attached to device.
func (d deviceSessions) get(device uint32) (*actor.PID, bool) {
	for _, s := range d {
		if s.device == device {
			return s.pid, true
		}
	}
	return nil, false
}

// set attaches pid to device, replacing any session it had.
func (d *deviceSessions) set(device uint32, pid *actor.PID) {
	for i := range *d {
		if (*d)[i].device == device {
			(*d)[i].pid = pid
			return
		}
	}
	*d = append(*d, deviceSession{device: device, pid: pid})
}

// remove detaches device; false if it had no session.
func (d *deviceSessions) remove(device uint32) bool {
	return d.removeWhere(func(s deviceSession) bool { return s.device == device })
}

// removePID detaches every device attached to pid; false if none was.
func (d *deviceSessions) removePID(pid *actor.PID) bool {
	return d.removeWhere(func(s deviceSession) bool { return s.pid.Equal(pid) })
}

// removeWhere detaches the devices match picks (order is not kept).
func (d *deviceSessions) removeWhere(match func(deviceSession) bool) bool {
	gone := false
	for i := 0; i < len(*d); {
		if !match((*d)[i]) {
			i++
			continue
		}
		last := len(*d) - 1
		(*d)[i], (*d)[last] = (*d)[last], deviceSession{}
		*d = (*d)[:last]
		gone = true
	}
	if len(*d) == 0 {
		*d = nil // give the array back with the last device
	}
	return gone
}

// watchSession has the grain told when pid's session ends, so the device
// goes offline (and gets push notifications) at once.
//
// A session on this node is not watched: when it stops it sends
// DetachDevice itself, and a watch would cost every idle connection about
// 600 bytes (Proto.Actor gives a watched actor a context extension and a
// watcher set). A session on another node is watched: its node can die
// without a word, and only the remote layer's Terminated says so. As a
// backstop for a DetachDevice that never arrives, push checks that local
// sessions still exist (dropStoppedSessions).
func (g *userGrain) watchSession(ctx actor.Context, pid *actor.PID) {
	if pid.Address != ctx.Self().Address {
		ctx.Watch(pid)
	}
}

// dropStoppedSessions detaches the devices whose local session is gone.
func (g *userGrain) dropStoppedSessions(ctx actor.Context) {
	self, registry := ctx.Self().Address, ctx.ActorSystem().ProcessRegistry
	for i := 0; i < len(g.sessions); {
		pid := g.sessions[i].pid
		if pid.Address == self {
			if _, ok := registry.GetLocal(pid.Id); !ok {
				g.sessionTerminated(ctx, pid)
				continue // removed: index i now holds another device
			}
		}
		i++
	}
}
