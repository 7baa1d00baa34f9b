package gateway

import (
	"fmt"
	"net/http"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/courier-im/courier/protos/courierpb"
)

// Action is a costly thing a client can make the server do over its socket
// or the key API. Each is limited per user and per client address
// (Limits.Actions), so one account, or one address holding many accounts,
// cannot take more than its share of a node's CPU, disk and grains.
type Action int

// The limited actions. A request's cost is the number of things it asks
// for: a contacts update adding 300 users costs 300 contacts.
const (
	// ActionSend is one message, 1:1 or to a group.
	ActionSend Action = iota
	// ActionGroupCreate is one group created.
	ActionGroupCreate
	// ActionGroupAdd is one member added to a group, at creation or later.
	ActionGroupAdd
	// ActionContactAdd is one user added to the contacts.
	ActionContactAdd
	// ActionKeyUpload is one PUT /v1/keys.
	ActionKeyUpload
	// ActionPresenceWatch is one user's presence subscribed to.
	ActionPresenceWatch
	// ActionConnect is one WebSocket opened: each costs a store read (the
	// device still exists) and an attach to the user's grain, so a client
	// that reconnects in a loop is a flood too.
	ActionConnect
	// ActionSendBytes is one byte of messages sent (the frames' size on
	// the wire): every byte is written to the store and to each device
	// of the recipient, so a few large messages weigh like many small.
	ActionSendBytes
	// ActionCallOffer is one call offered (it rings every device of the
	// peer and may leave a missed call in its inbox).
	ActionCallOffer
	// NumActions counts the actions.
	NumActions
)

var actionNames = [NumActions]string{"send", "group-create", "group-add", "contacts", "key-upload", "presence", "connect", "send-bytes", "call"}

// what each action is called in a refusal ("too many <what>").
var actionNouns = [NumActions]string{"messages", "groups created", "group members added", "contacts added", "key uploads", "presence subscriptions", "connections opened", "bytes of messages", "calls offered"}

// Noun is what the action counts, in a refusal or a flag's help: "messages".
func (a Action) Noun() string {
	if a < 0 || a >= NumActions {
		return a.String()
	}
	return actionNouns[a]
}

func (a Action) String() string {
	if a < 0 || a >= NumActions {
		return fmt.Sprintf("action(%d)", int(a))
	}
	return actionNames[a]
}

// Actions lists every action, for flags and docs.
func Actions() []Action {
	out := make([]Action, NumActions)
	for i := range out {
		out[i] = Action(i)
	}
	return out
}

// ActionLimit bounds one action per user (all of its devices on this node
// together: a user's devices on other nodes are counted there, so a user
// spread over k nodes gets at most k times the rate) and per client
// address (IPv6: /64), which is left alone for loopback unless
// Limits.LimitLoopback.
type ActionLimit struct {
	PerUser, PerIP Rate
}

// DefaultActionLimits are generous for people and apps (a contact sync of
// 5,000, a 1,024-member group created at once, a burst of 3,000 messages)
// and stop a script: sustained, a user sends at most 50 messages a second.
// Per address they are ten times the per-user figure, as many people may
// share a carrier's NAT.
var DefaultActionLimits = [NumActions]ActionLimit{
	ActionSend:          {PerUser: Rate{3000, time.Minute}, PerIP: Rate{30000, time.Minute}},
	ActionGroupCreate:   {PerUser: Rate{100, time.Hour}, PerIP: Rate{1000, time.Hour}},
	ActionGroupAdd:      {PerUser: Rate{5000, time.Hour}, PerIP: Rate{50000, time.Hour}},
	ActionContactAdd:    {PerUser: Rate{10000, time.Hour}, PerIP: Rate{100000, time.Hour}},
	ActionKeyUpload:     {PerUser: Rate{100, time.Hour}, PerIP: Rate{1000, time.Hour}},
	ActionPresenceWatch: {PerUser: Rate{20000, 10 * time.Minute}, PerIP: Rate{200000, 10 * time.Minute}},
	// A phone reconnects a few times a minute at worst; a restarted node's
	// clients come back as many users, one connect each.
	ActionConnect: {PerUser: Rate{120, time.Minute}, PerIP: Rate{1200, time.Minute}},
	// 32 MiB a minute is 128 of the largest inline messages (256 KiB);
	// media goes over /v1/media/, under its own quota.
	ActionSendBytes: {PerUser: Rate{32 << 20, time.Minute}, PerIP: Rate{128 << 20, time.Minute}},
	ActionCallOffer: {PerUser: Rate{30, time.Minute}, PerIP: Rate{300, time.Minute}},
}

// WithoutActionLimits turns every action limit off: for a benchmark of
// the hot path, which measures what a message costs, not the policy.
func (l Limits) WithoutActionLimits() Limits {
	for i := range l.Actions {
		l.Actions[i] = ActionLimit{PerUser: Off, PerIP: Off}
	}
	return l
}

// actionLimiters are the per-user and per-address buckets of each action.
type actionLimiters struct {
	perUser, perIP [NumActions]*keyedLimiter
}

func newActionLimiters(l Limits) actionLimiters {
	var a actionLimiters
	for i := range NumActions {
		a.perUser[i] = newKeyedLimiter(l.Actions[i].PerUser, l.MaxKeys)
		a.perIP[i] = newKeyedLimiter(l.Actions[i].PerIP, l.MaxKeys)
	}
	return a
}

// actionRefusal is why a request was refused: wait is how long until it
// can pass (0 when it never can, being larger than the limit's burst).
type actionRefusal struct {
	msg  string
	wait time.Duration
}

// allowAction takes cost tokens of a from the user's bucket and, when
// ipKey is set, the address's. A request refused by the address keeps the
// user's tokens spent: it was made, and counting it keeps a flood from
// probing the two limits separately.
func (a *actionLimiters) allowAction(act Action, userID, ipKey string, cost int, now time.Time) *actionRefusal {
	if cost <= 0 {
		return nil
	}
	user, ip := a.perUser[act], a.perIP[act]
	if ipKey == "" {
		ip = nil
	}
	for _, l := range [2]*keyedLimiter{user, ip} {
		if !l.fits(cost) {
			return &actionRefusal{msg: fmt.Sprintf("one request may ask for at most %d %s on this server, not %d", l.burst, actionNouns[act], cost)}
		}
	}
	if ok, wait := user.allowN(userID, cost, now); !ok {
		return &actionRefusal{msg: fmt.Sprintf("too many %s from this account", actionNouns[act]), wait: wait}
	}
	if ok, wait := ip.allowN(ipKey, cost, now); !ok {
		return &actionRefusal{msg: fmt.Sprintf("too many %s from this address", actionNouns[act]), wait: wait}
	}
	return nil
}

// all names every limiter for the admin stats and logs: "<action>/user",
// "<action>/ip".
func (a *actionLimiters) all(into map[string]*keyedLimiter) {
	for i := range NumActions {
		into[actionNames[i]+"/user"] = a.perUser[i]
		into[actionNames[i]+"/ip"] = a.perIP[i]
	}
}

// nameLimiters gives every limiter of g its name and logger, once, before
// any request can reach one.
func (g *Gateway) nameLimiters() {
	for name, l := range g.allLimiters() {
		if l != nil {
			l.name, l.log = name, g.log
		}
	}
	if g.limits.codeAddress != nil {
		g.limits.codeAddress.redact = true
	}
}

func (g *Gateway) allLimiters() map[string]*keyedLimiter {
	m := make(map[string]*keyedLimiter)
	g.limits.all(m)
	g.actions.all(m)
	return m
}

// RateLimited counts, per limit, the requests refused since start (limits
// that refused none are left out): what an operator reads to see which
// limit bites, and whom the log's "rate limit reached" lines name.
func (g *Gateway) RateLimited() map[string]int64 {
	out := make(map[string]int64)
	for name, l := range g.allLimiters() {
		if n := l.refusals(); n > 0 {
			out[name] = n
		}
	}
	return out
}

// limitAction answers a socket request refused by an action limit with
// RATE_LIMITED and when to retry; it reports whether the request may go on.
func (s *session) limitAction(ctx actor.Context, reqID uint64, act Action, cost int) bool {
	r := s.g.actions.allowAction(act, s.claims.UserID, s.ipKey, cost, time.Now())
	if r == nil {
		return true
	}
	s.enqueue(ctx, rateLimitedFrame(reqID, r.msg, r.wait))
	return false
}

// rateLimitedFrame is a RATE_LIMITED answer saying when to retry; wait 0
// means the request can never pass (it asks for more than the limit's
// burst) and is not retryable.
func rateLimitedFrame(reqID uint64, msg string, wait time.Duration) *courierpb.ServerFrame {
	e := &courierpb.Error{Code: courierpb.ErrorCode_RATE_LIMITED, Message: msg, Retryable: wait > 0}
	if wait > 0 {
		e.RetryAfterMs = uint32(min(wait.Milliseconds()+1, 1<<31))
		e.Message += "; retry in " + roundUp(wait)
	}
	return &courierpb.ServerFrame{ReqId: reqID, Body: &courierpb.ServerFrame_Error{Error: e}}
}

// allowHTTPAction is limitAction for the HTTP API: a refusal is a 429 with
// Retry-After.
func (g *Gateway) allowHTTPAction(w http.ResponseWriter, r *http.Request, act Action, userID string) bool {
	ipKey, limitIP := clientKey(r, g.cfg.Limits.LimitLoopback)
	if !limitIP {
		ipKey = ""
	}
	refusal := g.actions.allowAction(act, userID, ipKey, 1, time.Now())
	if refusal == nil {
		return true
	}
	if refusal.wait <= 0 {
		writeError(w, http.StatusTooManyRequests, courierpb.ErrorCode_RATE_LIMITED, refusal.msg)
		return false
	}
	g.limited(w, r, false, refusal.wait, actionNouns[act])
	return false
}

// roundUp shows a wait to the user: whole seconds, or milliseconds below one.
func roundUp(d time.Duration) string {
	if d < time.Second {
		return (d.Truncate(time.Millisecond) + time.Millisecond).String()
	}
	return (d.Truncate(time.Second) + time.Second).String()
}

// ActionFlagName is the command-line flag of an action's limit per user or
// per address, e.g. "send-limit-user".
func ActionFlagName(a Action, perIP bool) string {
	if perIP {
		return a.String() + "-limit-ip"
	}
	return a.String() + "-limit-user"
}
