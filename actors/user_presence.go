package actors

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/courier-im/courier/persistence"
	"github.com/courier-im/courier/protos/courierpb"
	"github.com/courier-im/courier/push"
)

// Presence: a user is online while any of its devices has a session. Only
// sessions that subscribed (the chats a client has open) hear about it,
// never every contact, and each user's updates are debounced: at most one
// per PresenceDebounce, carrying the latest state, so a flapping connection
// produces a bounded trickle instead of a storm. Nothing but last seen is
// stored.

// MaxPresenceWatchers bounds the sessions one user's presence keeps.
const MaxPresenceWatchers = 10000

// PresenceStats counts presence work on a node (for benchmarks and admin).
type PresenceStats struct {
	// Changes counts online/offline transitions of users.
	Changes atomic.Int64
	// Sent counts updates handed to subscribed sessions.
	Sent atomic.Int64
	// Coalesced counts transitions that produced no update of their own
	// because the debounce folded them into a later one.
	Coalesced atomic.Int64
}

type watcher struct {
	pid    *actor.PID
	viewer string
	// hides: the viewer hides its own presence (NOBODY is reciprocal).
	hides bool
	// told is what this watcher last heard (nil: nothing, or PresenceGone).
	// Watchers subscribe at different moments, so each has its own: a
	// debounced update goes to those whose view is out of date.
	told *courierpb.PresenceUpdate
}

type presenceState struct {
	watchers map[string]*watcher // by session PID
	// sentAt is when watchers were last told about a change.
	sentAt     time.Time
	timer      *time.Timer // the debounce timer, made when first armed
	timerArmed bool
	// pendingChanges counts transitions since the last broadcast.
	pendingChanges int
}

// presenceTick fires when a debounced update is due.
type presenceTick struct{}

func pidKey(p *actor.PID) string { return p.Address + "/" + p.Id }

func (g *userGrain) online() bool { return len(g.sessions) > 0 }

// visibleTo reports whether viewer may see this user's presence.
func (g *userGrain) visibleTo(w *watcher) bool {
	if w.hides || g.profile.blocked[w.viewer] {
		return false
	}
	switch g.profile.pb.PresenceVisibility {
	case courierpb.Visibility_VISIBILITY_EVERYONE:
		return true
	case courierpb.Visibility_VISIBILITY_CONTACTS:
		_, ok := g.profile.contacts[w.viewer]
		return ok
	default:
		return false
	}
}

func (g *userGrain) presenceUpdate() *courierpb.PresenceUpdate {
	u := &courierpb.PresenceUpdate{UserId: g.id, Online: g.online()}
	if !u.Online {
		u.LastSeenMs = g.profile.pb.LastSeenMs
	}
	return u
}

func (g *userGrain) watchPresence(ctx actor.Context, msg *courierpb.WatchPresence) {
	if e := g.ready(); e != nil {
		ctx.Respond(&courierpb.WatchPresenceReply{Error: e})
		return
	}
	if msg.SessionId == "" || msg.ViewerUserId == "" {
		ctx.Respond(&courierpb.WatchPresenceReply{Error: codeError(courierpb.ErrorCode_INVALID_ARGUMENT, "session and viewer are required", false)})
		return
	}
	pid := actor.NewPID(msg.SessionAddress, msg.SessionId)
	key := pidKey(pid)
	if msg.Unwatch {
		if _, ok := g.presence.watchers[key]; ok {
			delete(g.presence.watchers, key)
			g.unwatchIfUnused(ctx, pid)
		}
		ctx.Respond(&courierpb.WatchPresenceReply{})
		return
	}
	w, existed := g.presence.watchers[key]
	if !existed {
		if len(g.presence.watchers) >= MaxPresenceWatchers {
			ctx.Respond(&courierpb.WatchPresenceReply{Error: codeError(courierpb.ErrorCode_RATE_LIMITED, "too many presence subscribers", true)})
			return
		}
		w = &watcher{pid: pid}
		if g.presence.watchers == nil {
			g.presence.watchers = make(map[string]*watcher)
		}
		g.presence.watchers[key] = w
		ctx.Watch(pid)
	}
	wasVisible := existed && g.visibleTo(w)
	w.viewer, w.hides = msg.ViewerUserId, msg.ViewerVisibility == courierpb.Visibility_VISIBILITY_NOBODY
	ctx.Respond(&courierpb.WatchPresenceReply{})
	switch visible := g.visibleTo(w); {
	case visible && !wasVisible:
		g.tell(w, g.presenceUpdate())
	case !visible && wasVisible:
		g.gone(w)
	}
}

// tell sends u to w and remembers it.
func (g *userGrain) tell(w *watcher, u *courierpb.PresenceUpdate) {
	g.deps.Cluster.Tell(w.pid, u)
	w.told = u
}

func (g *userGrain) gone(w *watcher) {
	g.deps.Cluster.Tell(w.pid, &courierpb.PresenceGone{UserId: g.id})
	w.told = nil
}

// unwatchIfUnused stops watching pid unless it is still a device session or
// a presence watcher of this grain.
func (g *userGrain) unwatchIfUnused(ctx actor.Context, pid *actor.PID) {
	if _, ok := g.presence.watchers[pidKey(pid)]; ok {
		return
	}
	for _, s := range g.sessions {
		if s.pid.Equal(pid) {
			return
		}
	}
	ctx.Unwatch(pid)
}

// presenceChanged records a transition and tells watchers now, or when the
// debounce period ends.
func (g *userGrain) presenceChanged(ctx actor.Context) {
	g.deps.Presence.Changes.Add(1)
	g.presence.pendingChanges++
	if len(g.presence.watchers) == 0 {
		// Nobody listens: nothing to send; the next watcher gets the state.
		g.presence.pendingChanges = 0
		return
	}
	wait := g.deps.Config.PresenceDebounce - g.deps.Now().Sub(g.presence.sentAt)
	if wait <= 0 {
		g.broadcastPresence()
		return
	}
	if !g.presence.timerArmed {
		g.presence.timerArmed = true
		if g.presence.timer != nil {
			g.presence.timer.Reset(wait)
			return
		}
		// One timer for the activation's life, stopped with it: a stop
		// hook per arming would pile up on g.stop while a watched user
		// keeps flapping.
		self, root := ctx.Self(), ctx.ActorSystem().Root
		t := time.AfterFunc(wait, func() { root.Send(self, presenceTick{}) })
		g.presence.timer = t
		context.AfterFunc(g.stopCtx(), func() { t.Stop() })
	}
}

func (g *userGrain) onPresenceTick() {
	g.presence.timerArmed = false
	g.broadcastPresence()
}

// broadcastPresence tells every watcher whose view is out of date. A user
// that flapped back to what its watchers already know sends nothing.
func (g *userGrain) broadcastPresence() {
	u := g.presenceUpdate()
	sent := 0
	for _, w := range g.presence.watchers {
		if !g.visibleTo(w) || samePresence(w.told, u) {
			continue
		}
		g.tell(w, u)
		sent++
	}
	g.deps.Presence.Sent.Add(int64(sent))
	folded := g.presence.pendingChanges
	if sent > 0 {
		folded-- // one transition is what was sent
		g.presence.sentAt = g.deps.Now()
	}
	g.deps.Presence.Coalesced.Add(int64(max(folded, 0)))
	g.presence.pendingChanges = 0
}

func samePresence(a, b *courierpb.PresenceUpdate) bool {
	return a != nil && b != nil && a.Online == b.Online && a.LastSeenMs == b.LastSeenMs
}

// presenceVisibilityChanged re-checks watchers after a settings change
// (all, or those of the given viewers): one that may no longer see gets
// PresenceGone, one that newly may gets the current state.
func (g *userGrain) presenceVisibilityChanged(all bool, viewers []string) {
	if !all && len(viewers) == 0 {
		return
	}
	affected := make(map[string]bool, len(viewers))
	for _, v := range viewers {
		affected[v] = true
	}
	u := g.presenceUpdate()
	for _, w := range g.presence.watchers {
		if !all && !affected[w.viewer] {
			continue
		}
		if g.visibleTo(w) {
			g.tell(w, u)
		} else {
			g.gone(w)
		}
	}
}

// deviceOnline runs when a device gets a session.
func (g *userGrain) deviceOnline(ctx actor.Context, device uint32, wasOnline bool) {
	g.cancelPush(device)
	if !wasOnline {
		g.presenceChanged(ctx)
	}
}

// deviceOffline runs when a device's session went away.
func (g *userGrain) deviceOffline(ctx actor.Context) {
	if g.online() {
		return
	}
	g.profile.pb.LastSeenMs = g.deps.Now().UnixMilli()
	if err := g.saveProfile(); err != nil {
		// Last seen is a courtesy, not a message: log and go on.
		g.logger().Warn("saving last seen failed", "err", err)
	}
	g.presenceChanged(ctx)
}

// typingTo forwards a typing indicator to this user's attached devices. It
// is never stored; a blocked sender's indicator is dropped without a word.
func (g *userGrain) typingTo(ctx actor.Context, msg *courierpb.TypingTo) {
	ctx.Respond(&courierpb.TypingToReply{})
	if g.ready() != nil || g.profile.blocked[msg.FromUserId] {
		return
	}
	n := &courierpb.TypingNotice{FromUserId: msg.FromUserId, FromDeviceId: msg.FromDeviceId, GroupId: msg.GroupId, State: msg.State}
	for _, s := range g.sessions {
		if msg.FromUserId == g.id && s.device == msg.FromDeviceId {
			continue
		}
		g.deps.Cluster.Tell(s.pid, n)
	}
}

// maybePush queues one push per offline device that has a token, at most
// once per offline period.
func (g *userGrain) maybePush(appended []persistence.InboxAppend) {
	if g.deps.Push == nil || g.profile == nil {
		return
	}
	changed := false
	for _, a := range appended {
		dev := a.DeviceID
		if _, attached := g.sessions.get(dev); attached || g.profile.pushed[dev] {
			continue
		}
		tok := g.profile.pb.PushTokens[dev]
		if tok == "" {
			continue
		}
		g.deps.Push.Enqueue(push.Notification{Token: tok, UserID: g.id, DeviceID: dev, At: g.deps.Now()})
		g.profile.setPushed(dev)
		changed = true
	}
	if changed {
		// Remembered so a restarted grain does not push again for the same
		// offline period; a lost write only risks one extra push.
		if err := g.saveProfile(); err != nil {
			g.logger().Warn("saving push state failed", "err", err)
		}
	}
}

// cancelPush re-arms a device that connected: its pending push is moot and
// the next offline period may push again.
func (g *userGrain) cancelPush(device uint32) {
	if g.profile == nil || !g.profile.pushed[device] {
		return
	}
	delete(g.profile.pushed, device)
	if g.deps.Push != nil {
		g.deps.Push.Cancel(g.id, device)
	}
	if err := g.saveProfile(); err != nil {
		g.logger().Warn("saving push state failed", "err", err)
	}
}
