package actors

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/google/uuid"
	"google.golang.org/protobuf/proto"

	"github.com/courier-im/courier/cluster"
	"github.com/courier-im/courier/internal/recent"
	"github.com/courier-im/courier/persistence"
	"github.com/courier-im/courier/protos/courierpb"
)

// KindGroup is the grain kind of groups.
const KindGroup = "group"

// MaxGroupMembers bounds a group's membership (string lengths are in
// limits.go).
const MaxGroupMembers = 1024

// GroupGrainID names the grain of one group.
func GroupGrainID(groupID string) cluster.GrainID {
	return cluster.GrainID{Kind: KindGroup, Identity: groupID}
}

// GroupConfig tunes Group grains. Store and request timeouts, the sequence
// block size, the dedupe window and the group-commit size come from the
// User grains' UserConfig.
type GroupConfig struct {
	// FanoutBatch caps the entries one fan-out request to a member carries.
	FanoutBatch int
	// FanoutConcurrency caps a group's fan-out requests in flight.
	FanoutConcurrency int
	// FanoutMaxBackoff caps the wait before a failed member is retried.
	FanoutMaxBackoff time.Duration
	// TailEntries caps the log entries a group keeps in memory for its
	// fan-out; a member further behind is served from the store.
	TailEntries int
	// ReceiptWindow is how many recent messages keep per-member receipts.
	ReceiptWindow int
	// PassivateAfter overrides UserConfig.PassivateAfter for groups.
	PassivateAfter time.Duration
}

func (c GroupConfig) withDefaults() GroupConfig {
	if c.FanoutBatch <= 0 {
		c.FanoutBatch = 64
	}
	if c.FanoutConcurrency <= 0 {
		c.FanoutConcurrency = 64
	}
	if c.FanoutMaxBackoff <= 0 {
		c.FanoutMaxBackoff = 10 * time.Second
	}
	if c.TailEntries <= 0 {
		c.TailEntries = 4096
	}
	if c.ReceiptWindow <= 0 {
		c.ReceiptWindow = 1024
	}
	return c
}

// GroupKind returns the cluster kind that hosts Group grains. deps.Groups
// must be set.
func GroupKind(deps *Deps) cluster.Kind {
	deps.Config = deps.Config.withDefaults()
	deps.Group = deps.Group.withDefaults()
	if deps.Now == nil {
		deps.Now = time.Now
	}
	if deps.Logger == nil {
		deps.Logger = slog.Default()
	}
	pa := deps.Group.PassivateAfter
	if pa == 0 {
		pa = deps.Config.PassivateAfter
	}
	return cluster.Kind{
		Name:           KindGroup,
		PassivateAfter: pa,
		Producer:       func(id string) actor.Actor { return newGroupGrain(id, deps) },
	}
}

// groupGrain owns one group (DESIGN §4): membership, roles, settings, the
// sender-key epoch and group_seq. Every message and every change is
// numbered, stored once in the group's log (group-committing concurrent
// writes) and answered, then fanned out to the members' User grains in the
// background (group_fanout.go). Per-member receipts of recent messages live
// in memory (group_receipts.go).
type groupGrain struct {
	id     string
	deps   *Deps
	cfg    GroupConfig
	log    *slog.Logger
	self   *actor.PID
	system *actor.ActorSystem

	stop   context.Context
	cancel context.CancelFunc
	// gen changes on every reset; continuations of an older generation
	// find their state gone and do nothing.
	gen int

	loaded bool
	exists bool
	// st is the group as this activation has changed it, including writes
	// not stored yet: requests are judged against it, and a failed write of
	// a change resets the grain to what the store says.
	st            *courierpb.GroupState
	storedVersion uint64
	// members holds everyone with a span: members, and ex-members whose
	// fan-out up to their removal is not done.
	members map[string]*gmember
	count   int // active members
	seq     seqBlock

	dedupe *recent.Map[string, groupDedupeState]
	ops    *recent.Map[string, proto.Message]
	// createWrite is the creation while it is not stored yet.
	createWrite *groupWrite

	pending  []*groupWrite
	flushing bool

	fan   fanout
	rcpt  receiptWindow
	index indexAlloc
}

// gmember is one member (or draining ex-member) of the group.
type gmember struct {
	st *courierpb.GroupMemberState
	// index is the member's bit in receipt bitmaps; -1 when not active.
	index int

	// Fan-out: every entry for this member up to cursor reached its inbox.
	cursor   uint64
	inflight bool
	queued   bool
	failures int
	retryAt  time.Time

	// Receipts: the highest group_seq reported delivered / read.
	delivered, read uint64
}

func (m *gmember) active() bool {
	return m.st.Role != courierpb.GroupRole_GROUP_ROLE_UNSPECIFIED
}

func (m *gmember) admin() bool {
	return m.st.Role == courierpb.GroupRole_GROUP_ROLE_ADMIN || m.st.Role == courierpb.GroupRole_GROUP_ROLE_CREATOR
}

// joinedAt is the group_seq the member's current membership began at.
func (m *gmember) joinedAt() uint64 {
	if n := len(m.st.Spans); n > 0 && m.st.Spans[n-1].Through == 0 {
		return m.st.Spans[n-1].From
	}
	return 0
}

// covers reports whether the entry numbered seq is for this member.
func (m *gmember) covers(seq uint64) bool {
	for _, sp := range m.st.Spans {
		if seq >= sp.From && (sp.Through == 0 || seq <= sp.Through) {
			return true
		}
	}
	return false
}

// lastSeq is the last group_seq any span covers (MaxUint64 when open).
func (m *gmember) lastSeq() uint64 {
	n := len(m.st.Spans)
	if n == 0 {
		return 0
	}
	if t := m.st.Spans[n-1].Through; t != 0 {
		return t
	}
	return ^uint64(0)
}

type groupDedupeState struct {
	seq        uint64
	storedAtMs int64
	inflight   *groupWrite
}

// groupWrite is one request's part of the next group commit.
type groupWrite struct {
	entries []*courierpb.GroupLogEntry
	// state: the group after this write (a snapshot), when it changes it.
	state        *courierpb.GroupState
	joined, left []string
	// A send's dedupe record, checked against the store when flushed
	// unless the client sent it for the first time (pendingWrite has the
	// same).
	dedupe            *persistence.GroupDedupe
	dedupeKey         string
	firstTransmission bool
	opKey             string

	replyTo []*actor.PID
	// reply answers the requester: success (e nil) or failure.
	reply func(e *courierpb.Error) proto.Message
}

func newGroupGrain(id string, deps *Deps) *groupGrain {
	return &groupGrain{id: id, deps: deps, cfg: deps.Group, log: deps.Logger.With("grain", KindGroup, "group_id", id)}
}

func (g *groupGrain) Receive(ctx actor.Context) {
	switch msg := ctx.Message().(type) {
	case *actor.Started:
		g.self, g.system = ctx.Self(), ctx.ActorSystem()
		g.stop, g.cancel = context.WithCancel(context.Background())
		g.reset(ctx)
	case *actor.Restarting:
		g.shutdown()
	case *actor.Stopping:
		g.saveCursor()
	case *actor.Stopped:
		g.shutdown()
	case *courierpb.CreateGroup:
		g.create(ctx, msg, ctx.Sender())
	case *courierpb.UpdateGroup:
		g.update(ctx, msg, ctx.Sender())
	case *courierpb.SendGroupMessage:
		g.send(ctx, msg)
	case *courierpb.GetGroupInfo:
		g.info(ctx, msg)
	case *courierpb.GetGroupMembers:
		g.memberList(ctx, msg)
	case *courierpb.GetGroupReceipts:
		g.receiptList(ctx, msg)
	case *courierpb.GroupReceipt:
		g.receipt(ctx, msg)
	case *courierpb.GroupTyping:
		g.typing(ctx, msg)
	case *courierpb.WakeGroup:
		// Loading resumes the fan-out (reset did, unless the store was down).
		if !g.loaded {
			g.load(ctx)
		}
		ctx.Respond(&courierpb.WakeGroupReply{})
	case fanoutTick:
		g.onTick(ctx, msg)
	}
	g.sendNotices()
	// A group that does not exist keeps nothing worth memory, and requests
	// to it are answered NOT_FOUND: the grain leaves at once, so made-up
	// group ids cost nothing that outlives the request. Only after a
	// request, and not after a create (the group is about to exist): the
	// grain a create activates is one that does not exist yet.
	if g.loaded && !g.exists && g.createWrite == nil {
		switch ctx.Message().(type) {
		case *actor.Started, *actor.Restarting, *actor.Stopping, *actor.Stopped, *courierpb.CreateGroup:
		default:
			cluster.Passivate(ctx)
		}
	}
}

func (g *groupGrain) shutdown() {
	if g.cancel != nil {
		g.cancel()
	}
	g.gen++ // continuations still queued find nothing to do
	g.fan.stopTimers()
}

// reset drops everything in memory and reloads the group from the store.
// It runs on activation, after a supervisor restart and after a write of a
// change failed, so memory never holds what the store does not.
func (g *groupGrain) reset(ctx actor.Context) {
	g.gen++
	g.fan.stopTimers()
	g.loaded, g.exists = false, false
	g.st, g.storedVersion = nil, 0
	g.members, g.count = make(map[string]*gmember), 0
	g.seq = newSeqBlock("group/"+g.id, g.deps.Config.SeqBlockSize)
	g.dedupe = recent.New[string, groupDedupeState](g.deps.Config.DedupeWindow)
	g.ops = recent.New[string, proto.Message](256)
	g.createWrite = nil
	g.pending, g.flushing = nil, false
	g.fan = fanout{}
	g.rcpt = newReceiptWindow(g.cfg.ReceiptWindow)
	g.index = indexAlloc{}
	g.load(ctx)
}

// load reads the group, its fan-out cursor and the log above it, and
// resumes the fan-out. A failure is not fatal: every request retries it.
func (g *groupGrain) load(ctx actor.Context) {
	if g.deps.Groups == nil {
		g.log.Error("group grain has no group store")
		return
	}
	c, cancel := context.WithTimeout(g.stop, g.deps.Config.StoreTimeout)
	defer cancel()
	st, err := g.deps.Groups.LoadGroup(c, g.id)
	switch {
	case errors.Is(err, persistence.ErrNotFound):
		g.loaded, g.exists = true, false
		return
	case err != nil:
		g.log.Warn("group load failed", "err", err)
		return
	}
	cursor, err := g.deps.Groups.FanoutCursor(c, g.id)
	if err != nil {
		g.log.Warn("group fan-out cursor load failed", "err", err)
		return
	}
	tail, tailFrom, last, err := loadTail(c, g.deps.Groups, g.id, cursor, g.cfg.TailEntries)
	if err != nil {
		g.log.Warn("group log load failed", "err", err)
		return
	}
	g.st, g.storedVersion = st, st.Version
	g.loaded, g.exists = true, true
	g.members, g.count = make(map[string]*gmember, len(st.Members)), 0
	for _, ms := range st.Members {
		m := &gmember{st: ms, index: -1, cursor: cursor}
		if !m.active() && m.cursor >= m.lastSeq() {
			continue // an ex-member that has everything (pruned on the next write)
		}
		g.members[ms.UserId] = m
		if m.active() {
			g.count++
			m.index = g.index.take()
		}
	}
	g.fan.durable, g.fan.last = cursor, last
	g.fan.tail, g.fan.tailFrom = tail, tailFrom
	for _, e := range tail {
		if e.Entry.GetKind() == courierpb.EntryKind_ENTRY_KIND_GROUP_MESSAGE {
			g.rcpt.add(g, e)
		}
	}
	if g.fan.last > cursor {
		g.log.Info("resuming group fan-out", "from", cursor, "through", g.fan.last)
		g.wakeAll(ctx)
	}
}

// ready loads the group if needed and reports whether userID is a member;
// when not, it has the answer: for a non-member exactly what a group that
// does not exist gets.
func (g *groupGrain) ready(ctx actor.Context, userID string) (*gmember, *courierpb.Error) {
	if !g.loaded {
		g.load(ctx)
		if !g.loaded {
			return nil, codeError(courierpb.ErrorCode_UNAVAILABLE, "group storage unavailable, retry", true)
		}
	}
	m := g.members[userID]
	if !g.exists || m == nil || !m.active() || userID == "" {
		return nil, noSuchGroup()
	}
	return m, nil
}

func noSuchGroup() *courierpb.Error {
	return codeError(courierpb.ErrorCode_NOT_FOUND, "no such group", false)
}

func (g *groupGrain) nextSeq() (uint64, error) {
	return g.seq.Next(func() (context.Context, context.CancelFunc) {
		return context.WithTimeout(g.stop, g.deps.Config.StoreTimeout)
	}, g.deps.Store)
}

// settingAllows applies a permission with its default.
func settingAllows(p courierpb.GroupPermission, def courierpb.GroupPermission, m *gmember) bool {
	if p == courierpb.GroupPermission_GROUP_PERMISSION_DEFAULT {
		p = def
	}
	return p == courierpb.GroupPermission_GROUP_PERMISSION_ALL_MEMBERS || m.admin()
}

func (g *groupGrain) infoFor(m *gmember) *courierpb.GroupInfo {
	info := &courierpb.GroupInfo{
		GroupId:        g.id,
		Subject:        g.st.Subject,
		Description:    g.st.Description,
		CreatorUserId:  g.st.CreatorUserId,
		CreatedAtMs:    g.st.CreatedAtMs,
		Settings:       proto.Clone(settingsOrEmpty(g.st.Settings)).(*courierpb.GroupSettings),
		SenderKeyEpoch: g.st.SenderKeyEpoch,
		MemberCount:    uint32(g.count),
		Version:        g.st.Version,
	}
	if m != nil && m.active() {
		info.MyRole = m.st.Role
		info.JoinedGroupSeq = m.joinedAt()
	}
	return info
}

func settingsOrEmpty(s *courierpb.GroupSettings) *courierpb.GroupSettings {
	if s == nil {
		return &courierpb.GroupSettings{}
	}
	return s
}

func (g *groupGrain) info(ctx actor.Context, msg *courierpb.GetGroupInfo) {
	m, e := g.ready(ctx, msg.UserId)
	if e != nil {
		ctx.Respond(&courierpb.GetGroupInfoReply{Error: e})
		return
	}
	ctx.Respond(&courierpb.GetGroupInfoReply{Info: g.infoFor(m)})
}

func (g *groupGrain) memberList(ctx actor.Context, msg *courierpb.GetGroupMembers) {
	if _, e := g.ready(ctx, msg.UserId); e != nil {
		ctx.Respond(&courierpb.GetGroupMembersReply{Error: e})
		return
	}
	list := &courierpb.GroupMemberList{GroupId: g.id}
	for _, ms := range g.st.Members {
		m := g.members[ms.UserId]
		if m == nil || !m.active() {
			continue
		}
		list.Members = append(list.Members, &courierpb.GroupMember{
			UserId: ms.UserId, Role: ms.Role, JoinedGroupSeq: m.joinedAt(), AddedByUserId: ms.AddedBy,
		})
	}
	ctx.Respond(&courierpb.GetGroupMembersReply{Members: list})
}

// ---- creation -------------------------------------------------------------

func (g *groupGrain) create(ctx actor.Context, msg *courierpb.CreateGroup, pid *actor.PID) {
	reply := func(info *courierpb.GroupInfo, e *courierpb.Error) {
		ctx.Send(pid, &courierpb.CreateGroupReply{Info: info, Error: e})
	}
	if !g.loaded {
		g.load(ctx)
		if !g.loaded {
			reply(nil, codeError(courierpb.ErrorCode_UNAVAILABLE, "group storage unavailable, retry", true))
			return
		}
	}
	c := msg.GetCreate()
	if g.exists {
		g.createExisting(ctx, msg, pid)
		return
	}
	if e := validateCreate(msg); e != nil {
		reply(nil, e)
		return
	}
	if GroupIDFor(msg.UserId, c.CreateId) != g.id {
		// Group ids are derived from (creator, create_id): nobody creates
		// a group under an id of their choosing.
		reply(nil, codeError(courierpb.ErrorCode_INVALID_ARGUMENT, "group id does not match the creator's create_id", false))
		return
	}
	members := dedupeIDs(c.MemberUserIds, msg.UserId)
	if len(members)+1 > MaxGroupMembers {
		reply(nil, codeError(courierpb.ErrorCode_GROUP_FULL, fmt.Sprintf("a group has at most %d members", MaxGroupMembers), false))
		return
	}
	// Every member must be a user; check off the mailbox, then create (if
	// nobody created the group meanwhile).
	gen := g.gen
	g.checkUsers(ctx, members, func(e *courierpb.Error) {
		if gen != g.gen {
			reply(nil, codeError(courierpb.ErrorCode_UNAVAILABLE, "group reloaded, retry", true))
			return
		}
		if e != nil {
			reply(nil, e)
			return
		}
		if g.exists {
			g.createExisting(ctx, msg, pid)
			return
		}
		g.createNow(ctx, msg, members, pid)
	})
}

// createExisting answers a create of a group that exists: a retry of the
// create that made it, or (for anyone else) an id in use.
func (g *groupGrain) createExisting(ctx actor.Context, msg *courierpb.CreateGroup, pid *actor.PID) {
	if g.st.CreateId != msg.GetCreate().GetCreateId() || g.st.CreatorUserId != msg.UserId {
		ctx.Send(pid, &courierpb.CreateGroupReply{Error: codeError(courierpb.ErrorCode_INVALID_ARGUMENT, "create_id already used", false)})
		return
	}
	if w := g.createWrite; w != nil {
		w.replyTo = append(w.replyTo, pid) // still being stored
		return
	}
	m := g.members[msg.UserId]
	if m == nil || !m.active() {
		ctx.Send(pid, &courierpb.CreateGroupReply{Error: noSuchGroup()})
		return
	}
	info := g.infoFor(m)
	info.Duplicate = true
	ctx.Send(pid, &courierpb.CreateGroupReply{Info: info})
}

func (g *groupGrain) createNow(ctx actor.Context, msg *courierpb.CreateGroup, members []string, pid *actor.PID) {
	c := msg.GetCreate()
	seq, err := g.nextSeq()
	if err != nil {
		ctx.Send(pid, &courierpb.CreateGroupReply{Error: storeError(err)})
		return
	}
	now := g.deps.Now().UnixMilli()
	g.st = &courierpb.GroupState{
		GroupId:        g.id,
		Version:        seq,
		CreateId:       c.CreateId,
		CreatorUserId:  msg.UserId,
		CreatedAtMs:    now,
		Subject:        c.Subject,
		Description:    c.Description,
		Settings:       proto.Clone(settingsOrEmpty(c.Settings)).(*courierpb.GroupSettings),
		SenderKeyEpoch: 1,
	}
	g.exists = true
	all := append([]string{msg.UserId}, members...)
	for i, u := range all {
		role := courierpb.GroupRole_GROUP_ROLE_MEMBER
		if i == 0 {
			role = courierpb.GroupRole_GROUP_ROLE_CREATOR
		}
		g.join(u, role, msg.UserId, seq, now)
	}
	ev := &courierpb.GroupEvent{
		Type: courierpb.GroupEventType_GROUP_EVENT_CREATED, ActorUserId: msg.UserId, UserIds: all,
		Subject: c.Subject, Description: c.Description,
	}
	w := &groupWrite{
		entries: []*courierpb.GroupLogEntry{g.eventEntry(seq, msg.UserId, msg.DeviceId, ev, now)},
		state:   g.snapshot(),
		joined:  all,
		replyTo: []*actor.PID{pid},
	}
	creator := g.members[msg.UserId]
	w.reply = func(e *courierpb.Error) proto.Message {
		if g.createWrite == w {
			g.createWrite = nil
		}
		if e != nil {
			return &courierpb.CreateGroupReply{Error: e}
		}
		return &courierpb.CreateGroupReply{Info: g.infoFor(creator)}
	}
	g.createWrite = w
	g.enqueue(ctx, w)
}

func validateCreate(msg *courierpb.CreateGroup) *courierpb.Error {
	c := msg.GetCreate()
	switch {
	case msg.UserId == "":
		return codeError(courierpb.ErrorCode_UNAUTHENTICATED, "creator unknown", false)
	case c == nil:
		return codeError(courierpb.ErrorCode_INVALID_ARGUMENT, "create is empty", false)
	case c.CreateId == "" || len(c.CreateId) > MaxClientMsgIDLen:
		return codeError(courierpb.ErrorCode_INVALID_ARGUMENT, fmt.Sprintf("create_id must be 1..%d bytes", MaxClientMsgIDLen), false)
	}
	if e := validateSubject(c.Subject); e != nil {
		return e
	}
	return validateDescription(c.Description)
}

func validateSubject(s string) *courierpb.Error {
	if len(s) > MaxGroupSubjectLen {
		return codeError(courierpb.ErrorCode_INVALID_ARGUMENT, fmt.Sprintf("subject must be at most %d bytes", MaxGroupSubjectLen), false)
	}
	return nil
}

func validateDescription(s string) *courierpb.Error {
	if len(s) > MaxGroupDescriptionLen {
		return codeError(courierpb.ErrorCode_INVALID_ARGUMENT, fmt.Sprintf("description must be at most %d bytes", MaxGroupDescriptionLen), false)
	}
	return nil
}

// dedupeIDs returns ids without duplicates, empties and except, in order.
func dedupeIDs(ids []string, except string) []string {
	seen := make(map[string]bool, len(ids))
	out := make([]string, 0, len(ids))
	for _, id := range ids {
		if id == "" || id == except || seen[id] {
			continue
		}
		seen[id] = true
		out = append(out, id)
	}
	return out
}

// checkUsers verifies on a worker that every id is a registered user and
// calls done on the grain.
func (g *groupGrain) checkUsers(ctx actor.Context, ids []string, done func(*courierpb.Error)) {
	if len(ids) == 0 {
		done(nil)
		return
	}
	store := g.deps.Store
	cluster.RunAsync(ctx, g.stop, g.deps.Config.StoreTimeout, func(c context.Context) (any, error) {
		for _, id := range ids {
			_, err := store.GetUser(c, id)
			if errors.Is(err, persistence.ErrNotFound) {
				return id, nil
			}
			if err != nil {
				return nil, err
			}
		}
		return "", nil
	}, func(res any, err error) {
		switch {
		case err != nil:
			done(storeError(err))
		case res.(string) != "":
			done(codeError(courierpb.ErrorCode_INVALID_ARGUMENT, "no such user: "+res.(string), false))
		default:
			done(nil)
		}
	})
}

// ---- membership ------------------------------------------------------------

// join makes u a member from group_seq seq on.
func (g *groupGrain) join(u string, role courierpb.GroupRole, by string, seq uint64, nowMs int64) {
	m := g.members[u]
	if m == nil {
		var ms *courierpb.GroupMemberState
		for _, x := range g.st.Members {
			if x.UserId == u { // an ex-member whose fan-out is done
				ms, x.Spans = x, nil
				break
			}
		}
		if ms == nil {
			ms = &courierpb.GroupMemberState{UserId: u}
			g.st.Members = append(g.st.Members, ms)
		}
		// A new member's fan-out starts at the event that adds it.
		m = &gmember{st: ms, index: -1, cursor: seq - 1}
		g.members[u] = m
	}
	m.st.Role, m.st.AddedBy, m.st.JoinedAtMs = role, by, nowMs
	m.st.Spans = append(m.st.Spans, &courierpb.SeqSpan{From: seq})
	m.index = g.index.take()
	m.delivered, m.read = seq-1, seq-1
	g.count++
}

// part ends u's membership with the event numbered seq (which u still
// gets). Its fan-out goes on until it has everything up to seq.
func (g *groupGrain) part(m *gmember, seq uint64) {
	g.rcpt.forget(g, m) // while it still counts as a member
	m.st.Role = courierpb.GroupRole_GROUP_ROLE_UNSPECIFIED
	m.st.AddedBy = ""
	if n := len(m.st.Spans); n > 0 {
		m.st.Spans[n-1].Through = seq
	}
	g.index.free(m.index)
	m.index = -1
	g.count--
}

// drained drops an ex-member whose fan-out is done.
func (g *groupGrain) drained(m *gmember) {
	if m.active() || m.cursor < m.lastSeq() {
		return
	}
	delete(g.members, m.st.UserId)
	g.st.Members = slices.DeleteFunc(g.st.Members, func(ms *courierpb.GroupMemberState) bool { return ms == m.st })
}

// snapshot is the state to store: a copy (the grain goes on changing its
// own), without the spans whose fan-out is known to be done.
func (g *groupGrain) snapshot() *courierpb.GroupState {
	st := proto.Clone(g.st).(*courierpb.GroupState)
	kept := st.Members[:0]
	for _, ms := range st.Members {
		spans := ms.Spans[:0]
		for _, sp := range ms.Spans {
			if sp.Through == 0 || sp.Through > g.fan.durable {
				spans = append(spans, sp)
			}
		}
		ms.Spans = spans
		if len(spans) > 0 {
			kept = append(kept, ms)
		}
	}
	st.Members = kept
	return st
}

// eventEntry builds the log entry of a change.
func (g *groupGrain) eventEntry(seq uint64, actorID string, device uint32, ev *courierpb.GroupEvent, nowMs int64) *courierpb.GroupLogEntry {
	ev.SenderKeyEpoch = g.st.SenderKeyEpoch
	ev.MemberCount = uint32(g.count)
	if ev.Subject == "" {
		ev.Subject = g.st.Subject
	}
	if ev.Description == "" {
		ev.Description = g.st.Description
	}
	if ev.Settings == nil {
		ev.Settings = proto.Clone(settingsOrEmpty(g.st.Settings)).(*courierpb.GroupSettings)
	}
	return &courierpb.GroupLogEntry{GroupSeq: seq, Entry: &courierpb.InboxEntry{
		Kind:           courierpb.EntryKind_ENTRY_KIND_GROUP_EVENT,
		FromUserId:     actorID,
		FromDeviceId:   device,
		SentAtMs:       nowMs,
		GroupId:        g.id,
		GroupSeq:       seq,
		GroupEvent:     ev,
		SenderKeyEpoch: g.st.SenderKeyEpoch,
	}}
}

// update applies one GroupUpdate.
func (g *groupGrain) update(ctx actor.Context, msg *courierpb.UpdateGroup, pid *actor.PID) {
	fail := func(e *courierpb.Error) { ctx.Send(pid, &courierpb.UpdateGroupReply{Error: e}) }
	m, e := g.ready(ctx, msg.UserId)
	if e != nil {
		fail(e)
		return
	}
	u := msg.GetUpdate()
	if u == nil || u.Change == nil {
		fail(codeError(courierpb.ErrorCode_INVALID_ARGUMENT, "update names no change", false))
		return
	}
	opKey := ""
	if u.OpId != "" {
		opKey = msg.UserId + "\x00" + u.OpId
	} else if k := cluster.IdempotencyKey(ctx); k != "" {
		opKey = "key\x00" + k
	}
	if opKey != "" {
		if r, ok := g.ops.Get(opKey); ok {
			ctx.Send(pid, r)
			return
		}
	}
	if add := u.GetAddMembers(); add != nil {
		if !settingAllows(g.st.GetSettings().GetAddMembers(), courierpb.GroupPermission_GROUP_PERMISSION_ADMINS_ONLY, m) {
			fail(notAdmin("adding members"))
			return
		}
		var fresh []string
		for _, id := range dedupeIDs(add.UserIds, "") {
			if x := g.members[id]; x == nil || !x.active() {
				fresh = append(fresh, id)
			}
		}
		if g.count+len(fresh) > MaxGroupMembers {
			fail(codeError(courierpb.ErrorCode_GROUP_FULL, fmt.Sprintf("a group has at most %d members (it has %d)", MaxGroupMembers, g.count), false))
			return
		}
		gen := g.gen
		g.checkUsers(ctx, fresh, func(e *courierpb.Error) {
			if gen != g.gen {
				fail(codeError(courierpb.ErrorCode_UNAVAILABLE, "group reloaded, retry", true))
				return
			}
			if e != nil {
				fail(e)
				return
			}
			// Judged again: the group may have changed while users were checked.
			g.applyUpdate(ctx, msg, opKey, pid)
		})
		return
	}
	g.applyUpdate(ctx, msg, opKey, pid)
}

func notAdmin(what string) *courierpb.Error {
	return codeError(courierpb.ErrorCode_NOT_ADMIN, what+" is for group admins", false)
}

// applyUpdate checks and applies a change against the current state and
// queues its event for storage.
func (g *groupGrain) applyUpdate(ctx actor.Context, msg *courierpb.UpdateGroup, opKey string, pid *actor.PID) {
	fail := func(e *courierpb.Error) { ctx.Send(pid, &courierpb.UpdateGroupReply{Error: e}) }
	m, e := g.ready(ctx, msg.UserId)
	if e != nil {
		fail(e)
		return
	}
	u := msg.GetUpdate()
	actorID := msg.UserId
	now := g.deps.Now().UnixMilli()
	var events []*courierpb.GroupEvent
	var joined, left []string
	// next numbers the event about to be applied.
	var seqs []uint64
	next := func() (uint64, bool) {
		seq, err := g.nextSeq()
		if err != nil {
			fail(storeError(err))
			return 0, false
		}
		seqs = append(seqs, seq)
		return seq, true
	}
	targets := func(ids *courierpb.GroupUserIds) []string { return dedupeIDs(ids.GetUserIds(), "") }

	switch c := u.Change.(type) {
	case *courierpb.GroupUpdate_AddMembers:
		if !settingAllows(g.st.GetSettings().GetAddMembers(), courierpb.GroupPermission_GROUP_PERMISSION_ADMINS_ONLY, m) {
			fail(notAdmin("adding members"))
			return
		}
		var fresh []string
		for _, id := range targets(c.AddMembers) {
			if x := g.members[id]; x == nil || !x.active() {
				fresh = append(fresh, id)
			}
		}
		if g.count+len(fresh) > MaxGroupMembers {
			fail(codeError(courierpb.ErrorCode_GROUP_FULL, fmt.Sprintf("a group has at most %d members (it has %d)", MaxGroupMembers, g.count), false))
			return
		}
		if len(fresh) > 0 {
			seq, ok := next()
			if !ok {
				return
			}
			for _, id := range fresh {
				g.join(id, courierpb.GroupRole_GROUP_ROLE_MEMBER, actorID, seq, now)
			}
			g.st.SenderKeyEpoch++
			joined = fresh
			events = append(events, &courierpb.GroupEvent{Type: courierpb.GroupEventType_GROUP_EVENT_MEMBERS_ADDED, UserIds: fresh})
		}
	case *courierpb.GroupUpdate_RemoveMembers:
		if !m.admin() {
			fail(notAdmin("removing members"))
			return
		}
		var gone []*gmember
		for _, id := range targets(c.RemoveMembers) {
			x := g.members[id]
			if x == nil || !x.active() {
				continue // already gone: a retry, or nothing to do
			}
			if x.st.Role == courierpb.GroupRole_GROUP_ROLE_CREATOR && id != actorID {
				fail(codeError(courierpb.ErrorCode_FORBIDDEN, "the group's creator cannot be removed", false))
				return
			}
			gone = append(gone, x)
		}
		if len(gone) > 0 {
			seq, ok := next()
			if !ok {
				return
			}
			for _, x := range gone {
				g.part(x, seq)
				left = append(left, x.st.UserId)
			}
			g.st.SenderKeyEpoch++
			events = append(events, &courierpb.GroupEvent{Type: courierpb.GroupEventType_GROUP_EVENT_MEMBERS_REMOVED, UserIds: left})
		}
	case *courierpb.GroupUpdate_Leave:
		seq, ok := next()
		if !ok {
			return
		}
		g.part(m, seq)
		left = []string{actorID}
		g.st.SenderKeyEpoch++
		events = append(events, &courierpb.GroupEvent{Type: courierpb.GroupEventType_GROUP_EVENT_MEMBER_LEFT, UserIds: left})
	case *courierpb.GroupUpdate_PromoteAdmins, *courierpb.GroupUpdate_DemoteAdmins:
		if !m.admin() {
			fail(notAdmin("changing admins"))
			return
		}
		promote := u.GetPromoteAdmins() != nil
		ids := targets(u.GetPromoteAdmins())
		if !promote {
			ids = targets(u.GetDemoteAdmins())
		}
		var changed []*gmember
		for _, id := range ids {
			x := g.members[id]
			if x == nil || !x.active() {
				fail(codeError(courierpb.ErrorCode_NOT_MEMBER, "not a member of the group: "+id, false))
				return
			}
			switch {
			case x.st.Role == courierpb.GroupRole_GROUP_ROLE_CREATOR:
				if !promote {
					fail(codeError(courierpb.ErrorCode_FORBIDDEN, "the group's creator cannot be demoted", false))
					return
				}
			case promote && x.st.Role == courierpb.GroupRole_GROUP_ROLE_MEMBER,
				!promote && x.st.Role == courierpb.GroupRole_GROUP_ROLE_ADMIN:
				changed = append(changed, x)
			}
		}
		if len(changed) > 0 {
			if _, ok := next(); !ok {
				return
			}
			typ := courierpb.GroupEventType_GROUP_EVENT_ADMINS_PROMOTED
			role := courierpb.GroupRole_GROUP_ROLE_ADMIN
			if !promote {
				typ, role = courierpb.GroupEventType_GROUP_EVENT_ADMINS_DEMOTED, courierpb.GroupRole_GROUP_ROLE_MEMBER
			}
			var ids []string
			for _, x := range changed {
				x.st.Role = role
				ids = append(ids, x.st.UserId)
			}
			events = append(events, &courierpb.GroupEvent{Type: typ, UserIds: ids})
		}
	case *courierpb.GroupUpdate_Subject:
		if !settingAllows(g.st.GetSettings().GetEditInfo(), courierpb.GroupPermission_GROUP_PERMISSION_ALL_MEMBERS, m) {
			fail(notAdmin("changing the subject"))
			return
		}
		if e := validateSubject(c.Subject); e != nil {
			fail(e)
			return
		}
		if c.Subject != g.st.Subject {
			if _, ok := next(); !ok {
				return
			}
			g.st.Subject = c.Subject
			events = append(events, &courierpb.GroupEvent{Type: courierpb.GroupEventType_GROUP_EVENT_SUBJECT_CHANGED})
		}
	case *courierpb.GroupUpdate_Description:
		if !settingAllows(g.st.GetSettings().GetEditInfo(), courierpb.GroupPermission_GROUP_PERMISSION_ALL_MEMBERS, m) {
			fail(notAdmin("changing the description"))
			return
		}
		if e := validateDescription(c.Description); e != nil {
			fail(e)
			return
		}
		if c.Description != g.st.Description {
			if _, ok := next(); !ok {
				return
			}
			g.st.Description = c.Description
			events = append(events, &courierpb.GroupEvent{Type: courierpb.GroupEventType_GROUP_EVENT_DESCRIPTION_CHANGED})
		}
	case *courierpb.GroupUpdate_Settings:
		if !m.admin() {
			fail(notAdmin("changing settings"))
			return
		}
		if c.Settings == nil {
			fail(codeError(courierpb.ErrorCode_INVALID_ARGUMENT, "settings missing", false))
			return
		}
		if !proto.Equal(c.Settings, settingsOrEmpty(g.st.Settings)) {
			if _, ok := next(); !ok {
				return
			}
			g.st.Settings = proto.Clone(c.Settings).(*courierpb.GroupSettings)
			events = append(events, &courierpb.GroupEvent{Type: courierpb.GroupEventType_GROUP_EVENT_SETTINGS_CHANGED})
		}
	default:
		fail(codeError(courierpb.ErrorCode_INVALID_ARGUMENT, "unknown group change", false))
		return
	}

	// A group never stays without an admin while it has members: when the
	// last one leaves, the longest-standing member becomes admin.
	if len(left) > 0 && g.count > 0 && !g.hasAdmin() {
		if heir := g.longestMember(); heir != nil {
			if _, ok := next(); ok {
				heir.st.Role = courierpb.GroupRole_GROUP_ROLE_ADMIN
				events = append(events, &courierpb.GroupEvent{Type: courierpb.GroupEventType_GROUP_EVENT_ADMINS_PROMOTED, UserIds: []string{heir.st.UserId}})
			} else {
				// The change is applied in memory but cannot be numbered:
				// start over from the store.
				g.restart(ctx, storeError(errors.New("cannot number the change")))
				return
			}
		}
	}

	if len(events) == 0 {
		r := &courierpb.UpdateGroupReply{Ok: &courierpb.GroupUpdateOk{Info: g.infoFor(g.members[actorID])}}
		if opKey != "" {
			g.ops.Put(opKey, r)
		}
		ctx.Send(pid, r)
		return
	}
	w := &groupWrite{joined: joined, left: left, opKey: opKey, replyTo: []*actor.PID{pid}}
	for i, ev := range events {
		ev.ActorUserId = actorID
		from := actorID
		if i > 0 && ev.Type == courierpb.GroupEventType_GROUP_EVENT_ADMINS_PROMOTED && len(left) > 0 {
			ev.ActorUserId, from = "", "" // the group itself appointed the heir
		}
		w.entries = append(w.entries, g.eventEntry(seqs[i], from, msg.DeviceId, ev, now))
	}
	g.st.Version = seqs[len(seqs)-1]
	w.state = g.snapshot()
	eventSeq := seqs[0]
	w.reply = func(e *courierpb.Error) proto.Message {
		if e != nil {
			return &courierpb.UpdateGroupReply{Error: e}
		}
		var info *courierpb.GroupInfo
		if x := g.members[actorID]; x != nil && x.active() {
			info = g.infoFor(x)
		}
		r := &courierpb.UpdateGroupReply{Ok: &courierpb.GroupUpdateOk{GroupSeq: eventSeq, Info: info}}
		if opKey != "" {
			g.ops.Put(opKey, r)
		}
		return r
	}
	g.enqueue(ctx, w)
}

func (g *groupGrain) hasAdmin() bool {
	for _, m := range g.members {
		if m.active() && m.admin() {
			return true
		}
	}
	return false
}

// longestMember is the active member who joined first.
func (g *groupGrain) longestMember() *gmember {
	var best *gmember
	for _, ms := range g.st.Members {
		m := g.members[ms.UserId]
		if m == nil || !m.active() {
			continue
		}
		if best == nil || m.joinedAt() < best.joinedAt() {
			best = m
		}
	}
	return best
}

// ---- sending ---------------------------------------------------------------

func (g *groupGrain) send(ctx actor.Context, msg *courierpb.SendGroupMessage) {
	pid := ctx.Sender()
	fail := func(e *courierpb.Error) { ctx.Respond(&courierpb.SendGroupMessageReply{Error: e}) }
	s := msg.GetSend()
	if e := validateGroupSend(msg); e != nil {
		fail(e)
		return
	}
	m, e := g.ready(ctx, msg.UserId)
	if e != nil {
		fail(e)
		return
	}
	if !settingAllows(g.st.GetSettings().GetSend(), courierpb.GroupPermission_GROUP_PERMISSION_ALL_MEMBERS, m) {
		fail(notAdmin("sending to this group"))
		return
	}
	key := msg.UserId + "\x00" + s.ClientMsgId
	if st, ok := g.dedupe.Get(key); ok {
		if st.inflight != nil {
			st.inflight.replyTo = append(st.inflight.replyTo, pid)
			return
		}
		ctx.Respond(&courierpb.SendGroupMessageReply{GroupSeq: st.seq, StoredAtMs: st.storedAtMs, Duplicate: true})
		return
	}
	if s.SenderKeyEpoch != 0 && s.SenderKeyEpoch != g.st.SenderKeyEpoch {
		// Encrypted with a sender key from before the last membership
		// change: a removed member could still read it, and a new one
		// could not. The sender rotates its key and resends.
		fail(&courierpb.Error{Code: courierpb.ErrorCode_SENDER_KEY_STALE,
			Message: fmt.Sprintf("sender_key_epoch %d is stale, the group is at %d: rotate the sender key and resend with the same client_msg_id", s.SenderKeyEpoch, g.st.SenderKeyEpoch)})
		return
	}
	seq, err := g.nextSeq()
	if err != nil {
		fail(storeError(err))
		return
	}
	now := g.deps.Now().UnixMilli()
	entry := &courierpb.GroupLogEntry{
		GroupSeq: seq,
		Entry: &courierpb.InboxEntry{
			Kind:           courierpb.EntryKind_ENTRY_KIND_GROUP_MESSAGE,
			FromUserId:     msg.UserId,
			FromDeviceId:   msg.DeviceId,
			ClientMsgId:    s.ClientMsgId,
			Ciphertext:     s.Ciphertext,
			ContentType:    s.ContentType,
			SentAtMs:       now,
			GroupId:        g.id,
			GroupSeq:       seq,
			SenderKeyEpoch: s.SenderKeyEpoch,
		},
		PerDevice: s.PerDevice,
	}
	w := &groupWrite{
		entries:   []*courierpb.GroupLogEntry{entry},
		dedupe:    &persistence.GroupDedupe{GroupID: g.id, SenderID: msg.UserId, ClientMsgID: s.ClientMsgId, GroupSeq: seq, StoredAtMs: now},
		dedupeKey: key,
		replyTo:   []*actor.PID{pid},

		firstTransmission: msg.FirstTransmission,
	}
	w.reply = func(e *courierpb.Error) proto.Message {
		return &courierpb.SendGroupMessageReply{GroupSeq: seq, StoredAtMs: now, Error: e}
	}
	g.dedupe.Put(key, groupDedupeState{seq: seq, storedAtMs: now, inflight: w})
	g.enqueue(ctx, w)
}

func validateGroupSend(msg *courierpb.SendGroupMessage) *courierpb.Error {
	s := msg.GetSend()
	switch {
	case msg.UserId == "":
		return codeError(courierpb.ErrorCode_UNAUTHENTICATED, "sender unknown", false)
	case s == nil:
		return codeError(courierpb.ErrorCode_INVALID_ARGUMENT, "send is empty", false)
	case s.ClientMsgId == "" || len(s.ClientMsgId) > MaxClientMsgIDLen:
		return codeError(courierpb.ErrorCode_INVALID_ARGUMENT, fmt.Sprintf("client_msg_id must be 1..%d bytes", MaxClientMsgIDLen), false)
	case len(s.ContentType) > MaxContentTypeLen:
		return codeError(courierpb.ErrorCode_INVALID_ARGUMENT, fmt.Sprintf("content_type must be at most %d bytes", MaxContentTypeLen), false)
	case len(s.Ciphertext) == 0 && len(s.PerDevice) == 0:
		return codeError(courierpb.ErrorCode_INVALID_ARGUMENT, "a message needs a ciphertext", false)
	}
	return nil
}

// ---- storage ---------------------------------------------------------------

func (g *groupGrain) enqueue(ctx actor.Context, w *groupWrite) {
	g.pending = append(g.pending, w)
	g.flush(ctx)
}

// committed is what one group commit wrote.
type committed struct {
	duplicates map[int]persistence.GroupDedupe
}

// flush group-commits everything pending in one store write, one write at
// a time. Requesters are answered and entries fanned out only after it is
// durable.
func (g *groupGrain) flush(ctx actor.Context) {
	if g.flushing || len(g.pending) == 0 {
		return
	}
	n := min(len(g.pending), g.deps.Config.MaxBatch)
	batch := slices.Clone(g.pending[:n])
	g.pending = slices.Delete(g.pending, 0, n)
	g.flushing = true

	commit := persistence.GroupCommit{GroupID: g.id, ExpectVersion: g.storedVersion}
	index := map[string]bool{}
	var order []string
	for _, w := range batch {
		if w.state != nil {
			commit.State = w.state
		}
		for _, u := range w.joined {
			if _, ok := index[u]; !ok {
				order = append(order, u)
			}
			index[u] = true
		}
		for _, u := range w.left {
			if _, ok := index[u]; !ok {
				order = append(order, u)
			}
			index[u] = false
		}
	}
	for _, u := range order {
		if index[u] {
			commit.Joined = append(commit.Joined, u)
		} else {
			commit.Left = append(commit.Left, u)
		}
	}
	gen := g.gen
	groups := g.deps.Groups
	cluster.RunAsync(ctx, g.stop, g.deps.Config.StoreTimeout, func(c context.Context) (any, error) {
		return commitGroupBatch(c, groups, commit, batch)
	}, func(res any, err error) {
		if gen != g.gen {
			// The grain reset meanwhile: what this write did is not in
			// memory. Retries are harmless (sends are deduplicated, changes
			// idempotent), so ask for one rather than guess.
			e := codeError(courierpb.ErrorCode_UNAVAILABLE, "group reloaded, retry", true)
			for _, w := range batch {
				for _, pid := range w.replyTo {
					ctx.Send(pid, w.reply(e))
				}
			}
			return
		}
		g.flushing = false
		if err != nil {
			g.writeFailed(ctx, batch, commit.State != nil, err)
			return
		}
		r := res.(committed)
		if commit.State != nil {
			g.storedVersion = commit.State.Version
		}
		var fresh []*courierpb.GroupLogEntry
		for i, w := range batch {
			if d, dup := r.duplicates[i]; dup {
				// Stored before this activation: answer with its number; the
				// one this attempt took stays unused.
				g.dedupe.Put(w.dedupeKey, groupDedupeState{seq: d.GroupSeq, storedAtMs: d.StoredAtMs})
				dupReply := &courierpb.SendGroupMessageReply{GroupSeq: d.GroupSeq, StoredAtMs: d.StoredAtMs, Duplicate: true}
				for _, pid := range w.replyTo {
					ctx.Send(pid, dupReply)
				}
				continue
			}
			if w.dedupeKey != "" {
				g.dedupe.Put(w.dedupeKey, groupDedupeState{seq: w.dedupe.GroupSeq, storedAtMs: w.dedupe.StoredAtMs})
			}
			g.respond(ctx, w, nil)
			fresh = append(fresh, w.entries...)
		}
		g.stored(ctx, fresh)
		g.flush(ctx)
	})
}

// respond answers a write's first requester and, as duplicates, retries
// that joined it.
func (g *groupGrain) respond(ctx actor.Context, w *groupWrite, e *courierpb.Error) {
	r := w.reply(e)
	for i, pid := range w.replyTo {
		if pid == nil {
			continue
		}
		if i > 0 && e == nil {
			if sr, ok := r.(*courierpb.SendGroupMessageReply); ok {
				dup := proto.Clone(sr).(*courierpb.SendGroupMessageReply)
				dup.Duplicate = true
				ctx.Send(pid, dup)
				continue
			}
		}
		ctx.Send(pid, r)
	}
}

// writeFailed answers the failed batch. When the batch or anything queued
// behind it changed the group, those later changes were judged against a
// state that is now not stored: everything pending fails too and the grain
// starts over from the store.
func (g *groupGrain) writeFailed(ctx actor.Context, batch []*groupWrite, changedState bool, err error) {
	g.log.Warn("group write failed", "writes", len(batch), "err", err)
	e := storeError(err)
	if errors.Is(err, persistence.ErrConflict) {
		e = codeError(courierpb.ErrorCode_UNAVAILABLE, "the group changed concurrently, retry", true)
	}
	for _, w := range g.pending {
		if w.state != nil {
			changedState = true
		}
	}
	for _, w := range batch {
		if w.dedupeKey != "" {
			g.dedupe.Delete(w.dedupeKey)
		}
		g.respond(ctx, w, e)
	}
	if !changedState && !errors.Is(err, persistence.ErrConflict) {
		g.flush(ctx)
		return
	}
	g.restart(ctx, e)
}

// restart fails everything queued and reloads the group from the store.
func (g *groupGrain) restart(ctx actor.Context, e *courierpb.Error) {
	pending := g.pending
	g.pending = nil
	for _, w := range pending {
		if w.dedupeKey != "" {
			g.dedupe.Delete(w.dedupeKey)
		}
		g.respond(ctx, w, e)
	}
	g.reset(ctx)
}

// commitGroupBatch checks the sends of a batch against the store's dedupe
// records and commits the rest. It runs on a worker and reads only what
// the grain no longer changes.
func commitGroupBatch(ctx context.Context, store persistence.GroupStore, commit persistence.GroupCommit, batch []*groupWrite) (committed, error) {
	var out committed
	for i, w := range batch {
		if w.dedupe != nil {
			if !w.firstTransmission {
				d, err := store.GetGroupDedupe(ctx, w.dedupe.GroupID, w.dedupe.SenderID, w.dedupe.ClientMsgID)
				switch {
				case err == nil:
					if out.duplicates == nil {
						out.duplicates = make(map[int]persistence.GroupDedupe)
					}
					out.duplicates[i] = d
					continue
				case !errors.Is(err, persistence.ErrNotFound):
					return committed{}, fmt.Errorf("check group dedupe record: %w", err)
				}
			}
			commit.Dedupe = append(commit.Dedupe, *w.dedupe)
		}
		commit.Entries = append(commit.Entries, w.entries...)
	}
	return out, store.CommitGroup(ctx, commit)
}

// stored takes newly stored entries into the fan-out and the receipts.
func (g *groupGrain) stored(ctx actor.Context, entries []*courierpb.GroupLogEntry) {
	if len(entries) == 0 {
		return
	}
	for _, e := range entries {
		if e.Entry.GetKind() == courierpb.EntryKind_ENTRY_KIND_GROUP_MESSAGE {
			g.rcpt.add(g, e)
		}
	}
	g.fan.append(entries, g.cfg.TailEntries)
	g.wakeAll(ctx)
}

// groupIDSpace is the UUID namespace of group ids.
var groupIDSpace = uuid.MustParse("6f1c2b0e-8a47-5d3e-9c61-3e2f4a5b6c7d")

// GroupIDFor is the id of the group that creatorID creates with createID
// (a UUIDv5): a retried create names the same group, and nobody can create
// (or probe for) a group under another creator's id.
func GroupIDFor(creatorID, createID string) string {
	return uuid.NewSHA1(groupIDSpace, []byte(creatorID+"\x00"+createID)).String()
}

// typing forwards a member's typing indicator to every other active member's
// User grain, which passes it to that member's attached devices. Nothing is
// stored and nothing waits: an indicator that is lost is simply not shown.
func (g *groupGrain) typing(ctx actor.Context, msg *courierpb.GroupTyping) {
	if _, e := g.ready(ctx, msg.FromUserId); e != nil {
		ctx.Respond(&courierpb.GroupTypingReply{Error: e})
		return
	}
	ctx.Respond(&courierpb.GroupTypingReply{})
	n := &courierpb.TypingTo{FromUserId: msg.FromUserId, FromDeviceId: msg.FromDeviceId, GroupId: g.id, State: msg.State}
	for id, m := range g.members {
		if id == msg.FromUserId || !m.active() {
			continue
		}
		// Fire and forget: a late indicator is worth nothing.
		_ = g.deps.Cluster.Notify(UserGrainID(id), n, "", typingTimeout)
	}
}

// typingTimeout bounds how long an undelivered typing indicator is tracked.
const typingTimeout = 2 * time.Second
