package client

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	"github.com/courier-im/courier/protos/courierpb"
)

// errOverflow ends a connection whose entries the application did not take.
var errOverflow = errors.New("entry buffer full: application is not reading Entries")

// Close codes the gateway uses (gateway/errors.go).
const (
	closeUnauthorized = 4001
	closeSlowConsumer = 4008
	closeAbuse        = 4009
	closeReplaced     = 4010
)

// Client is one signed-in device: a WebSocket session that reconnects and
// resumes by itself. Its methods are safe for concurrent use.
type Client struct {
	cfg     config
	creds   Credentials
	servers []server
	// current indexes servers: the gateway connections and API calls use.
	current atomic.Int32
	dialer  *websocket.Dialer
	log     *slog.Logger
	tokens  *tokenSource
	backoff backoff
	retry   backoff

	ctx    context.Context // ends when Close starts shutting down
	cancel context.CancelFunc
	wg     sync.WaitGroup

	stopDispatch chan struct{}
	dispatchDone chan struct{}
	closeOnce    sync.Once

	nextReq atomic.Uint64
	lastAck atomic.Uint64 // req_id of the last Ack frame written

	mu         sync.Mutex
	closed     bool
	cur        *conn
	calls      map[uint64]*call
	attachedCh chan struct{} // closed while a session is attached
	janitor    *time.Timer
	janitorOn  bool
	lastErr    error
	stopErr    error         // why the Client stopped by itself (Err)
	permanent  chan error    // the Client stopped for good (Dial reports it)
	wake       chan struct{} // a request started while no session is open

	connected  atomic.Bool
	reconnects atomic.Int64
	replaced   atomic.Bool
	// limit is the largest frame the server takes (Attached.max_frame_bytes,
	// or learned from a refusal); 0 while unknown.
	limit atomic.Int64

	// notes runs the WithConnStateHandler handler (nil without one);
	// outage is set while an outage was reported and not yet over (owned
	// by the run goroutine).
	notes  *notifier
	outage bool

	queue     *entryQueue
	out       chan Entry
	acks      ackBatcher
	queuedSeq uint64     // highest inbox_seq queued; owned by the reader
	dedupe    *recentSet // owned by the dispatcher

	// Presence and typing (social.go): ephemeral, dropped when the
	// application does not keep up.
	presence     chan PresenceEvent
	typing       chan TypingEvent
	presenceSubs map[string]bool // guarded by mu
	// callEvents are call signals for this device (calls_signal.go).
	callEvents chan CallEvent

	// enc is the end-to-end encryption state (encrypted.go); nil without
	// WithE2EE.
	enc *encryption
}

// Dial signs the device in (POST /v1/token), opens its session and returns
// once the server attached the inbox. It retries retryable server answers
// until ctx ends; other failures are returned at once. After Dial returns,
// the Client reconnects by itself until Close; ctx only bounds Dial.
func Dial(ctx context.Context, creds Credentials, opts ...Option) (*Client, error) {
	cfg, err := buildConfig(opts)
	if err != nil {
		return nil, err
	}
	httpBase, wsURL, err := endpoints(creds.BaseURL)
	if err != nil {
		return nil, err
	}
	servers := []server{{httpBase: httpBase, wsURL: wsURL}}
	for _, raw := range cfg.servers {
		h, w, err := endpoints(raw)
		if err != nil {
			return nil, fmt.Errorf("fail-over server: %w", err)
		}
		if h != httpBase {
			servers = append(servers, server{httpBase: h, wsURL: w})
		}
	}
	if creds.UserID == "" && creds.Handle == "" {
		return nil, errors.New("credentials name no user")
	}
	if creds.DeviceID == 0 {
		creds.DeviceID = 1
	}
	creds.BaseURL = httpBase
	c := &Client{
		cfg:     cfg,
		creds:   creds,
		servers: servers,
		log:     cfg.logger.With("user_id", creds.UserID, "device_id", creds.DeviceID),
		tokens:  &tokenSource{hc: cfg.httpClient, creds: creds, now: time.Now},
		backoff: backoff{min: cfg.minBackoff, max: cfg.maxBackoff},
		retry:   backoff{min: 50 * time.Millisecond, max: 2 * time.Second},
		dialer: &websocket.Dialer{
			Proxy:            http.ProxyFromEnvironment,
			HandshakeTimeout: defaultHandshake,
			TLSClientConfig:  cfg.tlsConfig,
		},
		stopDispatch: make(chan struct{}),
		dispatchDone: make(chan struct{}),
		calls:        make(map[uint64]*call),
		attachedCh:   make(chan struct{}),
		permanent:    make(chan error, 1),
		wake:         make(chan struct{}, 1),
		queue:        newEntryQueue(cfg.entryBuffer),
		out:          make(chan Entry),
		dedupe:       newRecentSet(cfg.dedupeWindow),
		presence:     make(chan PresenceEvent, ephemeralBuffer),
		typing:       make(chan TypingEvent, ephemeralBuffer),
		callEvents:   make(chan CallEvent, callEventBuffer),
		presenceSubs: make(map[string]bool),
	}
	if cfg.json {
		c.dialer.Subprotocols = []string{subprotocolJSON}
	}
	c.acks.handed, c.acks.acked, c.queuedSeq = cfg.resumeAfter, cfg.resumeAfter, cfg.resumeAfter
	if cfg.e2eeFile != "" {
		if creds.UserID == "" {
			return nil, errors.New("end-to-end encryption needs credentials with a user id")
		}
		// Opened before anything is received, so every entry is decrypted.
		if c.enc, err = openEncryption(cfg.e2eeFile, creds); err != nil {
			c.cancel()
			return nil, fmt.Errorf("end-to-end encryption: %w", err)
		}
	}
	c.ctx, c.cancel = context.WithCancel(context.Background())

	var cn *conn
	for attempt := 0; ; attempt++ {
		cn, err = c.connect(ctx)
		if err == nil {
			break
		}
		// An unreachable server is worth trying the next one for; once every
		// server was tried, Dial reports it rather than waiting for a cluster
		// that may not exist.
		failOver := transportErr(err) && attempt < len(c.servers)-1
		if !(retryableErr(err) || failOver) || ctx.Err() != nil {
			c.cancel()
			return nil, err
		}
		if failOver {
			continue
		}
		select {
		case <-time.After(c.backoff.delay(attempt + 1)):
		case <-ctx.Done():
			c.cancel()
			return nil, fmt.Errorf("%w (last error: %w)", ctx.Err(), err)
		}
	}
	c.install(cn)
	if cfg.connState != nil {
		c.notes = startNotifier(cfg.connState)
	}
	c.wg.Add(1)
	go c.run(cn)
	go c.dispatch()
	if err := c.waitFirst(ctx); err != nil {
		_ = c.Close()
		return nil, err
	}
	if c.enc != nil {
		if err := c.publishKeys(ctx); err != nil {
			_ = c.Close()
			return nil, fmt.Errorf("end-to-end encryption: %w", err)
		}
	}
	return c, nil
}

// waitFirst waits for the first attached session.
func (c *Client) waitFirst(ctx context.Context) error {
	c.mu.Lock()
	ch := c.attachedCh
	c.mu.Unlock()
	select {
	case <-ch:
		return nil
	case err := <-c.permanent:
		return err
	case <-ctx.Done():
		c.mu.Lock()
		last := c.lastErr
		c.mu.Unlock()
		if last != nil {
			return fmt.Errorf("no session: %w (last error: %w)", ctx.Err(), last)
		}
		return fmt.Errorf("no session: %w", ctx.Err())
	}
}

// UserID is the signed-in user.
func (c *Client) UserID() string { return c.creds.UserID }

// DeviceID is the signed-in device.
func (c *Client) DeviceID() uint32 { return c.creds.DeviceID }

// Credentials returns the credentials the Client signs in with.
func (c *Client) Credentials() Credentials { return c.creds }

// Connected reports whether a session is attached right now.
func (c *Client) Connected() bool { return c.connected.Load() }

// Replaced reports whether the Client closed because the server closed its
// session with close code 4010: another connection of the same device took
// over its inbox, or the device was unlinked (the server says both the
// same way; Err tells them apart).
func (c *Client) Replaced() bool { return c.replaced.Load() }

// Err says why the Client stopped by itself: nil while it runs and after
// the application closed it; otherwise an error wrapping ErrReplaced
// (another connection of this device took over its inbox) or
// ErrUnauthorized (the device was unlinked or its credentials are refused,
// e.g. close 4001). Set before Entries is closed, so a listener can call
// it once the channel ends:
//
//	for e := range c.Entries() { ... }
//	if err := c.Err(); err != nil { ... exit non-zero ... }
func (c *Client) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stopErr
}

// Reconnects counts the sessions opened after the first one.
func (c *Client) Reconnects() int64 { return c.reconnects.Load() }

// LastSeq is the highest inbox_seq handed to the application; a restarted
// application that persisted it can pass it to WithResumeAfter.
func (c *Client) LastSeq() uint64 { return c.acks.last() }

// WaitConnected waits until a session is attached.
func (c *Client) WaitConnected(ctx context.Context) error {
	for {
		c.mu.Lock()
		ch, closed := c.attachedCh, c.closed
		c.mu.Unlock()
		if closed {
			return ErrClosed
		}
		select {
		case <-ch:
			return nil
		case <-c.ctx.Done():
			return ErrClosed
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// DropConnection closes the current socket abruptly, as a network failure
// would; the Client reconnects and resumes. For tests and drills.
func (c *Client) DropConnection() {
	c.mu.Lock()
	cn := c.cur
	c.mu.Unlock()
	if cn != nil {
		cn.abort()
	}
}

// Entries is the ordered stream of this device's inbox entries (messages
// and receipts), without duplicates. An entry is acknowledged once a
// receive returns it (see the package documentation). The channel is closed
// when the Client closes.
func (c *Client) Entries() <-chan Entry { return c.out }

// Close acknowledges what the application received, closes the session and
// stops every goroutine the Client started. Calls still waiting fail with
// ErrClosed.
func (c *Client) Close() error {
	c.closeOnce.Do(func() {
		close(c.stopDispatch)
		<-c.dispatchDone
		if c.Connected() {
			c.flushAcksSync(2 * time.Second)
		}
		c.mu.Lock()
		c.closed = true
		cn := c.cur
		closedErr := ErrClosed
		if c.stopErr != nil {
			closedErr = fmt.Errorf("%w: %w", ErrClosed, c.stopErr)
		}
		calls := make([]*call, 0, len(c.calls))
		for _, cl := range c.calls {
			calls = append(calls, cl)
		}
		if c.janitor != nil {
			c.janitor.Stop()
		}
		c.mu.Unlock()
		c.cancel()
		if cn != nil {
			cn.shutdown(websocket.CloseNormalClosure)
		}
		for _, cl := range calls {
			c.finish(cl, nil, closedErr, false)
		}
		c.wg.Wait()
		c.notes.close()
		if c.cfg.httpClient != sharedHTTP {
			c.cfg.httpClient.CloseIdleConnections()
		}
		if c.enc != nil {
			_ = c.enc.dev.Close()
		}
	})
	return nil
}

// connect fetches a token if needed and opens a socket resuming after the
// last entry handed to the application.
func (c *Client) connect(ctx context.Context) (*conn, error) {
	for attempt := 0; ; attempt++ {
		srv := c.server()
		tok, err := c.tokens.get(ctx, srv.httpBase)
		if err != nil {
			if transportErr(err) {
				c.failOver(srv)
			}
			return nil, err
		}
		after := c.acks.last()
		hdr := http.Header{}
		hdr.Set("Authorization", "Bearer "+tok)
		ws, resp, err := c.dialer.DialContext(ctx, srv.wsURL+"?after="+strconv.FormatUint(after, 10), hdr)
		if err != nil {
			if resp != nil && resp.StatusCode != http.StatusSwitchingProtocols {
				herr := errorFromHTTP(resp)
				if attempt == 0 && authRefused(herr) {
					c.tokens.invalidate(tok)
					continue
				}
				return nil, fmt.Errorf("open session: %w", herr)
			}
			c.failOver(srv)
			return nil, fmt.Errorf("open session at %s: %w", srv.wsURL, err)
		}
		if c.cfg.json && ws.Subprotocol() != subprotocolJSON {
			_ = ws.Close()
			return nil, errors.New("open session: the server did not accept the json subprotocol")
		}
		ws.SetReadLimit(64 << 20)
		cn := &conn{ws: ws, json: c.cfg.json, after: after, owner: c}
		cn.lastRead.Store(time.Now().UnixNano())
		return cn, nil
	}
}

// server is one gateway the client may use.
type server struct{ httpBase, wsURL string }

func (c *Client) server() server { return c.servers[int(c.current.Load())%len(c.servers)] }

// failOver moves to the next server after srv could not be reached (unless
// another goroutine already moved on).
func (c *Client) failOver(srv server) {
	if len(c.servers) < 2 {
		return
	}
	i := c.current.Load()
	if c.servers[int(i)%len(c.servers)] != srv {
		return
	}
	if c.current.CompareAndSwap(i, (i+1)%int32(len(c.servers))) {
		c.log.Info("server unreachable, failing over", "from", srv.httpBase, "to", c.server().httpBase)
	}
}

// transportErr: the server was not reached or did not answer at all (as
// opposed to answering with an error).
func transportErr(err error) bool {
	var apiErr *Error
	return !errors.As(err, &apiErr)
}

// install makes cn the current session and writes every request still
// waiting for an answer on it, oldest first, before anything newer.
func (c *Client) install(cn *conn) bool {
	cn.wmu.Lock()
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		cn.wmu.Unlock()
		_ = cn.ws.Close()
		return false
	}
	c.cur = cn
	pending := make([]*call, 0, len(c.calls))
	for _, cl := range c.calls {
		pending = append(pending, cl)
	}
	c.mu.Unlock()
	sortCalls(pending)
	now := time.Now().UnixNano()
	for _, cl := range pending {
		cl.lastWrite.Store(now)
		// A request over the server's frame limit fails instead of being
		// written; the ones after it still go out.
		if err := cn.writeLocked(cl.frame, false); err != nil && !errors.Is(err, ErrTooLarge) {
			break
		}
	}
	cn.wmu.Unlock()
	// The server acknowledges everything up to after= when it attaches.
	c.acks.sent(cn.after)
	cn.kaMu.Lock()
	cn.ka = time.AfterFunc(c.cfg.keepAlive, func() { c.keepalive(cn) })
	cn.kaMu.Unlock()
	return true
}

// uninstall forgets cn (if still current) and closes it.
func (c *Client) uninstall(cn *conn) {
	c.mu.Lock()
	if c.cur == cn {
		c.cur = nil
		if c.connected.Load() {
			c.connected.Store(false)
			c.attachedCh = make(chan struct{})
		}
	}
	c.mu.Unlock()
	cn.shutdown(websocket.CloseNormalClosure)
}

func (c *Client) markAttached(cn *conn) {
	c.mu.Lock()
	attached := c.cur == cn && !c.connected.Load()
	if attached {
		c.connected.Store(true)
		close(c.attachedCh)
	}
	c.mu.Unlock()
	if attached && c.outage {
		c.outage = false
		c.notes.post(ConnEvent{State: Reconnected, At: time.Now()})
	}
}

// reportOutage tells the application, once per outage, that the session
// it had is gone (WithConnStateHandler). Run goroutine only.
func (c *Client) reportOutage(err error) {
	if c.outage {
		return
	}
	c.outage = true
	c.notes.post(ConnEvent{State: Disconnected, Err: err, At: time.Now()})
}

// keepalive pings an open socket and drops one the server went silent on.
func (c *Client) keepalive(cn *conn) {
	if cn.isDead() {
		return
	}
	if idle := time.Since(time.Unix(0, cn.lastRead.Load())); idle > 2*c.cfg.keepAlive {
		c.log.Info("courier: server silent, dropping the session", "idle", idle.Round(time.Millisecond))
		cn.abort()
		return
	}
	_ = cn.write(&courierpb.ClientFrame{ReqId: c.nextReq.Add(1), Body: &courierpb.ClientFrame_Ping{Ping: &courierpb.Ping{ClientTimeMs: time.Now().UnixMilli()}}})
	cn.kaMu.Lock()
	if !cn.kaStopped {
		cn.ka.Reset(c.cfg.keepAlive)
	}
	cn.kaMu.Unlock()
}

// run reads the current session and replaces it when it ends, until Close.
func (c *Client) run(cn *conn) {
	defer c.wg.Done()
	failures := 0
	everAttached := false
	for {
		err := c.serve(cn)
		if cn.attached {
			failures, everAttached = 0, true
		} else {
			failures++
		}
		if ce := (*websocket.CloseError)(nil); errors.As(err, &ce) && ce.Code == websocket.CloseMessageTooBig {
			// The server would not read a frame of ours: fail its request
			// so the next session does not send it again.
			c.tooLargeClosed(cn)
		}
		c.uninstall(cn)
		if c.ctx.Err() != nil {
			return
		}
		if stop := c.stopsFor(err); stop != nil {
			c.stop(stop)
			return
		}
		c.noteErr(err)
		overflow := errors.Is(err, errOverflow)
		if overflow {
			c.log.Info("courier: entry buffer full, pausing the session until the application catches up")
			if !c.waitDrain() {
				return
			}
		} else {
			c.log.Info("courier: session lost, reconnecting", "err", err)
			if everAttached {
				c.reportOutage(err)
			}
		}
		for {
			if !overflow || failures > 0 {
				if !c.sleep(c.backoff.delay(failures)) {
					return
				}
			}
			overflow = false
			next, err := c.connect(c.ctx)
			if err == nil {
				if !c.install(next) {
					return
				}
				c.reconnects.Add(1)
				cn = next
				break
			}
			if c.ctx.Err() != nil {
				return
			}
			if stop := c.stopsFor(err); stop != nil {
				c.stop(stop)
				return
			}
			failures++
			c.noteErr(err)
			if everAttached {
				c.reportOutage(err) // after a pause for a full buffer
			}
			c.log.Warn("courier: reconnect failed", "err", err, "attempt", failures)
		}
	}
}

// noteErr remembers the last failure for Dial.
func (c *Client) noteErr(err error) {
	c.mu.Lock()
	c.lastErr = err
	c.mu.Unlock()
}

// stopsFor returns why the Client must stop after a session or a
// connection attempt failed with err, or nil when it reconnects: the
// server refused the device for good, or another connection of the device
// took over (reconnecting would take the inbox back and start a tug of
// war).
func (c *Client) stopsFor(err error) error {
	var ce *websocket.CloseError
	switch {
	case errors.As(err, &ce) && ce.Code == closeReplaced:
		c.replaced.Store(true)
		// Unlinking a device closes its session the same way: ask.
		if c.unlinked() {
			return fmt.Errorf("courier client stopped: %w", ErrUnauthorized)
		}
		return fmt.Errorf("courier client stopped: %w", ErrReplaced)
	case errors.As(err, &ce) && ce.Code == closeUnauthorized,
		IsCode(err, courierpb.ErrorCode_UNAUTHENTICATED), IsCode(err, courierpb.ErrorCode_FORBIDDEN):
		// connect already fetched a fresh token before it gave up.
		return fmt.Errorf("courier client stopped: %w: %w", ErrUnauthorized, err)
	}
	return nil
}

// unlinked asks for a fresh token to tell an unlinked device from a
// replaced session.
func (c *Client) unlinked() bool {
	ctx, cancel := context.WithTimeout(c.ctx, 5*time.Second)
	defer cancel()
	base := c.server().httpBase
	tok, err := c.tokens.get(ctx, base)
	if err == nil {
		c.tokens.invalidate(tok)
		_, err = c.tokens.get(ctx, base)
	}
	return IsCode(err, courierpb.ErrorCode_UNAUTHENTICATED)
}

// stop ends the Client for good because of err (see Err), from the run
// goroutine.
func (c *Client) stop(err error) {
	c.mu.Lock()
	if !c.closed && c.stopErr == nil {
		c.stopErr = err
	}
	c.mu.Unlock()
	c.log.Warn("courier: stopping", "err", err)
	select {
	case c.permanent <- err:
	default:
	}
	go c.Close()
}

func (c *Client) sleep(d time.Duration) bool {
	if d <= 0 {
		return c.ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-c.ctx.Done():
		return false
	}
}

// waitDrain waits until the application has taken half the entry buffer,
// or until it starts a request, which needs a session to be answered (that
// session takes no entries while the buffer is still full).
func (c *Client) waitDrain() bool {
	for !c.queue.lowWater() && c.waitingCalls() == 0 {
		select {
		case <-c.queue.space:
		case <-c.wake:
		case <-c.ctx.Done():
			return false
		}
	}
	return c.ctx.Err() == nil
}

// serve reads frames until the socket fails.
func (c *Client) serve(cn *conn) error {
	for {
		f, skip, err := cn.read()
		if skip {
			c.log.Warn("courier: skipping a frame", "err", err)
			continue
		}
		if err != nil {
			return err
		}
		c.handle(cn, f)
		if cn.overflow && c.waitingCalls() == 0 {
			return errOverflow
		}
	}
}

func (c *Client) handle(cn *conn, f *courierpb.ServerFrame) {
	switch b := f.Body.(type) {
	case *courierpb.ServerFrame_Deliver:
		for _, e := range b.Deliver.GetEntries() {
			c.onDeliver(cn, e)
		}
	case *courierpb.ServerFrame_Attached:
		cn.attached = true
		if n := b.Attached.GetMaxFrameBytes(); n > 0 {
			c.limit.Store(int64(n))
		}
		c.markAttached(cn)
		c.resubscribePresence(cn)
	case *courierpb.ServerFrame_Presence:
		c.onPresence(b.Presence)
	case *courierpb.ServerFrame_PresenceGone:
		c.offerPresence(PresenceEvent{UserID: b.PresenceGone.GetUserId(), Gone: true})
	case *courierpb.ServerFrame_Typing:
		c.onTyping(b.Typing)
	case *courierpb.ServerFrame_CallEvent:
		c.onCallEvent(b.CallEvent)
	case *courierpb.ServerFrame_Error:
		if b.Error.GetCode() == courierpb.ErrorCode_TOO_LARGE && c.tooLargeAnswer(cn, f.ReqId, b.Error.GetMessage()) {
			return
		}
		if f.ReqId == 0 {
			c.log.Warn("courier: server error", "code", b.Error.GetCode(), "msg", b.Error.GetMessage())
			return
		}
		c.resolve(f)
	default:
		if f.ReqId != 0 {
			c.resolve(f)
		}
	}
}

// onDeliver queues an entry for the application unless it was queued
// before (a replay overlapping what a previous session delivered).
func (c *Client) onDeliver(cn *conn, e *courierpb.InboxEntry) {
	if e == nil || e.InboxSeq <= c.queuedSeq || cn.overflow {
		return
	}
	if !c.queue.push(entryFromProto(e)) {
		// Stop taking entries from this session; they stay in the inbox
		// and the next session resumes from the last one handed out.
		cn.overflow = true
		return
	}
	c.queuedSeq = e.InboxSeq
}

// dispatch hands queued entries to the application, drops duplicate
// messages and schedules acknowledgements.
func (c *Client) dispatch() {
	defer close(c.dispatchDone)
	defer close(c.out)
	for {
		e, ok := c.queue.pop()
		if !ok {
			select {
			case <-c.queue.ready:
				continue
			case <-c.stopDispatch:
				return
			}
		}
		dup := (e.Kind == courierpb.EntryKind_ENTRY_KIND_MESSAGE || e.Kind == courierpb.EntryKind_ENTRY_KIND_GROUP_MESSAGE) &&
			e.ClientMsgID != "" && c.dedupe.seen(msgKey{from: e.FromUserID, id: e.ClientMsgID})
		if !dup && c.open(&e) {
			select {
			case c.out <- e:
			case <-c.stopDispatch:
				return
			}
		}
		if c.acks.hand(e.Seq) {
			time.AfterFunc(c.cfg.ackInterval, c.flushAcks)
		}
	}
}

// flushAcks writes one cumulative Ack for everything handed out. Without a
// session it does nothing: the next session resumes with after=, which
// acknowledges the same entries.
func (c *Client) flushAcks() {
	upTo, ok := c.acks.flush()
	if !ok {
		return
	}
	c.mu.Lock()
	cn, closed := c.cur, c.closed
	c.mu.Unlock()
	if cn == nil || closed {
		return
	}
	id := c.nextReq.Add(1)
	c.lastAck.Store(id)
	// Quiet: only a refusal comes back (see resolve); success is silence.
	if cn.write(&courierpb.ClientFrame{ReqId: id, Body: &courierpb.ClientFrame_Ack{Ack: &courierpb.Ack{UpToInboxSeq: upTo, Quiet: true}}}) == nil {
		c.acks.sent(upTo)
	}
}

// flushAcksSync acknowledges everything handed out and waits for AckOk.
func (c *Client) flushAcksSync(timeout time.Duration) {
	upTo, ok := c.acks.flush()
	if !ok {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cl := c.start(ctx, &courierpb.ClientFrame_Ack{Ack: &courierpb.Ack{UpToInboxSeq: upTo}}, true)
	<-cl.done
	if cl.err == nil {
		c.acks.sent(upTo)
	}
}

// frameLimit is the largest frame the server takes (0: unknown).
func (c *Client) frameLimit() int64 {
	if c.cfg.noFrameLimit {
		return 0
	}
	return c.limit.Load()
}

// waiting reports whether request reqID still waits for its answer.
func (c *Client) waiting(reqID uint64) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ok := c.calls[reqID]
	return ok
}

// refuseTooLarge fails request reqID with err (TOO_LARGE); it is never
// written again. False: no such request waits.
func (c *Client) refuseTooLarge(reqID uint64, err error) bool {
	c.mu.Lock()
	cl := c.calls[reqID]
	c.mu.Unlock()
	if cl == nil {
		return false
	}
	c.finish(cl, nil, err, false)
	return true
}

// tooLargeAnswer handles a TOO_LARGE error frame: the server read a frame
// over its limit and refused it. A frame it could not decode has no req_id
// (req_id 0): then the largest request written on cn and still waiting is
// the one. The request fails at once (resending it would only be refused
// again), and the limit is remembered so larger frames are refused before
// they are sent. False: no request is waiting for it.
func (c *Client) tooLargeAnswer(cn *conn, reqID uint64, msg string) bool {
	var size int64
	if reqID == 0 {
		reqID, size = cn.largestWaiting()
		if reqID == 0 {
			return false
		}
	} else {
		size = cn.forgetBig(reqID)
	}
	limit := limitFromMessage(msg)
	if cur := c.limit.Load(); limit == 0 {
		limit = cur
	} else if cur == 0 || limit < cur {
		c.limit.Store(limit)
	}
	var err *Error
	if size > 0 {
		err = tooLarge(size, limit, false)
	} else {
		err = &Error{Code: courierpb.ErrorCode_TOO_LARGE, Message: msg + " (send large files as media)"}
	}
	c.log.Warn("courier: the server refused a frame as too large", "req_id", reqID, "err", err)
	return c.refuseTooLarge(reqID, err)
}

// tooLargeClosed handles close 1009: the server would not even read a
// frame of ours (far over its limit). Its request fails at once rather
// than being written again on the next session, again and again; frames
// that large are refused before they are sent from now on.
func (c *Client) tooLargeClosed(cn *conn) {
	reqID, size := cn.largestWaiting()
	if reqID == 0 {
		return
	}
	err := tooLarge(size, c.limit.Load(), true)
	if cur := c.limit.Load(); cur == 0 || cur >= size {
		c.limit.Store(size - 1)
	}
	c.log.Warn("courier: the server closed the session over a frame too large", "req_id", reqID, "err", err)
	c.refuseTooLarge(reqID, err)
}
