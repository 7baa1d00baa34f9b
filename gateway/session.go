package gateway

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/gorilla/websocket"
	"google.golang.org/protobuf/proto"

	"github.com/courier-im/courier/actors"
	"github.com/courier-im/courier/cluster"
	"github.com/courier-im/courier/internal/readiness"
	"github.com/courier-im/courier/protos/courierpb"
)

// handleWS authenticates and upgrades a socket, then hands it to a new
// session actor.
func (g *Gateway) handleWS(w http.ResponseWriter, r *http.Request) {
	// The connect limit comes before the store read it protects.
	claims, ok := g.verifyToken(w, r)
	if !ok || !g.allowHTTPAction(w, r, ActionConnect, claims.UserID) || !g.deviceExists(w, r, claims) {
		return
	}
	var resumeAfter uint64
	if v := r.URL.Query().Get("after"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			writeError(w, http.StatusBadRequest, courierpb.ErrorCode_INVALID_ARGUMENT, "after must be an inbox_seq")
			return
		}
		resumeAfter = n
	}
	cw := &corkingResponseWriter{ResponseWriter: w}
	conn, err := g.upgrader.Upgrade(cw, r, nil)
	if err != nil {
		return // the upgrader already answered the client
	}
	// Frames up to 4x the limit are read and refused with TOO_LARGE, so a
	// client learns what went wrong; beyond that the socket closes with 1009.
	conn.SetReadLimit(int64(g.cfg.MaxFrameBytes) * 4)
	s := newSession(g, conn, cw.br, claims, resumeAfter)
	if key, limited := clientKey(r, g.cfg.Limits.LimitLoopback); limited {
		s.ipKey = key
	}
	if !g.track(s) {
		s.closeWith(websocket.CloseGoingAway, "server shutting down")
		_ = conn.Close()
		return
	}
	if err := g.spawnSession(s); err != nil {
		g.log.Error("spawn session", "err", err)
		g.untrack(s)
		_ = conn.Close()
	}
}

// session is the actor behind one socket. Its reader goroutine decodes
// frames into messages for it, its writer goroutine owns every write to the
// socket, and the actor in between talks to grains without ever waiting.
type session struct {
	g      *Gateway
	id     string
	conn   *websocket.Conn
	codec  codec
	claims Claims
	// ipKey is the client's address for the per-address action limits
	// (actions.go); empty when they leave it alone (loopback).
	ipKey string

	// Read side (park.go). br is the reader gorilla reads frames through;
	// the session swaps its buffer out while the reader is parked.
	br         *bufio.Reader
	reader     atomic.Int32 // readerRunning, readerParked or readerDone
	readyWatch *readiness.Watch
	idleAt     atomic.Int64 // while parked: the gateway clock at which the socket is idle (renew.go)
	noPark     bool         // the poller refused this socket (reader only)
	limit      tokenBucket  // frames the client may send (reader only)
	inPending  atomic.Int64 // bytes of frames read and not yet handled (awaitInboundRoom)

	// closed: the socket is closed (closeWith ran). A flag rather than a
	// cancellable context, which costs every idle socket 190 bytes; what
	// waits on the store is bounded by RequestTimeout and checks it after.
	closed atomic.Bool
	out    *frameQueue
	once   sync.Once

	// Actor state.
	self        *actor.PID
	resumeAfter uint64
	attached    bool
	replaying   bool
	buffered    []*courierpb.InboxEntry
	lastSent    uint64 // highest inbox_seq handed to the writer
	inflight    int
	frameSize   int // wire size of the frame being handled (send-bytes limit)
	// quietAckReq is the request id of the latest quiet ack (quietAck).
	quietAckReq uint64
	abuse       int
	stopping    bool
	// Presence subscriptions of this connection (user ids) and the user's
	// own presence visibility, passed along with them.
	subs       map[string]bool
	visibility courierpb.Visibility
	// renewing: a lease renewal is waiting for its answer.
	renewing bool
	slot     uint8 // the gateway's renewal slot (guarded by g.mu)
}

// outFrame is one item for the writer: a frame, a replay to run, or a
// close. Control travels in its own field, never inside the frame: every
// uint64 is a valid req_id, so no req_id value can mean "close".
type outFrame struct {
	frame  *courierpb.ServerFrame
	replay *replayJob
	close  *closeJob
	// size estimates the bytes the item holds while queued (frameCost).
	size int
}

// frameOverhead is what a queued frame costs besides its ciphertexts:
// the structs, ids and framing. An estimate: the queue's byte bound is a
// memory bound, and measuring with proto.Size would walk every frame on
// the hot path.
const frameOverhead = 256

// frameCost estimates the memory a queued frame holds.
func frameCost(f *courierpb.ServerFrame) int {
	n := frameOverhead
	for _, e := range f.GetDeliver().GetEntries() {
		n += frameOverhead + len(e.Ciphertext)
	}
	return n
}

// closeJob asks the writer to close the socket once everything queued
// before it has gone out.
type closeJob struct {
	code   int
	reason string
}

// replayJob reads a device inbox from the store and writes it out, in order,
// from the writer goroutine so live frames can't overtake it.
type replayJob struct {
	after, through uint64
}

// Messages the reader and writer goroutines send to the session actor.
type (
	inboundFrame struct {
		frame *courierpb.ClientFrame
		size  int32 // bytes on the wire, counted in inPending
	}
	badFrame struct {
		reqID uint64
		code  courierpb.ErrorCode
		msg   string
		wait  time.Duration // RATE_LIMITED: when the frame budget allows one more
	}
	connClosed struct{ err error }
	replayDone struct {
		last uint64
		err  error
	}
	renewLease struct{}
)

func newSession(g *Gateway, conn *websocket.Conn, br *bufio.Reader, claims Claims, resumeAfter uint64) *session {
	var b [12]byte
	_, _ = rand.Read(b[:])
	id := "session/" + hex.EncodeToString(b[:])
	s := &session{
		g:           g,
		id:          id,
		conn:        conn,
		codec:       codec{json: conn.Subprotocol() == SubprotocolJSON},
		claims:      claims,
		br:          br,
		limit:       newTokenBucket(g.cfg.RatePerSec, g.cfg.RateBurst),
		out:         newFrameQueue(g.cfg.SendQueue, g.cfg.SendQueueBytes, &g.queuedBytes, g.cfg.QueuedBytesTotal),
		resumeAfter: resumeAfter,
	}
	if g.poller != nil {
		if sc, ok := rawConn(conn.NetConn()); ok {
			if w, err := g.poller.Watch(sc, s.wake); err == nil {
				s.readyWatch = w
			}
		}
	}
	return s
}

func (s *session) Receive(ctx actor.Context) {
	m, ok := cluster.UnwrapTell(ctx)
	if !ok {
		return
	}
	switch msg := m.(type) {
	case *actor.Started:
		s.self = ctx.Self()
		system := ctx.ActorSystem()
		go s.readLoop()
		// Writers come and go with the queue; warm pooled goroutines spare
		// each one a fresh stack.
		write := func() { s.writeLoop(system) }
		s.out.startWriter = func() { cluster.Go(write) }
		s.attach(ctx)
	case *actor.Stopped:
		s.shutdown()
		// Best effort: the grain also watches the session and drops the
		// attachment when it terminates.
		_ = s.g.cfg.Cluster.Notify(actors.UserGrainID(s.claims.UserID),
			&courierpb.DetachDevice{DeviceId: s.claims.DeviceID, SessionId: s.id}, s.id+"/detach", 0)
	case *cluster.Continuation:
		msg.Run()
	case inboundFrame:
		s.frameSize = int(msg.size)
		s.handleFrame(ctx, msg.frame)
		s.inPending.Add(-int64(msg.size))
	case badFrame:
		if msg.code == courierpb.ErrorCode_RATE_LIMITED {
			s.enqueue(ctx, rateLimitedFrame(msg.reqID, msg.msg, msg.wait))
			return
		}
		s.refuse(ctx, msg.reqID, msg.code, msg.msg)
	case *courierpb.PushEntries:
		s.push(ctx, msg.Entries)
	case *courierpb.AckInboxReply:
		s.quietAckRefused(ctx, msg)
	case *courierpb.SessionReplaced:
		s.replaced(ctx)
	case *courierpb.PresenceUpdate:
		s.enqueueDroppable(ctx, &courierpb.ServerFrame{Body: &courierpb.ServerFrame_Presence{Presence: msg}})
	case *courierpb.PresenceGone:
		s.enqueueDroppable(ctx, &courierpb.ServerFrame{Body: &courierpb.ServerFrame_PresenceGone{PresenceGone: msg}})
	case *courierpb.TypingNotice:
		s.enqueueDroppable(ctx, &courierpb.ServerFrame{Body: &courierpb.ServerFrame_Typing{Typing: msg}})
	case *courierpb.CallEvent:
		s.callEvent(ctx, msg)
	case replayDone:
		s.replayFinished(ctx, msg)
	case renewLease:
		s.renew(ctx)
	case connClosed:
		ctx.Stop(ctx.Self())
	}
}

// attach asks the User grain for this device's inbox; the answer says up to
// where the store holds entries to replay before live pushes.
func (s *session) attach(ctx actor.Context) {
	msg := &courierpb.AttachDevice{
		DeviceId:       s.claims.DeviceID,
		SessionAddress: s.self.Address,
		SessionId:      s.id,
		ResumeAfter:    s.resumeAfter,
	}
	s.request(ctx, s.claims.UserID, msg, s.id, func(reply proto.Message, err error) {
		r, _ := reply.(*courierpb.AttachDeviceReply)
		if err == nil && r.GetError() != nil {
			err = fmt.Errorf("%s: %s", r.Error.Code, r.Error.Message)
		}
		if err != nil {
			s.logger().Warn("attach failed", "err", err)
			code := CloseUnavailable
			if r.GetError().GetCode() == courierpb.ErrorCode_NOT_FOUND || r.GetError().GetCode() == courierpb.ErrorCode_FORBIDDEN {
				code = CloseUnauthorized
			}
			s.closeWith(code, "cannot attach inbox: "+err.Error())
			ctx.Stop(ctx.Self())
			return
		}
		s.attached = true
		s.visibility = r.PresenceVisibility
		s.enqueue(ctx, &courierpb.ServerFrame{Body: &courierpb.ServerFrame_Attached{Attached: &courierpb.Attached{
			UserId: s.claims.UserID, DeviceId: s.claims.DeviceID, ResumeAfter: s.resumeAfter, ReplayThrough: r.ReplayThrough,
			MaxFrameBytes: uint32(s.g.cfg.MaxFrameBytes), // clients refuse larger sends themselves
		}}})
		s.lastSent = s.resumeAfter
		s.startReplay(ctx, r.ReplayThrough)
	})
}

func (s *session) startReplay(ctx actor.Context, through uint64) {
	s.replaying = true
	s.tryEnqueue(ctx, outFrame{replay: &replayJob{after: s.lastSent, through: through}})
}

func (s *session) replayFinished(ctx actor.Context, msg replayDone) {
	if msg.err != nil {
		s.logger().Warn("inbox replay failed", "err", msg.err)
		s.closeWith(CloseUnavailable, "inbox replay failed, reconnect")
		ctx.Stop(ctx.Self())
		return
	}
	s.replaying = false
	s.lastSent = max(s.lastSent, msg.last)
	buffered := s.buffered
	s.buffered = nil
	s.push(ctx, buffered)
}

// push hands live entries to the writer in inbox order, dropping any the
// replay already sent; while a replay runs they wait behind it.
func (s *session) push(ctx actor.Context, entries []*courierpb.InboxEntry) {
	if s.replaying || !s.attached {
		s.buffered = append(s.buffered, entries...)
		if len(s.buffered) > 4*s.g.cfg.SendQueue {
			s.slowConsumer(ctx)
		}
		return
	}
	fresh := entries[:0:0]
	for _, e := range entries {
		if e.InboxSeq > s.lastSent {
			s.lastSent = e.InboxSeq
			if drop := s.g.cfg.DropDeliveryForTest; drop != nil && drop(e) {
				continue
			}
			fresh = append(fresh, e)
		}
	}
	if len(fresh) > 0 {
		s.enqueue(ctx, &courierpb.ServerFrame{Body: &courierpb.ServerFrame_Deliver{Deliver: &courierpb.Deliver{Entries: fresh}}})
	}
}

// renew re-attaches periodically (the gateway's renewer asks once per
// LeaseRenew): it keeps the grain from passivating while the device is
// online and repairs the attachment if the grain restarted (then whatever it
// stored meanwhile is replayed from the store).
func (s *session) renew(ctx actor.Context) {
	if s.stopping || !s.attached || s.renewing {
		return
	}
	s.renewing = true
	msg := &courierpb.AttachDevice{DeviceId: s.claims.DeviceID, SessionAddress: s.self.Address, SessionId: s.id, Renew: true}
	s.request(ctx, s.claims.UserID, msg, s.id, func(reply proto.Message, err error) {
		s.renewing = false
		r, _ := reply.(*courierpb.AttachDeviceReply)
		if r.GetReplaced() {
			s.replaced(ctx)
			return
		}
		if err == nil && r.GetError() == nil && !r.WasAttached && !s.replaying {
			s.startReplay(ctx, r.ReplayThrough)
		}
		if err == nil && r.GetError() == nil {
			// Another device of the user may have changed its privacy.
			s.visibility = r.PresenceVisibility
		}
		// Presence subscriptions are leases too: a grain that moved or
		// passivated learns them again.
		s.renewPresence(ctx)
	})
}

// replaced closes a session whose device opened a newer one.
func (s *session) replaced(ctx actor.Context) {
	if s.stopping {
		return
	}
	s.logger().Info("session replaced by a newer one of its device")
	s.closeAfterFlush(ctx, CloseReplaced, "replaced by a newer connection of this device")
}

// logger is built when something is logged: an idle session keeps no
// preformatted logger.
func (s *session) logger() *slog.Logger {
	return s.g.log.With("session", s.id, "user_id", s.claims.UserID, "device_id", s.claims.DeviceID)
}

func (s *session) handleFrame(ctx actor.Context, f *courierpb.ClientFrame) {
	// Every string in the frame is bounded (actors/limits.go) before any of
	// it can become a grain's identity, a map key or a stored entry.
	if err := actors.CheckFrameBounds(f); err != nil {
		s.refuse(ctx, f.ReqId, courierpb.ErrorCode_INVALID_ARGUMENT, err.Error())
		return
	}
	switch body := f.Body.(type) {
	case *courierpb.ClientFrame_Send:
		s.send(ctx, f.ReqId, body.Send, f.FirstTransmission)
	case *courierpb.ClientFrame_Ack:
		s.ack(ctx, f.ReqId, body.Ack)
	case *courierpb.ClientFrame_Read:
		s.read(ctx, f.ReqId, body.Read)
	case *courierpb.ClientFrame_Ping:
		s.enqueue(ctx, &courierpb.ServerFrame{ReqId: f.ReqId, Body: &courierpb.ServerFrame_Pong{Pong: &courierpb.Pong{
			ClientTimeMs: body.Ping.ClientTimeMs, ServerTimeMs: time.Now().UnixMilli(),
		}}})
	default:
		if s.handleGroupFrame(ctx, f) || s.handleSocialFrame(ctx, f) || s.handleCallFrame(ctx, f) {
			return
		}
		s.refuse(ctx, f.ReqId, courierpb.ErrorCode_UNKNOWN_FRAME, "frame has no body this server knows")
	}
}

func (s *session) admit(ctx actor.Context, reqID uint64) bool {
	if s.inflight >= s.g.cfg.MaxInflight {
		s.enqueue(ctx, frameError(reqID, courierpb.ErrorCode_RATE_LIMITED, "too many unanswered requests; wait for acks", true))
		return false
	}
	return true
}

func (s *session) send(ctx actor.Context, reqID uint64, m *courierpb.Send, first bool) {
	switch {
	case m.ToUserId == "":
		s.refuse(ctx, reqID, courierpb.ErrorCode_INVALID_ARGUMENT, "to_user_id is required")
		return
	case m.ClientMsgId == "" || len(m.ClientMsgId) > actors.MaxClientMsgIDLen:
		s.refuse(ctx, reqID, courierpb.ErrorCode_INVALID_ARGUMENT, fmt.Sprintf("client_msg_id must be 1..%d bytes", actors.MaxClientMsgIDLen))
		return
	case len(m.Ciphertext) == 0 && len(m.PerDevice) == 0:
		s.refuse(ctx, reqID, courierpb.ErrorCode_INVALID_ARGUMENT, "a message needs a ciphertext")
		return
	}
	if s.g.cfg.RequireE2EE {
		if why := e2eeRefusal(m); why != "" {
			s.refuse(ctx, reqID, courierpb.ErrorCode_INVALID_ARGUMENT, why)
			return
		}
	}
	if !s.admit(ctx, reqID) || !s.limitAction(ctx, reqID, ActionSend, 1) || !s.limitAction(ctx, reqID, ActionSendBytes, s.frameSize) {
		return
	}
	s.inflight++
	s.deliver(ctx, reqID, m, first)
}

// deliver stores m in the recipient's inboxes and answers the frame; the
// caller counted it in flight. An end-to-end encrypted send (per_device)
// also stores the transcript for the sender's other devices, after the
// recipient: the recipient's grain is the authority on whether the message
// exists, so a refused send never leaves a transcript behind, and a retry
// after MISMATCHED_DEVICES (same client_msg_id) is a duplicate for the
// recipient and completes the transcript.
func (s *session) deliver(ctx actor.Context, reqID uint64, m *courierpb.Send, first bool) {
	msg := &courierpb.DeliverMessage{FromUserId: s.claims.UserID, FromDeviceId: s.claims.DeviceID, Send: m, FirstTransmission: first}
	// No idempotency key: the grain recognises a repeated send by its
	// client_msg_id, and a key costs a header map per request.
	s.requestRetrying(ctx, m.ToUserId, msg, "", 0, func(reply proto.Message, err error) {
		r, _ := reply.(*courierpb.DeliverMessageReply)
		if err == nil && r.GetError() == nil && len(m.PerDevice) > 0 {
			s.transcript(ctx, reqID, m, r)
			return
		}
		s.inflight--
		switch {
		case err != nil:
			s.enqueue(ctx, frameError(reqID, courierpb.ErrorCode_UNAVAILABLE, "message not stored, retry with the same client_msg_id", true))
		case r.GetError() != nil:
			s.enqueue(ctx, &courierpb.ServerFrame{ReqId: reqID, Body: &courierpb.ServerFrame_Error{Error: r.Error}})
		default:
			s.enqueue(ctx, &courierpb.ServerFrame{ReqId: reqID, Body: &courierpb.ServerFrame_SendAck{SendAck: &courierpb.SendAck{
				ClientMsgId: m.ClientMsgId, StoredAtMs: r.StoredAtMs, Duplicate: r.Duplicate,
			}}})
		}
	})
}

// transcript stores the sender's other devices' copies once the recipient
// has the message, then answers the frame.
func (s *session) transcript(ctx actor.Context, reqID uint64, m *courierpb.Send, stored *courierpb.DeliverMessageReply) {
	tr := &courierpb.StoreTranscript{FromDeviceId: s.claims.DeviceID, ToUserId: m.ToUserId, ClientMsgId: m.ClientMsgId,
		PerDevice: m.SenderDevices, ContentType: m.ContentType}
	s.requestRetrying(ctx, s.claims.UserID, tr, s.claims.UserID+"/sent/"+m.ClientMsgId, 0, func(reply proto.Message, err error) {
		s.inflight--
		r, _ := reply.(*courierpb.StoreTranscriptReply)
		switch {
		case err != nil || r == nil:
			s.enqueue(ctx, frameError(reqID, courierpb.ErrorCode_UNAVAILABLE, "message not fully stored, retry with the same client_msg_id", true))
		case r.Error != nil:
			s.enqueue(ctx, &courierpb.ServerFrame{ReqId: reqID, Body: &courierpb.ServerFrame_Error{Error: r.Error}})
		default:
			s.enqueue(ctx, &courierpb.ServerFrame{ReqId: reqID, Body: &courierpb.ServerFrame_SendAck{SendAck: &courierpb.SendAck{
				ClientMsgId: m.ClientMsgId, StoredAtMs: stored.StoredAtMs, Duplicate: stored.Duplicate,
			}}})
		}
	})
}

func (s *session) ack(ctx actor.Context, reqID uint64, m *courierpb.Ack) {
	if !s.admit(ctx, reqID) {
		return
	}
	if m.Quiet {
		s.quietAck(ctx, reqID, m.UpToInboxSeq)
		return
	}
	s.inflight++
	msg := &courierpb.AckInbox{DeviceId: s.claims.DeviceID, UpToInboxSeq: m.UpToInboxSeq}
	// An ack is idempotent by itself (through a number): no key.
	s.requestRetrying(ctx, s.claims.UserID, msg, "", 0, func(reply proto.Message, err error) {
		s.inflight--
		r, _ := reply.(*courierpb.AckInboxReply)
		switch {
		case err != nil:
			s.enqueue(ctx, frameError(reqID, courierpb.ErrorCode_UNAVAILABLE, "ack not applied, send it again", true))
		case r.GetError() != nil:
			s.enqueue(ctx, &courierpb.ServerFrame{ReqId: reqID, Body: &courierpb.ServerFrame_Error{Error: r.Error}})
		case !m.Quiet:
			s.enqueue(ctx, &courierpb.ServerFrame{ReqId: reqID, Body: &courierpb.ServerFrame_AckOk{AckOk: &courierpb.AckOk{UpToInboxSeq: m.UpToInboxSeq}}})
		}
	})
}

// quietAck posts an ack that wants no answer (the SDK's default) to the
// grain without a reply slot or a timer: the grain answers only a refusal,
// which comes back as an AckInboxReply and goes out under the request id of
// the latest quiet ack (the SDK then sends its last ack again). Acks are
// cumulative, so one lost with a node is covered by the next one, or by the
// resume point of the next connection.
func (s *session) quietAck(ctx actor.Context, reqID, upTo uint64) {
	msg := &courierpb.AckInbox{DeviceId: s.claims.DeviceID, UpToInboxSeq: upTo, Quiet: true}
	if err := s.g.cfg.Cluster.Post(actors.UserGrainID(s.claims.UserID), msg, "", s.g.cfg.RequestTimeout, s.self); err != nil {
		s.enqueue(ctx, frameError(reqID, courierpb.ErrorCode_UNAVAILABLE, "ack not applied, send it again", true))
		return
	}
	s.quietAckReq = reqID
}

// quietAckRefused answers a quiet ack the grain did not apply.
func (s *session) quietAckRefused(ctx actor.Context, r *courierpb.AckInboxReply) {
	if r.GetError() == nil {
		return
	}
	s.enqueue(ctx, &courierpb.ServerFrame{ReqId: s.quietAckReq, Body: &courierpb.ServerFrame_Error{Error: r.Error}})
}

func (s *session) read(ctx actor.Context, reqID uint64, m *courierpb.ReadReceipt) {
	if m.PeerUserId == "" || len(m.ClientMsgIds) == 0 || len(m.ClientMsgIds) > actors.MaxReceiptIDs {
		s.refuse(ctx, reqID, courierpb.ErrorCode_INVALID_ARGUMENT, fmt.Sprintf("a read receipt names a peer and 1..%d client_msg_ids", actors.MaxReceiptIDs))
		return
	}
	if !s.admit(ctx, reqID) {
		return
	}
	s.inflight++
	// To the reader's own grain, which knows what it was delivered: it
	// passes the receipt on to the peer only if the peer sent every named
	// message to this user (actors/user_receipts.go), and answers FORBIDDEN
	// otherwise.
	msg := &courierpb.SendReadReceipt{FromDeviceId: s.claims.DeviceID, PeerUserId: m.PeerUserId, ClientMsgIds: m.ClientMsgIds}
	key := fmt.Sprintf("%s/read/%d", s.id, reqID)
	s.requestRetrying(ctx, s.claims.UserID, msg, key, 0, func(reply proto.Message, err error) {
		s.inflight--
		r, _ := reply.(*courierpb.DeliverReceiptReply)
		switch {
		case err != nil:
			s.enqueue(ctx, frameError(reqID, courierpb.ErrorCode_UNAVAILABLE, "receipt not stored, send it again", true))
		case r.GetError() != nil:
			s.enqueue(ctx, &courierpb.ServerFrame{ReqId: reqID, Body: &courierpb.ServerFrame_Error{Error: r.Error}})
		default:
			s.enqueue(ctx, &courierpb.ServerFrame{ReqId: reqID, Body: &courierpb.ServerFrame_ReadOk{ReadOk: &courierpb.ReadOk{}}})
		}
	})
}

// requestRetrying sends a grain request and retries cluster-level failures
// (grain moving, timed out) with the same idempotency key, so a retry is
// never applied twice.
func (s *session) requestRetrying(ctx actor.Context, userID string, msg proto.Message, key string, attempt int, done func(proto.Message, error)) {
	s.request(ctx, userID, msg, key, func(reply proto.Message, err error) {
		if err != nil && attempt < s.g.cfg.RequestRetries && !s.stopping {
			s.requestRetrying(ctx, userID, asResend(msg), key, attempt+1, done)
			return
		}
		done(reply, err)
	})
}

// asResend is msg as a later attempt must carry it. An attempt that timed
// out may still have been stored (by a grain that has since moved or
// restarted), so a resend of a first transmission must not skip the
// grain's durable duplicate check. The original stays untouched: a local
// grain may still be reading it.
func asResend(msg proto.Message) proto.Message {
	switch m := msg.(type) {
	case *courierpb.DeliverMessage:
		if m.FirstTransmission {
			c := proto.Clone(m).(*courierpb.DeliverMessage)
			c.FirstTransmission = false
			return c
		}
	case *courierpb.SendGroupMessage:
		if m.FirstTransmission {
			c := proto.Clone(m).(*courierpb.SendGroupMessage)
			c.FirstTransmission = false
			return c
		}
	}
	return msg
}

func (s *session) request(ctx actor.Context, userID string, msg proto.Message, key string, done func(proto.Message, error)) {
	s.g.cfg.Cluster.RequestAsync(ctx, actors.UserGrainID(userID), msg, key, s.g.cfg.RequestTimeout, done)
}

// refuse answers a request the session will not carry out. Frames that are
// not the protocol at all (undecodable, unknown, oversized) count as abuse,
// and a client that keeps sending them is disconnected; a well-formed but
// invalid or rate-limited request is only answered.
func (s *session) refuse(ctx actor.Context, reqID uint64, code courierpb.ErrorCode, msg string) {
	s.enqueue(ctx, frameError(reqID, code, msg, code == courierpb.ErrorCode_RATE_LIMITED))
	switch code {
	case courierpb.ErrorCode_BAD_FRAME, courierpb.ErrorCode_UNKNOWN_FRAME, courierpb.ErrorCode_TOO_LARGE:
	default:
		return
	}
	s.abuse++
	if s.abuse >= s.g.cfg.MaxAbuse && !s.stopping {
		s.logger().Info("closing abusive session", "bad_frames", s.abuse)
		s.closeAfterFlush(ctx, CloseAbuse, "too many bad frames")
	}
}

// enqueue hands a frame to the writer without waiting. A full queue means
// the client is not reading: the session closes and the client resumes from
// its inbox later, so the grain behind it never waits.
func (s *session) enqueue(ctx actor.Context, f *courierpb.ServerFrame) bool {
	return s.tryEnqueue(ctx, outFrame{frame: f, size: frameCost(f)})
}

func (s *session) tryEnqueue(ctx actor.Context, f outFrame) bool {
	if s.stopping {
		return false
	}
	if s.out.push(f) {
		return true
	}
	s.slowConsumer(ctx)
	return false
}

func (s *session) slowConsumer(ctx actor.Context) {
	if s.stopping {
		return
	}
	s.logger().Info("closing slow consumer", "queue", s.out.len(), "queued_bytes", s.out.queuedBytes(), "node_queued_bytes", s.g.queuedBytes.Load())
	s.stopping = true
	s.closeWith(CloseSlowConsumer, "send queue full; reconnect and resume")
	ctx.Stop(ctx.Self())
}

// closeAfterFlush lets frames already queued (the error that explains the
// close) go out before the close frame.
func (s *session) closeAfterFlush(ctx actor.Context, code int, reason string) {
	s.stopping = true
	if !s.out.push(outFrame{close: &closeJob{code: code, reason: reason}}) {
		s.closeWith(code, reason)
		ctx.Stop(ctx.Self())
	}
}

// closeWith sends a close frame and closes the socket. Safe from any
// goroutine, any number of times.
func (s *session) closeWith(code int, reason string) {
	s.once.Do(func() {
		if sendableCloseCode(code) {
			msg := websocket.FormatCloseMessage(code, closeReason(reason))
			_ = s.conn.WriteControl(websocket.CloseMessage, msg, time.Now().Add(time.Second))
		}
		_ = s.conn.Close()
		s.closed.Store(true)
		s.unpark()
	})
}

// closeNoFrame asks closeWith to drop the connection without a close frame.
const closeNoFrame = 0

// maxCloseReason: a close frame is a control frame, whose payload is at
// most 125 bytes, two of them the code. A longer reason (one quoting an
// error) would fail to send, and the client would see no close code at all.
const maxCloseReason = 123

// closeReason cuts reason to maxCloseReason bytes, at a rune boundary (the
// reason must be UTF-8).
func closeReason(reason string) string {
	if len(reason) <= maxCloseReason {
		return reason
	}
	cut := maxCloseReason
	for cut > 0 && !utf8.RuneStart(reason[cut]) {
		cut--
	}
	return reason[:cut]
}

// sendableCloseCode: the codes RFC 6455 (section 7.4) lets an endpoint put
// in a close frame. 1005, 1006 and 1015 are reserved for reporting what
// happened locally, and anything else below 3000 is the RFC's to assign.
func sendableCloseCode(code int) bool {
	switch code {
	case websocket.CloseNormalClosure, websocket.CloseGoingAway, websocket.CloseProtocolError,
		websocket.CloseUnsupportedData, websocket.CloseInvalidFramePayloadData,
		websocket.ClosePolicyViolation, websocket.CloseMessageTooBig,
		websocket.CloseMandatoryExtension, websocket.CloseInternalServerErr,
		websocket.CloseServiceRestart, websocket.CloseTryAgainLater:
		return true
	}
	return code >= 3000 && code <= 4999
}

func (s *session) shutdown() {
	s.closeWith(websocket.CloseNormalClosure, "")
	s.out.release()
	s.g.untrack(s)
}

// readLoop decodes frames until the socket fails or stays silent long
// enough to park (park.go); it never blocks on the actor (sends to a
// mailbox don't wait).
func (s *session) readLoop() {
	system := s.g.system
	for {
		if s.br.Buffered() == 0 {
			parked, err := s.awaitData()
			if parked {
				return
			}
			if err != nil {
				s.readFailed(err)
				return
			}
		} else {
			// A frame has begun: all of it must arrive within the idle
			// timeout (awaitData set that deadline when it waited).
			_ = s.conn.SetReadDeadline(time.Now().Add(s.g.cfg.IdleTimeout))
		}
		if err := s.skipControlFrames(); err != nil {
			s.readFailed(err)
			return
		}
		if s.br.Buffered() == 0 {
			continue
		}
		typ, data, buf, err := s.readFrame()
		if err != nil {
			s.readFailed(err)
			return
		}
		if len(data) > s.g.cfg.MaxFrameBytes {
			releaseReadBuffer(buf)
			system.Root.Send(s.self, badFrame{code: courierpb.ErrorCode_TOO_LARGE, msg: fmt.Sprintf("frame is %d bytes, limit %d", len(data), s.g.cfg.MaxFrameBytes)})
			continue
		}
		// Every frame spends the budgets, garbage too, before it costs a
		// decode's allocations.
		size := len(data)
		wait, why := s.frameBudget(size)
		f, err := s.codec.decode(typ, data)
		releaseReadBuffer(buf) // decoding copied what it keeps
		switch {
		case err != nil:
			system.Root.Send(s.self, badFrame{code: courierpb.ErrorCode_BAD_FRAME, msg: err.Error()})
		case wait > 0:
			system.Root.Send(s.self, badFrame{reqID: f.ReqId, code: courierpb.ErrorCode_RATE_LIMITED, msg: why, wait: wait})
		default:
			system.Root.Send(s.self, inboundFrame{frame: f, size: int32(size)})
			s.awaitInboundRoom(size)
			continue
		}
		if wait > 0 {
			// Read nothing more until a frame could pass: a flood then
			// waits in the socket (TCP slows the sender) instead of
			// costing an answer per frame, so a connection costs at most
			// twice its frame rate however fast it writes.
			time.Sleep(wait)
		}
	}
}

// maxInboundPending bounds the bytes of frames the reader has handed to
// the session actor and it has not handled yet: a client writing faster
// than its session works would otherwise queue them in the mailbox
// without bound.
const maxInboundPending = 1 << 20

// frameBudget takes a token for one frame of size bytes from the
// connection's bucket and its address's frame and byte buckets; when one
// is empty it says how long until the frame could pass, and which limit
// it was.
func (s *session) frameBudget(size int) (time.Duration, string) {
	now := time.Now()
	if !s.limit.allow(now) {
		return max(s.limit.retryAfter(now), time.Microsecond), "too many frames from this connection"
	}
	if s.ipKey != "" {
		if ok, wait := s.g.limits.framesIP.allow(s.ipKey, now); !ok {
			return max(wait, time.Microsecond), "too many frames from this address"
		}
		// A frame larger than the burst (limits this low are the
		// operator's choice) is let through rather than refused forever.
		if l := s.g.limits.bytesIP; l.fits(size) {
			if ok, wait := l.allowN(s.ipKey, size, now); !ok {
				return max(wait, time.Microsecond), "too many bytes from this address"
			}
		}
	}
	return 0, ""
}

// awaitInboundRoom stops reading while the actor is more than
// maxInboundPending behind, until it has caught up to half of it.
func (s *session) awaitInboundRoom(size int) {
	if s.inPending.Add(int64(size)) <= maxInboundPending {
		return
	}
	for s.inPending.Load() > maxInboundPending/2 && !s.closed.Load() {
		time.Sleep(time.Millisecond)
	}
}

// awaitData waits for the next byte from the client. After ParkAfter of
// silence it parks the reader (true: the caller must return); without a
// poller it waits the whole idle timeout. When a byte arrives, the read
// deadline bounds the rest of its frame: the idle timeout from the start
// of the wait, or from the first byte after a wait as short as ParkAfter.
func (s *session) awaitData() (parked bool, err error) {
	wait := s.g.cfg.IdleTimeout
	canPark := s.readyWatch != nil && !s.noPark && s.g.cfg.ParkAfter > 0 && s.g.cfg.ParkAfter < wait
	if canPark {
		wait = s.g.cfg.ParkAfter
	}
	_ = s.conn.SetReadDeadline(time.Now().Add(wait))
	_, err = s.br.Peek(1)
	if err == nil && canPark {
		_ = s.conn.SetReadDeadline(time.Now().Add(s.g.cfg.IdleTimeout))
	}
	var ne net.Error
	if err != nil && canPark && errors.As(err, &ne) && ne.Timeout() {
		if s.park(s.g.cfg.IdleTimeout - wait) {
			return true, nil
		}
		return s.awaitData() // could not park: noPark is set, wait it out here
	}
	return false, err
}

// readFailed ends the read side and tells the actor.
func (s *session) readFailed(err error) {
	var ne net.Error
	switch {
	case errors.As(err, &ne) && ne.Timeout():
		s.closeWith(CloseIdle, idleReason)
	case errors.Is(err, websocket.ErrReadLimit):
		// The library has sent close 1009. Closing now, with the rest
		// of the frame unread, would reset the connection and the
		// client could lose that close frame: drain briefly first.
		nc := s.conn.NetConn()
		_ = nc.SetReadDeadline(time.Now().Add(time.Second))
		_, _ = io.Copy(io.Discard, io.LimitReader(nc, 64<<20))
	}
	s.reader.Store(readerDone)
	s.g.system.Root.Send(s.self, connClosed{err: err})
}

// idleReason is the close reason of a socket silent for the idle timeout.
const idleReason = "idle timeout: ping at least every 30s"

// readBuffers hold one frame while it is decoded. Pooled rather than one
// per session: an idle session keeps none, and a busy one does not
// allocate a growing buffer per frame as websocket.ReadMessage does.
var readBuffers = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// readBufferKeepMax: buffers that grew past this (a large frame) are not
// pooled again.
const readBufferKeepMax = 64 << 10

// readFrame reads the next message into a pooled buffer; data is valid
// until releaseReadBuffer(buf).
func (s *session) readFrame() (typ int, data []byte, buf *bytes.Buffer, err error) {
	typ, r, err := s.conn.NextReader()
	if err != nil {
		return 0, nil, nil, err
	}
	buf = readBuffers.Get().(*bytes.Buffer)
	buf.Reset()
	if _, err := buf.ReadFrom(r); err != nil {
		releaseReadBuffer(buf)
		return 0, nil, nil, err
	}
	return typ, buf.Bytes(), buf, nil
}

func releaseReadBuffer(buf *bytes.Buffer) {
	if buf.Cap() <= readBufferKeepMax {
		readBuffers.Put(buf)
	}
}

// writeLoop owns every data write to the socket, including inbox replays,
// so frames leave in the order the actor queued them. It runs while the
// queue has items (see frameQueue) and returns when it is drained. Deliver frames queued
// back to back are packed into one frame: under load that saves a syscall
// and a frame per entry, and when idle it costs nothing. The frames it
// finds queued together leave in one write (corkedConn), sent before the
// writer stops or waits for the store.
func (s *session) writeLoop(system *actor.ActorSystem) {
	var carry *outFrame
	for {
		var item outFrame
		if carry != nil {
			item, carry = *carry, nil
		} else {
			var ok bool
			if item, ok = s.out.pop(); !ok {
				if err := s.uncork(); err != nil {
					s.writeFailed(system, err)
					return
				}
				if item, ok = s.out.popOrStop(); !ok {
					return // drained: the next push starts a writer again
				}
			}
		}
		if s.closed.Load() {
			s.out.closeWriters()
			return // the socket is closed; nothing queued can go out
		}
		s.cork()
		var err error
		switch {
		case item.replay != nil:
			var last uint64
			last, err = s.replay(item.replay)
			system.Root.Send(s.self, replayDone{last: last, err: err})
			if errors.Is(err, errStoreReplay) {
				err = nil
			}
		case item.frame.GetDeliver() != nil:
			carry = s.packDelivers(item.frame)
			err = s.write(item.frame)
		case item.close != nil:
			// closeWith's Close flushes what is corked before the close frame.
			s.out.closeWriters()
			s.closeWith(item.close.code, item.close.reason)
			system.Root.Send(s.self, connClosed{})
			return
		default:
			err = s.write(item.frame)
		}
		if err != nil {
			s.writeFailed(system, err)
			return
		}
	}
}

// writeFailed ends the session after a failed write. A frame the server
// could not encode is its own fault (1011); a failed write means the
// socket is gone, so no close frame is attempted (1006, "abnormal", is
// what the client's library reports then; RFC 6455 forbids sending it).
func (s *session) writeFailed(system *actor.ActorSystem, err error) {
	s.out.closeWriters()
	code := closeNoFrame
	if errors.Is(err, errEncode) {
		code = websocket.CloseInternalServerErr
	}
	s.closeWith(code, "")
	system.Root.Send(s.self, connClosed{err: err})
}

// cork holds the writer's next writes back until uncork.
func (s *session) cork() {
	if cc, ok := s.conn.NetConn().(*corkedConn); ok {
		cc.cork()
	}
}

// uncork sends what the writer has corked.
func (s *session) uncork() error {
	if cc, ok := s.conn.NetConn().(*corkedConn); ok {
		return cc.uncork(time.Now().Add(s.g.cfg.WriteTimeout))
	}
	return nil
}

// Limits of one packed Deliver frame.
const (
	maxPackedEntries = 128
	maxPackedBytes   = 512 << 10
)

// packEntries splits entries into Deliver-sized batches.
func packEntries(entries []*courierpb.InboxEntry) [][]*courierpb.InboxEntry {
	var out [][]*courierpb.InboxEntry
	start, size := 0, 0
	for i, e := range entries {
		if i > start && (i-start == maxPackedEntries || size+len(e.Ciphertext) > maxPackedBytes) {
			out = append(out, entries[start:i])
			start, size = i, 0
		}
		size += len(e.Ciphertext)
	}
	if start < len(entries) {
		out = append(out, entries[start:])
	}
	return out
}

// packDelivers appends the Delivers already queued behind f to it and
// returns the first queued item that is not one (nil if none).
func (s *session) packDelivers(f *courierpb.ServerFrame) *outFrame {
	d := f.GetDeliver()
	size := 0
	for _, e := range d.Entries {
		size += len(e.Ciphertext)
	}
	for len(d.Entries) < maxPackedEntries && size < maxPackedBytes {
		next, ok := s.out.pop()
		if !ok {
			return nil
		}
		nd := next.frame.GetDeliver()
		if nd == nil || len(d.Entries)+len(nd.Entries) > maxPackedEntries {
			return &next
		}
		d.Entries = append(d.Entries, nd.Entries...)
		for _, e := range nd.Entries {
			size += len(e.Ciphertext)
		}
	}
	return nil
}

var errStoreReplay = errors.New("replay read failed")

// errEncode: the server could not encode a frame of its own.
var errEncode = errors.New("encode frame")

func (s *session) write(f *courierpb.ServerFrame) error {
	typ, b, err := s.codec.encode(f)
	if err != nil {
		return fmt.Errorf("%w: %w", errEncode, err)
	}
	_ = s.conn.SetWriteDeadline(time.Now().Add(s.g.cfg.WriteTimeout))
	return s.conn.WriteMessage(typ, b)
}

// replay writes the stored entries in (after, through] and returns the last
// inbox_seq written.
func (s *session) replay(job *replayJob) (uint64, error) {
	const page = 256
	last, after := job.after, job.after
	for after < job.through {
		if s.closed.Load() {
			return last, net.ErrClosed
		}
		ctx, cancel := context.WithTimeout(context.Background(), s.g.cfg.RequestTimeout)
		entries, err := s.g.cfg.Store.Range(ctx, s.claims.UserID, s.claims.DeviceID, after, page)
		cancel()
		if err != nil {
			return last, fmt.Errorf("%w: %w", errStoreReplay, err)
		}
		n := 0
		for n < len(entries) && entries[n].InboxSeq <= job.through {
			n++
		}
		for _, batch := range packEntries(entries[:n]) {
			if err := s.write(&courierpb.ServerFrame{Body: &courierpb.ServerFrame_Deliver{Deliver: &courierpb.Deliver{Entries: batch}}}); err != nil {
				return last, err
			}
			last = batch[len(batch)-1].InboxSeq
		}
		// The page goes out before the next store read.
		if err := s.uncork(); err != nil {
			return last, err
		}
		s.cork()
		if n < len(entries) {
			return last, nil
		}
		if len(entries) < page {
			break
		}
		after = entries[len(entries)-1].InboxSeq
	}
	return last, nil
}
