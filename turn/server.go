package turn

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"sync"

	"github.com/pion/logging"
	pionturn "github.com/pion/turn/v4"
)

// server is the embedded TURN server: pion's, on one UDP socket, with
// every socket it opens tracked so Close can wait for them (T2).
type server struct {
	pion    *pionturn.Server
	conn    *trackedConn
	sockets *socketSet
}

func startServer(ctx context.Context, cfg Config) (*server, error) {
	sockets := newSocketSet()
	var lc net.ListenConfig
	pc, err := lc.ListenPacket(ctx, "udp", cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("turn: listen on udp %s: %w", cfg.Listen, err)
	}
	conn := sockets.track(pc)
	bindHost, _, err := net.SplitHostPort(cfg.Listen)
	if err != nil {
		_ = conn.Close()
		return nil, fmt.Errorf("turn: listen address %q: %w", cfg.Listen, err)
	}
	log := cfg.Logger
	relays := &relayGenerator{relayIP: net.ParseIP(cfg.RelayIP), bindHost: bindHost, sockets: sockets}
	policy := peerPolicy{loopback: *cfg.AllowLoopbackPeers, private: *cfg.AllowPrivatePeers}
	p, err := pionturn.NewServer(pionturn.ServerConfig{
		Realm:         cfg.Realm,
		LoggerFactory: slogFactory{log: log},
		AuthHandler: func(username, realm string, src net.Addr) ([]byte, bool) {
			if _, _, err := ParseUsername(username, cfg.Now()); err != nil {
				log.Debug("turn: credential refused", "client", src.String(), "err", err)
				return nil, false
			}
			// The client proves it knows Password(username) by the
			// message integrity this key checks.
			return pionturn.GenerateAuthKey(username, realm, Password(cfg.Secret, username)), true
		},
		PacketConnConfigs: []pionturn.PacketConnConfig{{
			PacketConn:            conn,
			RelayAddressGenerator: relays,
			PermissionHandler: func(client net.Addr, peer net.IP) bool {
				if !policy.allows(peer) {
					log.Debug("turn: peer refused", "client", client.String(), "peer", peer.String())
					return false
				}
				return true
			},
		}},
	})
	if err != nil {
		_ = conn.Close()
		return nil, fmt.Errorf("turn: start server on %s: %w", cfg.Listen, err)
	}
	return &server{pion: p, conn: conn, sockets: sockets}, nil
}

// close stops the server and waits until its read loop has ended and every
// socket it opened (its own, each relay) is closed, or ctx ends.
func (s *server) close(ctx context.Context) error {
	err := s.pion.Close()
	if err != nil {
		err = fmt.Errorf("turn: close server: %w", err)
	}
	if werr := s.sockets.wait(ctx); werr != nil {
		err = errors.Join(err, fmt.Errorf("turn: %d socket(s) still open: %w", s.sockets.open(), werr))
	}
	return err
}

// peerPolicy decides which peers a relay may send to (Config.AllowLoopbackPeers).
type peerPolicy struct{ loopback, private bool }

func (p peerPolicy) allows(ip net.IP) bool {
	switch {
	case ip == nil, ip.IsUnspecified(), ip.IsMulticast(), ip.IsLinkLocalUnicast(), ip.IsLinkLocalMulticast():
		return false
	case ip.IsLoopback():
		return p.loopback
	case ip.IsPrivate():
		return p.private
	}
	return ip.IsGlobalUnicast()
}

// relayGenerator opens relay sockets on bindHost and announces them on
// relayIP. UDP only: RFC 6062 TCP allocations are refused.
type relayGenerator struct {
	relayIP  net.IP
	bindHost string
	sockets  *socketSet
}

func (g *relayGenerator) Validate() error {
	if g.relayIP == nil {
		return errors.New("turn: no relay address")
	}
	return nil
}

func (g *relayGenerator) AllocatePacketConn(network string, requestedPort int) (net.PacketConn, net.Addr, error) {
	pc, err := net.ListenPacket(network, net.JoinHostPort(g.bindHost, strconv.Itoa(requestedPort))) //nolint:noctx // pion's interface has no context; a UDP bind does not block.
	if err != nil {
		return nil, nil, fmt.Errorf("turn: open relay socket: %w", err)
	}
	local, ok := pc.LocalAddr().(*net.UDPAddr)
	if !ok {
		_ = pc.Close()
		return nil, nil, fmt.Errorf("turn: relay socket address %v is not UDP", pc.LocalAddr())
	}
	return g.sockets.track(pc), &net.UDPAddr{IP: g.relayIP, Port: local.Port}, nil
}

func (g *relayGenerator) AllocateConn(string, int) (net.Conn, net.Addr, error) {
	return nil, nil, errors.New("turn: TCP allocations are not supported")
}

// socketSet counts open sockets and lets close wait for none.
type socketSet struct {
	mu   sync.Mutex // guards n and zero
	n    int
	zero chan struct{} // closed while n == 0
}

func newSocketSet() *socketSet {
	z := make(chan struct{})
	close(z)
	return &socketSet{zero: z}
}

func (s *socketSet) track(pc net.PacketConn) *trackedConn {
	s.mu.Lock()
	if s.n == 0 {
		s.zero = make(chan struct{})
	}
	s.n++
	s.mu.Unlock()
	return &trackedConn{PacketConn: pc, set: s}
}

func (s *socketSet) release() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.n--
	if s.n == 0 {
		close(s.zero)
	}
}

func (s *socketSet) open() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.n
}

func (s *socketSet) wait(ctx context.Context) error {
	s.mu.Lock()
	z := s.zero
	s.mu.Unlock()
	select {
	case <-z:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// trackedConn leaves its socketSet on its first Close.
type trackedConn struct {
	net.PacketConn
	set  *socketSet
	once sync.Once
}

func (c *trackedConn) Close() error {
	err := c.PacketConn.Close()
	c.once.Do(c.set.release)
	return err
}

// slogFactory hands pion's loggers to slog. Pion's errors are about one
// datagram or allocation, not the server: they log as warnings; its trace
// output goes below debug.
type slogFactory struct{ log *slog.Logger }

func (f slogFactory) NewLogger(scope string) logging.LeveledLogger {
	return slogLogger{log: f.log.With("component", "turn", "scope", scope)}
}

type slogLogger struct{ log *slog.Logger }

const levelTrace = slog.LevelDebug - 4

func (l slogLogger) logf(level slog.Level, format string, args ...any) {
	ctx := context.Background()
	if !l.log.Enabled(ctx, level) {
		return
	}
	l.log.Log(ctx, level, fmt.Sprintf(format, args...))
}

func (l slogLogger) Trace(msg string)                  { l.logf(levelTrace, "%s", msg) }
func (l slogLogger) Tracef(format string, args ...any) { l.logf(levelTrace, format, args...) }
func (l slogLogger) Debug(msg string)                  { l.logf(slog.LevelDebug, "%s", msg) }
func (l slogLogger) Debugf(format string, args ...any) { l.logf(slog.LevelDebug, format, args...) }
func (l slogLogger) Info(msg string)                   { l.logf(slog.LevelInfo, "%s", msg) }
func (l slogLogger) Infof(format string, args ...any)  { l.logf(slog.LevelInfo, format, args...) }
func (l slogLogger) Warn(msg string)                   { l.logf(slog.LevelWarn, "%s", msg) }
func (l slogLogger) Warnf(format string, args ...any)  { l.logf(slog.LevelWarn, format, args...) }
func (l slogLogger) Error(msg string)                  { l.logf(slog.LevelWarn, "%s", msg) }
func (l slogLogger) Errorf(format string, args ...any) { l.logf(slog.LevelWarn, format, args...) }
