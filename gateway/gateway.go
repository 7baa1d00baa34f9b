// Package gateway is Courier's front door: HTTP registration and tokens,
// and WebSocket sessions that turn client frames into grain requests and
// grain pushes into frames. Each socket gets one session actor; a slow or
// hostile client only ever hurts its own session.
package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/gorilla/websocket"

	"github.com/courier-im/courier/cluster"
	"github.com/courier-im/courier/internal/readiness"
	"github.com/courier-im/courier/persistence"
	"github.com/courier-im/courier/protos/courierpb"
	"github.com/courier-im/courier/verification"
)

// Config tunes a gateway. Zero values take the defaults below.
type Config struct {
	Store persistence.Store
	// Groups answers "list my groups"; nil refuses that request.
	Groups  persistence.GroupStore
	Cluster *cluster.Cluster
	Tokens  *Tokens
	Logger  *slog.Logger

	// MaxFrameBytes is the largest client frame accepted (default 256 KiB).
	// Frames up to 4x larger are answered with TOO_LARGE; larger ones close
	// the socket with 1009.
	MaxFrameBytes int
	// SendQueue is how many frames may wait for a slow client before its
	// session is closed (default 1024).
	SendQueue int
	// SendQueueBytes bounds what may wait for one client, by estimated
	// bytes (default 4 MiB): 1,024 frames of 256 KiB would be 256 MiB.
	SendQueueBytes int
	// QueuedBytesTotal bounds the node's send queues together (default 256
	// MiB; negative: no node bound). Past it, only sessions holding less
	// than 64 KiB may queue more, so the slowest readers are cut off first.
	QueuedBytesTotal int64
	// IdleTimeout closes a socket silent for this long (default 60s).
	IdleTimeout time.Duration
	// ParkAfter is how long a socket may be silent before its reader
	// goroutine and read buffer are let go until it speaks again (default
	// 1s; negative keeps a reader per socket). Linux only: elsewhere every
	// socket keeps its reader.
	ParkAfter time.Duration
	// WriteTimeout bounds one frame write (default 10s).
	WriteTimeout time.Duration
	// RequestTimeout bounds one grain request attempt (default 5s).
	RequestTimeout time.Duration
	// RequestRetries is how often a failed send is retried by the gateway
	// with the same client_msg_id (default 2).
	RequestRetries int
	// MaxInflight caps a session's unanswered requests (default 1024).
	MaxInflight int
	// MaxAbuse is how many bad frames a session may send before it is
	// closed (default 5).
	MaxAbuse int
	// RequireE2EE refuses sends whose ciphertexts are not framed as Signal
	// messages (e2ee.go): a deployment that promises end-to-end encryption
	// carries no plaintext from a misconfigured or malicious client.
	RequireE2EE bool
	// RatePerSec and RateBurst bound the frames a session may send.
	RatePerSec float64
	RateBurst  int
	// LeaseRenew is how often a session re-attaches to its User grain, which
	// keeps it active and repairs the attachment after a grain restart.
	LeaseRenew time.Duration
	// Limits rate-limits registration, tokens and key bundle fetches per
	// client IP and per account (limits.go).
	Limits Limits
	// Verification makes registration need a code sent to an address
	// (verify.go); nil is open registration.
	Verification *verification.Service
	// DropDeliveryForTest, when set, is asked about every live entry before
	// a session sends it; true drops it as a faulty server would (the
	// bench's fault-injection test). Never set in production.
	DropDeliveryForTest func(e *courierpb.InboxEntry) bool
}

func (c Config) withDefaults() Config {
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.MaxFrameBytes == 0 {
		c.MaxFrameBytes = 256 << 10
	}
	if c.SendQueue == 0 {
		c.SendQueue = 1024
	}
	if c.SendQueueBytes == 0 {
		c.SendQueueBytes = 4 << 20
	}
	if c.QueuedBytesTotal == 0 {
		c.QueuedBytesTotal = 256 << 20
	} else if c.QueuedBytesTotal < 0 {
		c.QueuedBytesTotal = math.MaxInt64
	}
	if c.IdleTimeout == 0 {
		c.IdleTimeout = 60 * time.Second
	}
	if c.ParkAfter == 0 {
		c.ParkAfter = time.Second
	}
	if c.WriteTimeout == 0 {
		c.WriteTimeout = 10 * time.Second
	}
	if c.RequestTimeout == 0 {
		c.RequestTimeout = 5 * time.Second
	}
	if c.RequestRetries == 0 {
		c.RequestRetries = 2
	}
	if c.MaxInflight == 0 {
		c.MaxInflight = 1024
	}
	if c.MaxAbuse == 0 {
		c.MaxAbuse = 5
	}
	if c.RatePerSec == 0 {
		c.RatePerSec = 2000
	}
	if c.RateBurst == 0 {
		c.RateBurst = 4000
	}
	if c.LeaseRenew == 0 {
		c.LeaseRenew = 30 * time.Second
	}
	c.Limits = c.Limits.WithDefaults()
	return c
}

// Gateway serves the HTTP API and WebSocket sessions of one node.
type Gateway struct {
	cfg    Config
	log    *slog.Logger
	system *actor.ActorSystem
	props  *actor.Props
	// spawnMu and spawning hand a new session to the shared Props'
	// producer (spawn.go).
	spawnMu  sync.Mutex
	spawning *session
	upgrader websocket.Upgrader
	mux      *http.ServeMux
	// poller wakes the readers of parked sockets (park.go); nil where
	// there is none, or with ParkAfter < 0.
	poller *readiness.Poller
	// limits are the HTTP API's keyed rate limiters (limits.go).
	limits limiters
	// actions limit costly requests per user and address (actions.go).
	actions actionLimiters

	mu sync.Mutex
	// sessions holds every open session in one of renewSlots slots; the
	// renewer walks one slot per LeaseRenew/renewSlots (renew.go).
	sessions  [renewSlots]map[*session]struct{}
	nSessions int
	slotAt    int // the slot the renewer visits next
	renewing  bool
	// queuedBytes is every session's send queue together (frameQueue).
	queuedBytes atomic.Int64
	// droppedEphemeral counts presence and typing frames dropped because a
	// client's send queue was half full.
	droppedEphemeral atomic.Int64
	// epoch: the gateway's monotonic clock (clock) counts from here.
	epoch   time.Time
	closing bool
	wg      sync.WaitGroup
}

// New returns a gateway; serve its Handler with an http.Server.
func New(cfg Config) (*Gateway, error) {
	cfg = cfg.withDefaults()
	if cfg.Store == nil || cfg.Cluster == nil || cfg.Tokens == nil {
		return nil, errors.New("gateway: Store, Cluster and Tokens are required")
	}
	if err := cfg.Limits.validate(); err != nil {
		return nil, err
	}
	g := &Gateway{
		epoch:   time.Now(),
		cfg:     cfg,
		limits:  newLimiters(cfg.Limits),
		actions: newActionLimiters(cfg.Limits),
		log:     cfg.Logger.With("component", "gateway"),
		system:  cfg.Cluster.System(),
		upgrader: websocket.Upgrader{
			Subprotocols: []string{SubprotocolProto, SubprotocolJSON},
			// Read: 0 makes gorilla read through the reader the hijack
			// hands it, the session's own (cork.go): 1 KiB while a reader
			// runs, none while the socket is parked. Write: a pooled buffer
			// held only while a message is written, so an idle connection
			// keeps none.
			ReadBufferSize:  0,
			WriteBufferSize: 4096,
			WriteBufferPool: &sync.Pool{},
			// Apps are native clients, not pages: a browser client is served
			// through the same token check, so the origin adds nothing.
			CheckOrigin: func(*http.Request) bool { return true },
		},
	}
	// A session holds a socket: restarting it cannot restore the socket, so
	// a panicking session is stopped and its client reconnects and resumes.
	// Every session shares these Props (spawn.go).
	g.props = actor.PropsFromProducer(g.produceSession,
		actor.WithGuardian(actor.NewOneForOneStrategy(0, 0, func(any) actor.Directive { return actor.StopDirective })),
		actor.WithMailbox(actor.UnboundedLockfree()),
		actor.WithDispatcher(cluster.Dispatcher),
	)
	if cfg.ParkAfter > 0 {
		p, err := readiness.New()
		switch {
		case errors.Is(err, readiness.ErrUnsupported):
			g.log.Info("silent sockets keep their reader goroutine on this platform")
		case err != nil:
			return nil, fmt.Errorf("gateway: start the readiness poller: %w", err)
		default:
			g.poller = p
		}
	}
	g.nameLimiters()
	g.mux = http.NewServeMux()
	g.routes()
	return g, nil
}

// clock is monotonic time since the gateway started: cheap to store in an
// atomic and immune to wall-clock steps.
func (g *Gateway) clock() time.Duration { return time.Since(g.epoch) }

// Handler returns the HTTP handler serving /v1/... and /healthz.
func (g *Gateway) Handler() http.Handler { return g.mux }

// DroppedEphemeral counts presence and typing frames dropped because a
// client's send queue was half full.
func (g *Gateway) DroppedEphemeral() int64 { return g.droppedEphemeral.Load() }

// QueuedBytes is the estimated size of every session's send queue
// together.
func (g *Gateway) QueuedBytes() int64 { return g.queuedBytes.Load() }

// ParkedReaders is how many open sockets are silent and have no reader
// goroutine or read buffer (park.go).
func (g *Gateway) ParkedReaders() int {
	if g.poller == nil {
		return 0
	}
	return g.poller.Armed()
}

// Sessions returns how many sockets are open.
func (g *Gateway) Sessions() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.nSessions
}

func (g *Gateway) track(s *session) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closing {
		return false
	}
	// The slot the renewer visited last comes round again last: the first
	// renewal is about one period after the session opened.
	s.slot = uint8((g.slotAt + renewSlots - 1) % renewSlots)
	if g.sessions[s.slot] == nil {
		g.sessions[s.slot] = make(map[*session]struct{})
	}
	g.sessions[s.slot][s] = struct{}{}
	g.nSessions++
	g.wg.Add(1)
	if !g.renewing {
		g.renewing = true
		go g.housekeep()
	}
	return true
}

func (g *Gateway) untrack(s *session) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if _, ok := g.sessions[s.slot][s]; ok {
		delete(g.sessions[s.slot], s)
		g.nSessions--
		g.wg.Done()
	}
}

// Shutdown closes every session with 1001 (going away) so clients reconnect
// elsewhere, and waits for them to finish, bounded by ctx.
func (g *Gateway) Shutdown(ctx context.Context) error {
	g.mu.Lock()
	g.closing = true
	open := make([]*session, 0, g.nSessions)
	for _, slot := range g.sessions {
		for s := range slot {
			open = append(open, s)
		}
	}
	g.mu.Unlock()
	for _, s := range open {
		s.closeWith(websocket.CloseGoingAway, "server shutting down")
	}
	done := make(chan struct{})
	go func() { g.wg.Wait(); close(done) }()
	var err error
	select {
	case <-done:
	case <-ctx.Done():
		err = fmt.Errorf("gateway shutdown: %d sessions still open: %w", g.Sessions(), ctx.Err())
	}
	// Every socket is closed: no parked reader is left to wake.
	if g.poller != nil {
		err = errors.Join(err, g.poller.Close())
	}
	return err
}
