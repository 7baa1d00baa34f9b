package actors

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"google.golang.org/protobuf/proto"

	"github.com/courier-im/courier/cluster"
	"github.com/courier-im/courier/internal/recent"
	"github.com/courier-im/courier/persistence"
	"github.com/courier-im/courier/protos/courierpb"
	"github.com/courier-im/courier/push"
)

// KindUser is the grain kind of users.
const KindUser = "user"

// MaxReceiptIDs bounds the client_msg_ids of one receipt (string
// lengths are in limits.go).
const MaxReceiptIDs = 1024

// UserGrainID names the grain of one user.
func UserGrainID(userID string) cluster.GrainID {
	return cluster.GrainID{Kind: KindUser, Identity: userID}
}

// UserConfig tunes User grains.
type UserConfig struct {
	// SeqBlockSize is how many inbox sequence numbers one lease reserves.
	SeqBlockSize uint64
	// StoreTimeout bounds every store call a grain makes.
	StoreTimeout time.Duration
	// RequestTimeout bounds grain-to-grain requests (receipts).
	RequestTimeout time.Duration
	// DedupeWindow is how many recent (sender, client_msg_id) pairs a grain
	// remembers in memory; older ones are checked in the store.
	DedupeWindow int
	// MaxBatch caps how many writes one group commit carries.
	MaxBatch int
	// PassivateAfter is the idle time after which a grain leaves memory.
	PassivateAfter time.Duration
	// PresenceDebounce is the least time between two presence updates of
	// one user to its subscribers (default 2s).
	PresenceDebounce time.Duration
	// IdentityNoticeInterval is the least time between two rounds of
	// IDENTITY_CHANGED notices from one user to its contacts; key changes
	// in between are coalesced into the next round (default 5m, negative:
	// no limit). Keep it at most PassivateAfter: a coalesced round is
	// held in memory, and a grain passivates only after PassivateAfter of
	// idleness, which the change that was held back started.
	IdentityNoticeInterval time.Duration
	// CallRingTimeout is how long an unanswered call rings before it ends
	// as missed (default 45s).
	CallRingTimeout time.Duration
}

func (c UserConfig) withDefaults() UserConfig {
	if c.SeqBlockSize == 0 {
		c.SeqBlockSize = 1000
	}
	if c.StoreTimeout == 0 {
		c.StoreTimeout = 5 * time.Second
	}
	if c.RequestTimeout == 0 {
		c.RequestTimeout = 5 * time.Second
	}
	if c.DedupeWindow == 0 {
		c.DedupeWindow = 1024
	}
	if c.MaxBatch == 0 {
		c.MaxBatch = 1024
	}
	if c.PresenceDebounce == 0 {
		c.PresenceDebounce = 2 * time.Second
	}
	if c.IdentityNoticeInterval == 0 {
		c.IdentityNoticeInterval = 5 * time.Minute
	}
	if c.CallRingTimeout <= 0 {
		c.CallRingTimeout = 45 * time.Second
	}
	return c
}

// Deps is what grains need from the node they run on.
type Deps struct {
	Store persistence.Store
	// Groups keeps groups; required by the Group kind (GroupKind).
	Groups persistence.GroupStore
	// Cluster is set once the node's cluster exists, before it starts.
	Cluster *cluster.Cluster
	Logger  *slog.Logger
	Config  UserConfig
	// Group tunes Group grains.
	Group GroupConfig
	// Now is the clock (tests may replace it).
	Now func() time.Time
	// Push sends pushes to offline devices; nil disables push.
	Push *push.Dispatcher
	// Presence counts presence work (set by UserKind when nil).
	Presence *PresenceStats
}

// UserKind returns the cluster kind that hosts User grains.
func UserKind(deps *Deps) cluster.Kind {
	deps.Config = deps.Config.withDefaults()
	if deps.Now == nil {
		deps.Now = time.Now
	}
	if deps.Logger == nil {
		deps.Logger = slog.Default()
	}
	if deps.Presence == nil {
		deps.Presence = &PresenceStats{}
	}
	return cluster.Kind{
		Name:           KindUser,
		PassivateAfter: deps.Config.PassivateAfter,
		Producer:       func(id string) actor.Actor { return newUserGrain(id, deps) },
	}
}

// userGrain owns one user's device inboxes: it numbers entries, stores them
// before it acknowledges, pushes them to attached sessions and deletes them
// when a device acknowledges them.
type userGrain struct {
	id   string
	deps *Deps

	stop   context.Context
	cancel context.CancelFunc

	loaded  bool
	exists  bool
	devices []uint32

	seq seqBlock
	// bounded: persistedThrough and indexFrom cover what earlier
	// activations handed out; set by the first lease or by reading the
	// counter (boundReplay), whichever comes first.
	bounded bool
	// persistedThrough: every entry with a lower or equal inbox_seq that this
	// or an earlier activation handed out is stored.
	persistedThrough uint64

	dedupe   *recent.Map[string, dedupeState]
	receipts *recent.Map[string, struct{}]
	// readSent: the (peer, client_msg_id) pairs this user's read receipts
	// already carried (user_receipts.go), so each delivered message costs
	// its sender at most one READ entry, whichever device reads it.
	readSent *recent.Map[string, struct{}]

	pending  []*pendingWrite
	flushing bool

	sessions deviceSessions
	acks     map[uint32]*ackState
	// unacked indexes, per device, the messages this activation stored and
	// the device has not acked, so an ack finds whom to send delivered
	// receipts without reading the store.
	unacked map[uint32]*unackedIndex
	// indexFrom: every entry with a higher inbox_seq passes through this
	// activation, so the indexes are complete above it.
	indexFrom uint64

	// groups tracks, per group, what this member's inboxes hold of it
	// (user_groups.go).
	groups map[string]*groupInbox

	// profile: contacts, blocks, privacy, last seen, push state
	// (user_profile.go); loaded with the user.
	profile  *profile
	presence presenceState
	// linkCodes are the primary's pending approvals of new devices
	// (user_devices.go); in memory only, so a restart voids them.
	linkCodes map[string]linkCode
	// identity paces IDENTITY_CHANGED notices (user_devices.go).
	identity identityNotices
	// calls are the live calls this user takes part in (user_calls.go);
	// in memory only.
	calls callTable
}

type dedupeState struct {
	storedAtMs int64
	inflight   *pendingWrite // nil once stored
}

// pendingWrite is one request's entries waiting for the next group commit.
type pendingWrite struct {
	entries   []persistence.InboxAppend
	dedupe    *persistence.DedupeRecord
	dedupeKey string
	// firstTransmission: the client never sent this client_msg_id before,
	// so the store is not asked whether it has the dedupe record (memory
	// was). The record is still written, for the retries to come.
	firstTransmission bool
	replyTo           []*actor.PID
	reply             func(err *courierpb.Error, duplicate bool) proto.Message
	maxSeq            uint64
	// group is set for a delivery of group entries (user_groups.go).
	group *groupDelivery
	// after, when set, runs once the write is answered (err nil: stored).
	after func(ctx actor.Context, err error)
	// dupReply answers a write the store already had (default: a
	// DeliverMessageReply marked duplicate).
	dupReply func(storedAtMs int64) proto.Message
	// lazy: the store need not make the entries durable before the write is
	// answered (persistence.LazyAppender): a delivered receipt, which the
	// recipient's next ack derives again if a crash loses it.
	lazy bool
}

// ackState serialises one device's acknowledgements: one delete (with its
// receipts) at a time, later acks coalesced into the next.
type ackState struct {
	done     uint64
	target   uint64
	inflight bool
	waiters  []ackWaiter
}

type ackWaiter struct {
	upTo  uint64
	pid   *actor.PID
	quiet bool // answer only a failure
}

func newUserGrain(id string, deps *Deps) *userGrain {
	return &userGrain{id: id, deps: deps}
}

// logger is built when something is logged: a million idle grains keep no
// preformatted loggers.
func (g *userGrain) logger() *slog.Logger {
	return g.deps.Logger.With("grain", KindUser, "user_id", g.id)
}

func (g *userGrain) Receive(ctx actor.Context) {
	switch msg := ctx.Message().(type) {
	case *actor.Started:
		g.start()
	case *actor.Restarting, *actor.Stopped:
		g.dropCalls()
		g.cancelStop()
	case *actor.Terminated:
		g.sessionTerminated(ctx, msg.Who)
	case *courierpb.DeliverMessage:
		g.deliverMessage(ctx, msg)
	case *courierpb.DeliverReceipt:
		g.deliverReceipt(ctx, msg)
	case *courierpb.SendReadReceipt:
		g.sendReadReceipt(ctx, msg)
	case *courierpb.AttachDevice:
		g.attach(ctx, msg)
	case *courierpb.DetachDevice:
		g.detach(ctx, msg)
	case *courierpb.AckInbox:
		g.ack(ctx, msg.DeviceId, msg.UpToInboxSeq, msg.Quiet, ctx.Sender())
	case *courierpb.DeliverGroupEntries:
		g.deliverGroupEntries(ctx, msg, ctx.Sender())
	case *courierpb.UserSettings:
		g.settings(ctx, msg)
	case *courierpb.WatchPresence:
		g.watchPresence(ctx, msg)
	case *courierpb.TypingTo:
		g.typingTo(ctx, msg)
	case presenceTick:
		g.onPresenceTick()
	case *courierpb.CreateLinkCode:
		g.createLinkCode(ctx, msg)
	case *courierpb.RedeemLinkCode:
		g.redeemLinkCode(ctx, msg)
	case *courierpb.UnlinkDevice:
		g.unlinkDevice(ctx, msg)
	case *courierpb.IdentityChanged:
		g.announceIdentity(ctx, msg)
	case identityTick:
		g.onIdentityTick()
	case *courierpb.StoreTranscript:
		g.storeTranscript(ctx, msg)
	case *courierpb.CallSignalRequest:
		g.callSignal(ctx, msg)
	case *courierpb.PeerCallSignal:
		g.peerCallSignal(ctx, msg)
	case callRingTimeout:
		g.onRingTimeout(ctx, msg.id)
	case callKeepalive:
		g.onCallKeepalive(ctx)
	case missedCallRetry:
		g.storeMissed(ctx, msg.c, msg.reason, msg.endedAt, msg.attempt)
	}
	// A user that does not exist has nothing to keep in memory, and every
	// request to it is answered NOT_FOUND: the grain leaves at once rather
	// than after PassivateAfter, so ids made up by a client (sends to
	// thousands of them) cost nothing that outlives the request. The next
	// request to the id activates it again, and sees a user registered
	// since.
	if g.loaded && !g.exists {
		cluster.Passivate(ctx)
	}
}

// stopCtx is cancelled when the activation stops or restarts. It is made
// on first use: most activations are idle users' that never need it, and
// it costs each of them about 100 bytes.
func (g *userGrain) stopCtx() context.Context {
	if g.stop == nil {
		g.stop, g.cancel = context.WithCancel(context.Background())
	}
	return g.stop
}

func (g *userGrain) cancelStop() {
	if g.cancel != nil {
		g.cancel()
	}
}

// start resets the grain to what the store says; it runs on activation and
// after a supervisor restart, so nothing in memory survives a panic.
func (g *userGrain) start() {
	g.stop, g.cancel = nil, nil
	g.seq = newSeqBlock("inbox/"+g.id, g.deps.Config.SeqBlockSize)
	// The maps are made on first insert: most activations are idle users
	// that never need most of them.
	g.sessions, g.acks, g.unacked, g.groups = nil, nil, nil, nil
	g.bounded, g.indexFrom = false, 0
	g.presence = presenceState{}
	g.identity = identityNotices{}
	g.profile = nil
	g.pending, g.flushing = nil, false
	g.dedupe, g.receipts, g.readSent = nil, nil, nil
	g.loaded = false
	if err := g.load(); err != nil {
		// Not fatal: every request retries the load and answers UNAVAILABLE
		// while the store is down.
		g.logger().Warn("user grain load failed", "err", err)
	}
}

// storeCtx bounds a store call the grain makes while it handles a message.
// It is not derived from g.stop: nothing cancels g.stop while the grain is
// busy with a message, and a child would leave g.stop holding a children
// map and a done channel (about 370 bytes) for the rest of the activation.
func (g *userGrain) storeCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), g.deps.Config.StoreTimeout)
}

// load reads the user, its devices and its profile. The three reads go out
// together: an activation is on the path of every device that comes online,
// and against a remote database three round trips in a row are three times
// the wait. (The devices and profile of a user that does not exist are
// read for nothing: a message to an unknown id, or a stale token.)
func (g *userGrain) load() error {
	ctx, cancel := g.storeCtx()
	defer cancel()
	var (
		devices         []persistence.Device
		profile         []byte
		devErr, profErr error
		wg              sync.WaitGroup
		store, id       = g.deps.Store, g.id
	)
	wg.Go(func() { devices, devErr = store.ListDevices(ctx, id) })
	wg.Go(func() { profile, profErr = store.GetProfile(ctx, id) })
	_, err := store.GetUser(ctx, id)
	wg.Wait()
	switch {
	case errors.Is(err, persistence.ErrNotFound):
		g.exists, g.loaded = false, true
		return nil
	case err != nil:
		return fmt.Errorf("load user %s: %w", g.id, err)
	case devErr != nil:
		return fmt.Errorf("load devices of %s: %w", g.id, devErr)
	}
	g.setDevices(devices)
	if err := g.setProfile(profile, profErr); err != nil {
		return err
	}
	g.exists, g.loaded = true, true
	return nil
}

func (g *userGrain) loadDevices(ctx context.Context) error {
	devs, err := g.deps.Store.ListDevices(ctx, g.id)
	if err != nil {
		return fmt.Errorf("load devices of %s: %w", g.id, err)
	}
	g.setDevices(devs)
	return nil
}

func (g *userGrain) setDevices(devs []persistence.Device) {
	g.devices = g.devices[:0]
	for _, d := range devs {
		g.devices = append(g.devices, d.DeviceID)
	}
}

// ready reports whether the grain can serve; when not, it has the error to
// answer with.
func (g *userGrain) ready() *courierpb.Error {
	if !g.loaded {
		if err := g.load(); err != nil {
			return storeError(err)
		}
	}
	if !g.exists {
		return codeError(courierpb.ErrorCode_NOT_FOUND, "no such user", false)
	}
	return nil
}

func (g *userGrain) hasDevice(id uint32) bool {
	_, ok := slices.BinarySearch(g.devices, id)
	return ok
}

// nextSeq hands out the next inbox number. The first lease of an activation
// also tells the grain that every earlier number is stored or was never used.
func (g *userGrain) nextSeq() (uint64, error) {
	fresh := g.seq.next == 0
	n, err := g.seq.Next(g.storeCtx, g.deps.Store)
	if err != nil {
		return 0, err
	}
	if fresh {
		g.bound(n - 1)
	}
	return n, nil
}

// boundReplay learns, without leasing, up to where earlier activations may
// have handed out numbers: an attaching device replays up to there. A
// lease here would cost a compare-and-set (a Paxos round on ScyllaDB, an
// fsync embedded) on every activation, though most activations are a
// device coming online that receives nothing before it goes again.
func (g *userGrain) boundReplay() error {
	ctx, cancel := g.storeCtx()
	defer cancel()
	last, err := g.deps.Store.LastLeased(ctx, g.seq.counter)
	if err != nil {
		return fmt.Errorf("read inbox counter of %s: %w", g.id, err)
	}
	g.bound(last)
	return nil
}

// bound records that every number up to last belongs to an earlier
// activation (or this one's first lease starts after it): those entries are
// stored or never will be, and this activation's indexes see everything
// above. A later, higher bound (a lease after a read, past another
// activation's leases) raises indexFrom and the indexes' floors, so none
// claims entries it never saw.
func (g *userGrain) bound(last uint64) {
	g.bounded = true
	g.persistedThrough = max(g.persistedThrough, last)
	g.indexFrom = max(g.indexFrom, last)
	for _, ix := range g.unacked {
		ix.from = max(ix.from, last)
	}
}

func (g *userGrain) deliverMessage(ctx actor.Context, msg *courierpb.DeliverMessage) {
	reply := func(e *courierpb.Error, dup bool) proto.Message {
		return &courierpb.DeliverMessageReply{Error: e, Duplicate: dup}
	}
	if e := g.ready(); e != nil {
		ctx.Respond(reply(e, false))
		return
	}
	send := msg.GetSend()
	if e := validateSend(msg); e != nil {
		ctx.Respond(reply(e, false))
		return
	}
	if g.profile.blocked[msg.FromUserId] {
		// The sender sees a single tick forever, as if this user were
		// offline: nothing is stored, no receipt ever comes, and nothing
		// tells it that it is blocked.
		ctx.Respond(&courierpb.DeliverMessageReply{StoredAtMs: g.deps.Now().UnixMilli()})
		return
	}
	key := msg.FromUserId + "\x00" + send.ClientMsgId
	if g.answerDuplicate(ctx, key) {
		return
	}
	if len(send.PerDevice) > 0 {
		// End-to-end encrypted: one ciphertext per device, and exactly the
		// current devices (a device missing from the send could never read
		// the message).
		if e := g.checkDevices(send.PerDevice, 0); e != nil {
			ctx.Respond(reply(e, false))
			return
		}
	}

	perDevice := make(map[uint32][]byte, len(send.PerDevice))
	for _, dc := range send.PerDevice {
		perDevice[dc.DeviceId] = dc.Ciphertext
	}
	seq, err := g.nextSeq()
	if err != nil {
		ctx.Respond(reply(storeError(err), false))
		return
	}
	now := g.deps.Now().UnixMilli()
	w := &pendingWrite{dedupeKey: key, replyTo: []*actor.PID{ctx.Sender()}, maxSeq: seq, firstTransmission: msg.FirstTransmission}
	for _, dev := range g.devices {
		ct, ok := perDevice[dev]
		if !ok {
			ct = send.Ciphertext
		}
		w.entries = append(w.entries, persistence.InboxAppend{UserID: g.id, DeviceID: dev, Entry: &courierpb.InboxEntry{
			InboxSeq:     seq,
			Kind:         courierpb.EntryKind_ENTRY_KIND_MESSAGE,
			FromUserId:   msg.FromUserId,
			FromDeviceId: msg.FromDeviceId,
			ClientMsgId:  send.ClientMsgId,
			Ciphertext:   ct,
			ContentType:  send.ContentType,
			SentAtMs:     now,
		}})
	}
	w.dedupe = &persistence.DedupeRecord{RecipientID: g.id, SenderID: msg.FromUserId, ClientMsgID: send.ClientMsgId, StoredAtMs: now}
	w.reply = func(e *courierpb.Error, dup bool) proto.Message {
		return &courierpb.DeliverMessageReply{StoredAtMs: now, Duplicate: dup, Error: e}
	}
	g.dedupe.Put(key, dedupeState{storedAtMs: now, inflight: w})
	g.enqueue(ctx, w)
}

// answerDuplicate answers a retried send the grain remembers without
// storing it again: from memory when recent, or by joining the write still
// in flight. Older retries (or ones from before this activation) are caught
// by the store's dedupe records when the write is flushed.
func (g *userGrain) answerDuplicate(ctx actor.Context, key string) bool {
	return g.answerDuplicateWith(ctx, key, func(storedAtMs int64) proto.Message {
		return &courierpb.DeliverMessageReply{StoredAtMs: storedAtMs, Duplicate: true}
	})
}

// answerDuplicateWith is answerDuplicate for writes whose reply is not a
// DeliverMessageReply.
func (g *userGrain) answerDuplicateWith(ctx actor.Context, key string, dup func(storedAtMs int64) proto.Message) bool {
	if g.dedupe == nil {
		g.dedupe = recent.New[string, dedupeState](g.deps.Config.DedupeWindow)
	}
	st, ok := g.dedupe.Get(key)
	if !ok {
		return false
	}
	if st.inflight != nil {
		st.inflight.replyTo = append(st.inflight.replyTo, ctx.Sender())
		return true
	}
	ctx.Respond(dup(st.storedAtMs))
	return true
}

func validateSend(msg *courierpb.DeliverMessage) *courierpb.Error {
	send := msg.GetSend()
	switch {
	case send == nil:
		return codeError(courierpb.ErrorCode_INVALID_ARGUMENT, "send is empty", false)
	case send.ClientMsgId == "" || len(send.ClientMsgId) > MaxClientMsgIDLen:
		return codeError(courierpb.ErrorCode_INVALID_ARGUMENT, fmt.Sprintf("client_msg_id must be 1..%d bytes", MaxClientMsgIDLen), false)
	case len(send.ContentType) > MaxContentTypeLen:
		return codeError(courierpb.ErrorCode_INVALID_ARGUMENT, fmt.Sprintf("content_type must be at most %d bytes", MaxContentTypeLen), false)
	case len(send.Ciphertext) == 0 && len(send.PerDevice) == 0:
		return codeError(courierpb.ErrorCode_INVALID_ARGUMENT, "a message needs a ciphertext", false)
	case msg.FromUserId == "":
		return codeError(courierpb.ErrorCode_UNAUTHENTICATED, "sender unknown", false)
	}
	return nil
}

func (g *userGrain) deliverReceipt(ctx actor.Context, msg *courierpb.DeliverReceipt) {
	reply := func(e *courierpb.Error, _ bool) proto.Message { return &courierpb.DeliverReceiptReply{Error: e} }
	if e := g.ready(); e != nil {
		ctx.Respond(reply(e, false))
		return
	}
	system := false
	switch msg.Kind {
	case courierpb.EntryKind_ENTRY_KIND_DELIVERED, courierpb.EntryKind_ENTRY_KIND_READ:
	case courierpb.EntryKind_ENTRY_KIND_GROUP_DELIVERED, courierpb.EntryKind_ENTRY_KIND_GROUP_READ:
		if msg.GroupId == "" {
			ctx.Respond(reply(codeError(courierpb.ErrorCode_INVALID_ARGUMENT, "a group receipt names its group", false), false))
			return
		}
	case courierpb.EntryKind_ENTRY_KIND_IDENTITY_CHANGED, courierpb.EntryKind_ENTRY_KIND_PREKEYS_LOW:
		// System notices: about a device, not about messages.
		system = true
	default:
		ctx.Respond(reply(codeError(courierpb.ErrorCode_INVALID_ARGUMENT, "receipt kind must be delivered or read", false), false))
		return
	}
	if msg.OnlyDeviceId != 0 && !g.hasDevice(msg.OnlyDeviceId) {
		ctx.Respond(reply(codeError(courierpb.ErrorCode_NOT_FOUND, "no such device", false), false))
		return
	}
	if !system && (len(msg.ClientMsgIds) == 0 || len(msg.ClientMsgIds) > MaxReceiptIDs) {
		ctx.Respond(reply(codeError(courierpb.ErrorCode_INVALID_ARGUMENT, fmt.Sprintf("a receipt names 1..%d messages", MaxReceiptIDs), false), false))
		return
	}
	for _, id := range msg.ClientMsgIds {
		if id == "" || len(id) > MaxClientMsgIDLen {
			ctx.Respond(reply(codeError(courierpb.ErrorCode_INVALID_ARGUMENT, fmt.Sprintf("client_msg_id must be 1..%d bytes", MaxClientMsgIDLen), false), false))
			return
		}
	}
	if !g.acceptsFrom(msg.FromUserId, msg.Kind) {
		// Blocked, or a notice this user never agreed to get (R2, R3 in
		// user_receipts.go): answered like a stored receipt, so the sender
		// learns nothing, and nothing is stored.
		ctx.Respond(reply(nil, false))
		return
	}
	// A retried receipt request (same idempotency key) is answered, not stored twice.
	if key := cluster.IdempotencyKey(ctx); key != "" {
		if g.receipts == nil {
			g.receipts = recent.New[string, struct{}](g.deps.Config.DedupeWindow)
		}
		if _, dup := g.receipts.Get(key); dup {
			ctx.Respond(reply(nil, true))
			return
		}
		g.receipts.Put(key, struct{}{})
	}
	seq, err := g.nextSeq()
	if err != nil {
		ctx.Respond(reply(storeError(err), false))
		return
	}
	now := g.deps.Now().UnixMilli()
	// Only the server sends delivered receipts (ackThrough), and it deletes
	// the acked entries after this write returns: see LazyAppender.
	lazy := msg.Kind == courierpb.EntryKind_ENTRY_KIND_DELIVERED
	w := &pendingWrite{replyTo: []*actor.PID{ctx.Sender()}, reply: reply, maxSeq: seq, lazy: lazy}
	for _, dev := range g.devices {
		if msg.OnlyDeviceId != 0 && dev != msg.OnlyDeviceId {
			continue
		}
		w.entries = append(w.entries, persistence.InboxAppend{UserID: g.id, DeviceID: dev, Entry: &courierpb.InboxEntry{
			InboxSeq:     seq,
			Kind:         msg.Kind,
			FromUserId:   msg.FromUserId,
			FromDeviceId: msg.FromDeviceId,
			SentAtMs:     now,
			ReceiptFor:   msg.ClientMsgIds,
			GroupId:      msg.GroupId,
			GroupSeq:     msg.GroupSeq,
		}})
	}
	g.enqueue(ctx, w)
}

func (g *userGrain) enqueue(ctx actor.Context, w *pendingWrite) {
	g.pending = append(g.pending, w)
	g.flush(ctx)
}

// flush group-commits everything pending in one store write, with at most
// one write in flight: requests that arrive meanwhile ride the next one.
// Only after the write returns are senders answered and entries pushed, so
// nothing is acknowledged or shown before it is durable.
func (g *userGrain) flush(ctx actor.Context) {
	if g.flushing || len(g.pending) == 0 {
		return
	}
	n := min(len(g.pending), g.deps.Config.MaxBatch)
	batch := slices.Clone(g.pending[:n])
	g.pending = slices.Delete(g.pending, 0, n)
	g.flushing = true

	store := g.deps.Store
	devices := slices.Clone(g.devices)
	cluster.RunAsync(ctx, g.stopCtx(), g.deps.Config.StoreTimeout, func(c context.Context) (any, error) {
		return storeBatch(c, store, devices, batch)
	}, func(res any, err error) {
		g.flushing = false
		if err != nil {
			g.logger().Warn("inbox append failed", "writes", len(batch), "err", err)
			e := storeError(err)
			for _, w := range batch {
				if w.dedupeKey != "" {
					g.dedupe.Delete(w.dedupeKey)
				}
				g.respondAll(ctx, w, w.reply(e, false))
				if w.after != nil {
					w.after(ctx, err)
				}
			}
			g.flush(ctx)
			return
		}
		r := res.(storedBatch)
		for i, w := range batch {
			g.persistedThrough = max(g.persistedThrough, w.maxSeq)
			if storedAt, dup := r.duplicates[i]; dup {
				// Stored before this activation: answer as a duplicate; its
				// number stays unused.
				g.dedupe.Put(w.dedupeKey, dedupeState{storedAtMs: storedAt})
				var dup proto.Message = &courierpb.DeliverMessageReply{StoredAtMs: storedAt, Duplicate: true}
				if w.dupReply != nil {
					dup = w.dupReply(storedAt)
				}
				g.respondAll(ctx, w, dup)
				continue
			}
			if w.dedupeKey != "" {
				g.dedupe.Put(w.dedupeKey, dedupeState{storedAtMs: w.dedupe.StoredAtMs})
			}
			g.respondAll(ctx, w, nil)
			if w.after != nil {
				w.after(ctx, nil)
			}
		}
		g.index(r.appended)
		g.push(ctx, r.appended)
		g.maybePush(r.appended)
		g.flush(ctx)
	})
}

// storedBatch is what one group commit wrote: the entries, and the writes
// that turned out to be duplicates (batch index → first stored_at).
type storedBatch struct {
	appended   []persistence.InboxAppend
	duplicates map[int]int64
}

// storeBatch checks the batch's messages against the store's dedupe records
// and writes the rest in one atomic append. It runs on a worker, off the
// grain's mailbox, and reads only what the grain no longer changes (entries
// and dedupe records). devices are the grain's devices when the batch was
// taken, where a store may keep dedupe records.
func storeBatch(ctx context.Context, store persistence.Store, devices []uint32, batch []*pendingWrite) (storedBatch, error) {
	var out storedBatch
	found, err := storedDedupe(ctx, store, devices, batch)
	if err != nil {
		return storedBatch{}, err
	}
	var records []persistence.DedupeRecord
	for i, w := range batch {
		if w.group != nil {
			entries, recs, err := w.group.resolve(ctx, store, devices)
			if err != nil {
				return storedBatch{}, err
			}
			out.appended = append(out.appended, entries...)
			records = append(records, recs...)
			continue
		}
		if w.dedupe != nil {
			if storedAt, dup := found[i]; dup {
				if out.duplicates == nil {
					out.duplicates = make(map[int]int64)
				}
				out.duplicates[i] = storedAt
				continue
			}
			records = append(records, *w.dedupe)
		}
		out.appended = append(out.appended, w.entries...)
	}
	if len(out.appended) == 0 && len(records) == 0 {
		return out, nil
	}
	if la, ok := store.(persistence.LazyAppender); ok && len(records) == 0 && allLazy(batch) {
		return out, la.AppendLazy(ctx, out.appended)
	}
	return out, store.Append(ctx, out.appended, records)
}

func allLazy(batch []*pendingWrite) bool {
	for _, w := range batch {
		if !w.lazy {
			return false
		}
	}
	return true
}

// dedupeLookups bounds the dedupe records one batch reads at once.
const dedupeLookups = 16

// storedDedupe reads the dedupe records of the batch's sends that were not
// first transmissions, concurrently: a client that resends its whole
// window after a reconnect would otherwise cost one store round trip after
// another. It returns, by batch index, when each found one was stored.
func storedDedupe(ctx context.Context, store persistence.Store, devices []uint32, batch []*pendingWrite) (map[int]int64, error) {
	var check []int
	for i, w := range batch {
		if w.group == nil && w.dedupe != nil && !w.firstTransmission {
			check = append(check, i)
		}
	}
	if len(check) == 0 {
		return nil, nil
	}
	var (
		mu    sync.Mutex
		found map[int]int64
		first error
		wg    sync.WaitGroup
		sem   = make(chan struct{}, dedupeLookups)
	)
	for _, i := range check {
		d := batch[i].dedupe
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			rec, err := store.GetDedupe(ctx, d.RecipientID, devices, d.SenderID, d.ClientMsgID)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				if found == nil {
					found = make(map[int]int64)
				}
				found[i] = rec.StoredAtMs
			case !errors.Is(err, persistence.ErrNotFound) && first == nil:
				first = fmt.Errorf("check dedupe record: %w", err)
			}
		})
	}
	wg.Wait()
	return found, first
}

// respondAll answers the first requester with resp (or a fresh success) and
// every retry that joined the write while it was in flight as a duplicate.
func (g *userGrain) respondAll(ctx actor.Context, w *pendingWrite, resp proto.Message) {
	for i, pid := range w.replyTo {
		if pid == nil {
			continue
		}
		r := resp
		if r == nil {
			r = w.reply(nil, i > 0)
		}
		ctx.Send(pid, r)
	}
}

// push sends newly stored entries to the sessions attached to their devices.
// It never waits: a session that cannot keep up disconnects itself and
// resumes from the store.
func (g *userGrain) push(ctx actor.Context, appends []persistence.InboxAppend) {
	if len(g.sessions) == 0 {
		return
	}
	g.dropStoppedSessions(ctx)
	for _, s := range g.sessions {
		var entries []*courierpb.InboxEntry
		for _, a := range appends {
			if a.DeviceID == s.device {
				entries = append(entries, a.Entry)
			}
		}
		if len(entries) > 0 {
			g.deps.Cluster.Tell(s.pid, &courierpb.PushEntries{Entries: entries})
		}
	}
}

func (g *userGrain) attach(ctx actor.Context, msg *courierpb.AttachDevice) {
	if e := g.ready(); e != nil {
		ctx.Respond(&courierpb.AttachDeviceReply{Error: e})
		return
	}
	if !g.hasDevice(msg.DeviceId) {
		// The device may have been added since activation.
		sctx, cancel := g.storeCtx()
		err := g.loadDevices(sctx)
		cancel()
		if err != nil {
			ctx.Respond(&courierpb.AttachDeviceReply{Error: storeError(err)})
			return
		}
		if !g.hasDevice(msg.DeviceId) {
			ctx.Respond(&courierpb.AttachDeviceReply{Error: codeError(courierpb.ErrorCode_FORBIDDEN, "no such device", false)})
			return
		}
	}
	if msg.SessionId == "" {
		ctx.Respond(&courierpb.AttachDeviceReply{Error: codeError(courierpb.ErrorCode_INVALID_ARGUMENT, "session id missing", false)})
		return
	}
	// The replay bound must cover every number an earlier activation handed
	// out; reading it now (rather than on activation) keeps activations that
	// only deliver to an offline user free of it.
	if !g.bounded {
		if err := g.boundReplay(); err != nil {
			ctx.Respond(&courierpb.AttachDeviceReply{Error: storeError(err)})
			return
		}
	}
	pid := actor.NewPID(msg.SessionAddress, msg.SessionId)
	prev, _ := g.sessions.get(msg.DeviceId)
	was := prev != nil && prev.Equal(pid)
	if !was && prev != nil && msg.Renew {
		// A newer session holds the device; the renewing one is stale.
		ctx.Respond(&courierpb.AttachDeviceReply{Replaced: true})
		return
	}
	wasOnline := g.online()
	if !was {
		if prev != nil {
			// One session per device: the newest wins, the older is told so
			// it closes instead of silently receiving nothing.
			g.sessions.remove(msg.DeviceId)
			g.unwatchIfUnused(ctx, prev)
			g.deps.Cluster.Tell(prev, &courierpb.SessionReplaced{})
		}
		g.sessions.set(msg.DeviceId, pid)
		g.watchSession(ctx, pid)
	}
	ctx.Respond(&courierpb.AttachDeviceReply{ReplayThrough: g.persistedThrough, WasAttached: was,
		PresenceVisibility: g.profile.pb.PresenceVisibility})
	if !was {
		g.deviceOnline(ctx, msg.DeviceId, wasOnline)
		g.ringAttached(pid)
	}
	if msg.ResumeAfter > 0 {
		g.ack(ctx, msg.DeviceId, msg.ResumeAfter, true, nil)
	}
}

func (g *userGrain) detach(ctx actor.Context, msg *courierpb.DetachDevice) {
	if pid, ok := g.sessions.get(msg.DeviceId); ok && pid.Id == msg.SessionId {
		g.sessions.remove(msg.DeviceId)
		g.unwatchIfUnused(ctx, pid)
		g.deviceOffline(ctx)
	}
	ctx.Respond(&courierpb.DetachDeviceReply{})
}

func (g *userGrain) sessionTerminated(ctx actor.Context, who *actor.PID) {
	delete(g.presence.watchers, pidKey(who))
	if g.sessions.removePID(who) && g.profile != nil {
		g.deviceOffline(ctx)
	}
}

// ack deletes a device's entries through upTo, after telling each sender
// that its messages were delivered. The receipts are stored before the
// entries are deleted, so a crash in between repeats a receipt (clients
// ignore repeats) but never loses one. A quiet ack is answered only when it
// fails.
func (g *userGrain) ack(ctx actor.Context, device uint32, upTo uint64, quiet bool, replyTo *actor.PID) {
	if e := g.ready(); e != nil {
		if replyTo != nil {
			ctx.Send(replyTo, &courierpb.AckInboxReply{Error: e})
		}
		return
	}
	if !g.hasDevice(device) {
		if replyTo != nil {
			ctx.Send(replyTo, &courierpb.AckInboxReply{Error: codeError(courierpb.ErrorCode_FORBIDDEN, "no such device", false)})
		}
		return
	}
	st := g.acks[device]
	if st == nil {
		st = &ackState{}
		if g.acks == nil {
			g.acks = make(map[uint32]*ackState)
		}
		g.acks[device] = st
	}
	if upTo <= st.done {
		if replyTo != nil && !quiet {
			ctx.Send(replyTo, &courierpb.AckInboxReply{})
		}
		return
	}
	st.target = max(st.target, upTo)
	if replyTo != nil {
		st.waiters = append(st.waiters, ackWaiter{upTo: upTo, pid: replyTo, quiet: quiet})
	}
	g.runAck(ctx, device, st)
}

func (g *userGrain) runAck(ctx actor.Context, device uint32, st *ackState) {
	if st.inflight || st.target <= st.done {
		return
	}
	st.inflight = true
	from, to := st.done, st.target
	store, cl, userID := g.deps.Store, g.deps.Cluster, g.id
	reqTimeout := g.deps.Config.RequestTimeout
	ix := g.unacked[device]
	if ix == nil && g.bounded {
		// Nothing indexed for this device yet, yet every message this
		// activation stored passed through index: an empty index is
		// complete above indexFrom (receipt-only inboxes live here).
		ix = &unackedIndex{from: g.indexFrom}
		if g.unacked == nil {
			g.unacked = make(map[uint32]*unackedIndex)
		}
		g.unacked[device] = ix
	}
	known, complete := ix.through(from, to)
	// Receipts to several senders plus the delete: allow for all of them.
	cluster.RunAsync(ctx, g.stopCtx(), g.deps.Config.StoreTimeout+2*reqTimeout, func(c context.Context) (any, error) {
		if !complete {
			var err error
			if known, err = storedMessages(c, store, userID, device, from, to); err != nil {
				return nil, err
			}
		}
		return nil, ackThrough(c, store, cl, userID, device, known, from, to)
	}, func(_ any, err error) {
		st.inflight = false
		if err != nil {
			g.logger().Warn("inbox ack failed", "device_id", device, "up_to", to, "err", err)
			e := storeError(err)
			for _, w := range st.waiters {
				ctx.Send(w.pid, &courierpb.AckInboxReply{Error: e})
			}
			st.waiters, st.target = nil, st.done
			return
		}
		st.done = max(st.done, to)
		kept := st.waiters[:0]
		for _, w := range st.waiters {
			if w.upTo <= st.done {
				if !w.quiet {
					ctx.Send(w.pid, &courierpb.AckInboxReply{})
				}
			} else {
				kept = append(kept, w)
			}
		}
		st.waiters = kept
		g.runAck(ctx, device, st)
	})
}

// storedMessages reads the messages of one device inbox in (from, to].
func storedMessages(ctx context.Context, store persistence.Store, userID string, device uint32, from, to uint64) ([]unackedMessage, error) {
	const page = 512
	var out []unackedMessage
	after := from
	for {
		entries, err := store.Range(ctx, userID, device, after, page)
		if err != nil {
			return nil, fmt.Errorf("read acked entries: %w", err)
		}
		for _, e := range entries {
			if e.InboxSeq > to {
				return out, nil
			}
			if m, ok := unackedOf(e); ok {
				out = append(out, m)
			}
		}
		if len(entries) < page {
			return out, nil
		}
		after = entries[len(entries)-1].InboxSeq
	}
}

// ackThrough sends delivered receipts for the acked messages and then
// deletes the device's entries through to.
func ackThrough(ctx context.Context, store persistence.Store, cl *cluster.Cluster, userID string, device uint32, acked []unackedMessage, from, to uint64) error {
	bySender := make(map[string][]string)
	var byGroup map[string]uint64
	for _, m := range acked {
		if m.groupID != "" {
			if byGroup == nil {
				byGroup = make(map[string]uint64)
			}
			byGroup[m.groupID] = max(byGroup[m.groupID], m.groupSeq)
			continue
		}
		bySender[m.from] = append(bySender[m.from], m.clientMsgID)
	}
	groupDelivered(cl, userID, byGroup)
	for sender, ids := range bySender {
		for chunk := range slices.Chunk(ids, MaxReceiptIDs) {
			key := fmt.Sprintf("delivered/%s/%d/%s/%d", userID, device, chunk[0], to)
			reply, err := cl.Request(ctx, UserGrainID(sender), &courierpb.DeliverReceipt{
				FromUserId:   userID,
				FromDeviceId: device,
				Kind:         courierpb.EntryKind_ENTRY_KIND_DELIVERED,
				ClientMsgIds: chunk,
			}, key)
			if err != nil {
				return fmt.Errorf("delivered receipt to %s: %w", sender, err)
			}
			if r, ok := reply.(*courierpb.DeliverReceiptReply); ok && r.Error != nil {
				if r.Error.Code == courierpb.ErrorCode_NOT_FOUND {
					continue // the sender is gone; nobody to tell
				}
				return fmt.Errorf("delivered receipt to %s: %s", sender, r.Error.Message)
			}
		}
	}
	if err := store.DeleteRange(ctx, userID, device, from, to); err != nil {
		return fmt.Errorf("delete acked entries: %w", err)
	}
	return nil
}

func codeError(code courierpb.ErrorCode, msg string, retryable bool) *courierpb.Error {
	return &courierpb.Error{Code: code, Message: msg, Retryable: retryable}
}

// storeError turns a store failure into the retryable error a sender sees:
// never a fake ack.
func storeError(err error) *courierpb.Error {
	return codeError(courierpb.ErrorCode_UNAVAILABLE, "storage unavailable, retry: "+err.Error(), true)
}
