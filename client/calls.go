package client

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"sync/atomic"
	"time"

	"github.com/google/uuid"

	"github.com/courier-im/courier/protos/courierpb"
)

// Limits the server enforces; checked here so a bad request is refused
// locally instead of counting against the session as a bad frame.
const (
	maxClientMsgIDLen = 128
	maxContentTypeLen = 64
	maxReceiptIDs     = 1024
)

// call is one request waiting for its answer. It is written on the current
// session, again on every new session, again after a request timeout and,
// when retry is set, again after a retryable error, until it is answered or
// its context ends.
type call struct {
	frame     *courierpb.ClientFrame
	retry     bool
	done      chan struct{}
	stop      func() bool  // unregisters the context watch
	lastWrite atomic.Int64 // unix nanoseconds

	// Guarded by Client.mu.
	finished bool
	waiting  bool // a retry is scheduled
	attempts int

	// Set before done is closed.
	res *courierpb.ServerFrame
	err error
}

// start registers a request and writes it if a session is open.
func (c *Client) start(ctx context.Context, body any, retry bool) *call {
	return c.startCall(ctx, body, retry, false)
}

// startCall is start; first marks the frame's first write as its first
// transmission (a send with a client_msg_id this client just chose), so
// the server can skip its durable duplicate check. Every later write of
// the same frame (after a timeout, a retryable error or a reconnect) goes
// without the mark.
func (c *Client) startCall(ctx context.Context, body any, retry, first bool) *call {
	cl := &call{frame: &courierpb.ClientFrame{}, retry: retry, done: make(chan struct{})}
	switch b := body.(type) {
	case *courierpb.ClientFrame_Send:
		cl.frame.Body = b
	case *courierpb.ClientFrame_Ack:
		cl.frame.Body = b
	case *courierpb.ClientFrame_Read:
		cl.frame.Body = b
	case *courierpb.ClientFrame_Ping:
		cl.frame.Body = b
	case *courierpb.ClientFrame_GroupCreate:
		cl.frame.Body = b
	case *courierpb.ClientFrame_GroupUpdate:
		cl.frame.Body = b
	case *courierpb.ClientFrame_GroupSend:
		cl.frame.Body = b
	case *courierpb.ClientFrame_GroupInfo:
		cl.frame.Body = b
	case *courierpb.ClientFrame_GroupList:
		cl.frame.Body = b
	case *courierpb.ClientFrame_GroupMembers:
		cl.frame.Body = b
	case *courierpb.ClientFrame_GroupReceipts:
		cl.frame.Body = b
	case *courierpb.ClientFrame_GroupRead:
		cl.frame.Body = b
	case *courierpb.ClientFrame_ContactsUpdate:
		cl.frame.Body = b
	case *courierpb.ClientFrame_Contacts:
		cl.frame.Body = b
	case *courierpb.ClientFrame_Block:
		cl.frame.Body = b
	case *courierpb.ClientFrame_Privacy:
		cl.frame.Body = b
	case *courierpb.ClientFrame_PushToken:
		cl.frame.Body = b
	case *courierpb.ClientFrame_PresenceSubscribe:
		cl.frame.Body = b
	case *courierpb.ClientFrame_PresenceUnsubscribe:
		cl.frame.Body = b
	case *courierpb.ClientFrame_CallSignal:
		cl.frame.Body = b
	default:
		panic(fmt.Sprintf("client: unknown frame body %T", body))
	}
	if ctx.Done() != nil {
		cl.stop = context.AfterFunc(ctx, func() { c.finish(cl, nil, ctx.Err(), true) })
	}
	c.mu.Lock()
	if cl.finished { // ctx was already done
		c.mu.Unlock()
		return cl
	}
	if c.closed {
		c.mu.Unlock()
		c.finish(cl, nil, ErrClosed, false)
		return cl
	}
	cl.frame.ReqId = c.nextReq.Add(1)
	c.calls[cl.frame.ReqId] = cl
	cn := c.cur
	cl.lastWrite.Store(time.Now().UnixNano())
	c.armJanitorLocked()
	c.mu.Unlock()
	if cn != nil {
		_ = cn.writeFirst(cl.frame, first)
	} else {
		select {
		case c.wake <- struct{}{}:
		default:
		}
	}
	return cl
}

// finish completes a call once.
func (c *Client) finish(cl *call, res *courierpb.ServerFrame, err error, fromCtx bool) {
	c.mu.Lock()
	if cl.finished {
		c.mu.Unlock()
		return
	}
	cl.finished = true
	if cl.frame.ReqId != 0 {
		delete(c.calls, cl.frame.ReqId)
	}
	cl.res, cl.err = res, err
	c.mu.Unlock()
	if !fromCtx && cl.stop != nil {
		cl.stop()
	}
	close(cl.done)
}

// resolve answers the call a response frame is for.
func (c *Client) resolve(f *courierpb.ServerFrame) {
	c.mu.Lock()
	cl := c.calls[f.ReqId]
	c.mu.Unlock()
	e := f.GetError()
	if cl == nil {
		if e != nil && f.ReqId == c.lastAck.Load() {
			// The last ack was not applied: send it again with the next flush.
			c.log.Debug("courier: ack refused", "code", e.GetCode(), "msg", e.GetMessage())
			c.acks.retract()
			if c.acks.hand(0) {
				time.AfterFunc(c.cfg.ackInterval, c.flushAcks)
			}
		}
		return
	}
	if e != nil {
		if e.Retryable && cl.retry {
			c.scheduleRetry(cl, time.Duration(e.GetRetryAfterMs())*time.Millisecond)
			return
		}
		c.finish(cl, nil, errorFromProto(e), false)
		return
	}
	c.finish(cl, f, nil, false)
}

// scheduleRetry writes a call again after a jittered, growing delay, and
// no sooner than the server asked (a rate limit's retry_after_ms).
func (c *Client) scheduleRetry(cl *call, atLeast time.Duration) {
	c.mu.Lock()
	if cl.finished || cl.waiting {
		c.mu.Unlock()
		return
	}
	cl.waiting = true
	cl.attempts++
	d := max(c.retry.delay(cl.attempts), atLeast)
	c.mu.Unlock()
	time.AfterFunc(d, func() {
		c.mu.Lock()
		if cl.finished || c.closed {
			c.mu.Unlock()
			return
		}
		cl.waiting = false
		cn := c.cur
		cl.lastWrite.Store(time.Now().UnixNano())
		c.mu.Unlock()
		if cn != nil {
			_ = cn.write(cl.frame)
		}
	})
}

// armJanitorLocked schedules a sweep for requests whose answer is overdue.
// It runs only while requests wait, so an idle Client never wakes up.
func (c *Client) armJanitorLocked() {
	if c.janitorOn || c.closed {
		return
	}
	c.janitorOn = true
	d := min(max(c.cfg.requestTimeout/4, 50*time.Millisecond), 2*time.Second)
	if c.janitor == nil {
		c.janitor = time.AfterFunc(d, c.sweep)
	} else {
		c.janitor.Reset(d)
	}
}

func (c *Client) sweep() {
	now := time.Now().UnixNano()
	limit := c.cfg.requestTimeout.Nanoseconds()
	c.mu.Lock()
	c.janitorOn = false
	if c.closed {
		c.mu.Unlock()
		return
	}
	cn := c.cur
	var stale []*call
	for _, cl := range c.calls {
		if !cl.waiting && now-cl.lastWrite.Load() > limit {
			stale = append(stale, cl)
		}
	}
	if len(c.calls) > 0 {
		c.armJanitorLocked()
	}
	c.mu.Unlock()
	if cn == nil || len(stale) == 0 {
		return // a new session writes every waiting request anyway
	}
	sortCalls(stale)
	c.log.Debug("courier: re-sending overdue requests", "count", len(stale))
	for _, cl := range stale {
		cl.lastWrite.Store(now)
		if cn.write(cl.frame) != nil {
			return
		}
	}
}

// sortCalls orders calls by req_id, which is the order they were started.
func sortCalls(cs []*call) {
	slices.SortFunc(cs, func(a, b *call) int { return cmp.Compare(a.frame.ReqId, b.frame.ReqId) })
}

// waitingCalls counts requests without an answer yet.
func (c *Client) waitingCalls() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.calls)
}

// SendResult is the single tick: the server stored the message.
type SendResult struct {
	ClientMsgID string
	// StoredAt is when the server first stored the message.
	StoredAt time.Time
	// Duplicate: this client_msg_id had been stored before (a retry).
	Duplicate bool
	// GroupID and GroupSeq are set for SendGroup: the message's place in
	// the group's order.
	GroupID  string
	GroupSeq uint64
}

// SendOption adjusts one Send.
type SendOption func(*courierpb.Send)

// WithContentType sets the content type hint ("text", "image", ...).
func WithContentType(ct string) SendOption {
	return func(s *courierpb.Send) { s.ContentType = ct }
}

// WithDeviceCiphertext sets the ciphertext for one recipient device; other
// devices get the Send's ciphertext.
func WithDeviceCiphertext(deviceID uint32, ciphertext []byte) SendOption {
	return func(s *courierpb.Send) {
		s.PerDevice = append(s.PerDevice, &courierpb.DeviceCiphertext{DeviceId: deviceID, Ciphertext: ciphertext})
	}
}

// WithClientMsgID makes the Send use this client_msg_id instead of a fresh
// UUIDv7 (what SendWithID does).
func WithClientMsgID(id string) SendOption {
	return func(s *courierpb.Send) { s.ClientMsgId = id }
}

// PendingSend is a Send on its way; see SendAsync.
type PendingSend struct {
	id string
	cl *call
	// resend, when set, starts the send again after a failure it can fix
	// (an encrypted send whose device set was stale) and reports whether it
	// did.
	resend func() bool
}

// ClientMsgID is the id the message is sent with.
func (p *PendingSend) ClientMsgID() string { return p.id }

// Done is closed once the result is known.
func (p *PendingSend) Done() <-chan struct{} { return p.cl.done }

// Result waits for the outcome.
func (p *PendingSend) Result() (SendResult, error) {
	<-p.cl.done
	for p.cl.err != nil && p.resend != nil && p.resend() {
		<-p.cl.done
	}
	if p.cl.err != nil {
		return SendResult{ClientMsgID: p.id}, p.cl.err
	}
	ack := p.cl.res.GetSendAck()
	if ack == nil {
		return SendResult{ClientMsgID: p.id}, fmt.Errorf("send %s: unexpected answer %T", p.id, p.cl.res.GetBody())
	}
	return SendResult{ClientMsgID: p.id, StoredAt: time.UnixMilli(ack.StoredAtMs), Duplicate: ack.Duplicate, GroupID: ack.GroupId, GroupSeq: ack.GroupSeq}, nil
}

// Send stores ciphertext in every device inbox of toUserID and returns on
// the single tick. With WithE2EE, ciphertext is the plaintext: the SDK
// encrypts it for each of the recipient's devices and the sender's other
// devices, and handles MISMATCHED_DEVICES by fetching fresh bundles and
// resending with the same client_msg_id. It picks a client_msg_id (UUIDv7) and, on a retryable
// error, a request timeout or a reconnect, sends again with the same id
// until ctx ends, so the message is stored exactly once. Other server
// refusals are returned as *Error.
func (c *Client) Send(ctx context.Context, toUserID string, ciphertext []byte, opts ...SendOption) (SendResult, error) {
	return c.SendAsync(ctx, toUserID, ciphertext, opts...).Result()
}

// SendWithID is Send with a client_msg_id the caller chose, e.g. one it
// persisted before a crash: sending it again never stores a second copy.
func (c *Client) SendWithID(ctx context.Context, toUserID, clientMsgID string, ciphertext []byte, opts ...SendOption) (SendResult, error) {
	return c.SendAsync(ctx, toUserID, ciphertext, append(opts, WithClientMsgID(clientMsgID))...).Result()
}

// SendAsync starts a Send and returns without waiting for the single tick.
// Sends started one after another by one goroutine are written to the
// server in that order, so they are stored in that order unless one has to
// be retried.
func (c *Client) SendAsync(ctx context.Context, toUserID string, ciphertext []byte, opts ...SendOption) *PendingSend {
	s := &courierpb.Send{ToUserId: toUserID, Ciphertext: ciphertext}
	for _, o := range opts {
		o(s)
	}
	// An id the caller chose may have been sent before (persisted across a
	// crash); only one chosen here is known to be new.
	fresh := s.ClientMsgId == ""
	if fresh {
		s.ClientMsgId = newMsgID()
	}
	if err := validateSend(s); err != nil {
		return &PendingSend{id: s.ClientMsgId, cl: failedCall(err)}
	}
	if c.enc != nil {
		// ciphertext is the plaintext: it is encrypted per device here.
		return c.sendEncrypted(ctx, s, ciphertext, fresh)
	}
	return &PendingSend{id: s.ClientMsgId, cl: c.startCall(ctx, &courierpb.ClientFrame_Send{Send: s}, true, fresh)}
}

func newMsgID() string {
	id, err := uuid.NewV7()
	if err != nil {
		return uuid.NewString()
	}
	return id.String()
}

func validateSend(s *courierpb.Send) error {
	if s.ToUserId == "" {
		return invalidArgument("a recipient user id is required")
	}
	return validatePayload(s.ClientMsgId, s.ContentType, s.Ciphertext, len(s.PerDevice))
}

func invalidArgument(msg string) error {
	return &Error{Code: courierpb.ErrorCode_INVALID_ARGUMENT, Message: msg}
}

// validatePayload checks what 1:1 and group sends share, so a bad send
// fails here instead of costing the session an error frame.
func validatePayload(clientMsgID, contentType string, ciphertext []byte, perDevice int) error {
	switch {
	case len(clientMsgID) > maxClientMsgIDLen:
		return invalidArgument(fmt.Sprintf("client_msg_id must be 1..%d bytes", maxClientMsgIDLen))
	case len(contentType) > maxContentTypeLen:
		return invalidArgument(fmt.Sprintf("content_type must be at most %d bytes", maxContentTypeLen))
	case len(ciphertext) == 0 && perDevice == 0:
		return invalidArgument("a message needs a ciphertext")
	}
	return nil
}

// MarkRead tells peerUserID that its messages with these client_msg_ids
// were read (blue ticks). Retryable failures are retried until ctx ends.
// Receipts travel separately from the acknowledgements that produce
// delivered receipts, so a peer may see a read receipt before the delivered
// one: treat read as implying delivered.
func (c *Client) MarkRead(ctx context.Context, peerUserID string, clientMsgIDs ...string) error {
	if peerUserID == "" {
		return &Error{Code: courierpb.ErrorCode_INVALID_ARGUMENT, Message: "a peer user id is required"}
	}
	// Acknowledge what was handed out first, so the server usually stores
	// the delivered receipt (double tick) before the read receipt.
	c.flushAcks()
	for len(clientMsgIDs) > 0 {
		n := min(len(clientMsgIDs), maxReceiptIDs)
		chunk := clientMsgIDs[:n]
		clientMsgIDs = clientMsgIDs[n:]
		cl := c.start(ctx, &courierpb.ClientFrame_Read{Read: &courierpb.ReadReceipt{PeerUserId: peerUserID, ClientMsgIds: chunk}}, true)
		<-cl.done
		if cl.err != nil {
			return fmt.Errorf("mark read: %w", cl.err)
		}
	}
	return nil
}

// Ping measures the round trip to the server over the session.
func (c *Client) Ping(ctx context.Context) (time.Duration, error) {
	start := time.Now()
	cl := c.start(ctx, &courierpb.ClientFrame_Ping{Ping: &courierpb.Ping{ClientTimeMs: start.UnixMilli()}}, false)
	<-cl.done
	if cl.err != nil {
		return 0, fmt.Errorf("ping: %w", cl.err)
	}
	if cl.res.GetPong() == nil {
		return 0, fmt.Errorf("ping: unexpected answer %T", cl.res.GetBody())
	}
	return time.Since(start), nil
}
