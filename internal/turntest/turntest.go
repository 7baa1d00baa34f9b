// Package turntest drives a real TURN server from tests with pion's TURN
// client: allocate a relay with given credentials, and prove two relays
// carry datagrams between them. The embedded server's tests and the
// coturn test share it, so both servers are held to the same exchange.
package turntest

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"testing"
	"time"

	"github.com/pion/logging"
	pionturn "github.com/pion/turn/v4"
)

// Relay is one client's allocation on a TURN server.
type Relay struct {
	Client *pionturn.Client
	Conn   net.PacketConn // the relayed socket; WriteTo a peer sends through the server
}

// Allocate opens a UDP socket on loopback and allocates a relay on server
// (host:port) with username and password. The socket, client and
// allocation are closed when t ends. A refusal is returned, not fatal.
func Allocate(t testing.TB, server, username, password string) (*Relay, error) {
	t.Helper()
	conn, err := net.ListenPacket("udp4", "127.0.0.1:0") //nolint:noctx // a UDP bind does not block.
	if err != nil {
		t.Fatalf("turntest: listen: %v", err)
	}
	c, err := pionturn.NewClient(&pionturn.ClientConfig{
		STUNServerAddr: server,
		TURNServerAddr: server,
		Conn:           conn,
		Username:       username,
		Password:       password,
		RTO:            100 * time.Millisecond,
		LoggerFactory:  quietLogs{},
	})
	if err != nil {
		_ = conn.Close()
		t.Fatalf("turntest: new client for %s: %v", server, err)
	}
	if err := c.Listen(); err != nil {
		c.Close()
		_ = conn.Close()
		t.Fatalf("turntest: client listen: %v", err)
	}
	// Closed in this order: the allocation (a Refresh with lifetime 0),
	// the client's transactions, then the socket, which ends its read loop.
	t.Cleanup(func() { _ = conn.Close() })
	t.Cleanup(c.Close)
	relay, err := c.Allocate()
	if err != nil {
		return nil, fmt.Errorf("allocate on %s as %q: %w", server, username, err)
	}
	t.Cleanup(func() { _ = relay.Close() })
	return &Relay{Client: c, Conn: relay}, nil
}

// Exchange sends a datagram from a's relay to b's relay and one back,
// retrying for up to timeout (the first datagram each way may arrive
// before the receiving relay's permission exists: TURN drops those).
func Exchange(a, b *Relay, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	// Each relay must permit the other's address before it accepts its
	// datagrams; writing to a peer creates the permission.
	if _, err := b.Conn.WriteTo([]byte("permit"), a.Conn.LocalAddr()); err != nil {
		return fmt.Errorf("b -> a (permission): %w", err)
	}
	if err := oneWay(a, b, []byte("ping through the relay"), deadline); err != nil {
		return fmt.Errorf("a -> b: %w", err)
	}
	if err := oneWay(b, a, []byte("pong through the relay"), deadline); err != nil {
		return fmt.Errorf("b -> a: %w", err)
	}
	return nil
}

func oneWay(from, to *Relay, msg []byte, deadline time.Time) error {
	buf := make([]byte, 1500)
	for time.Now().Before(deadline) {
		if _, err := from.Conn.WriteTo(msg, to.Conn.LocalAddr()); err != nil {
			return fmt.Errorf("write: %w", err)
		}
		_ = to.Conn.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		for {
			n, src, err := to.Conn.ReadFrom(buf)
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				break // resend
			}
			if err != nil {
				return fmt.Errorf("read: %w", err)
			}
			if !bytes.Equal(buf[:n], msg) {
				continue // the permission datagram, or an earlier resend
			}
			if src.String() != from.Conn.LocalAddr().String() {
				return fmt.Errorf("datagram came from %v, not the sending relay %v", src, from.Conn.LocalAddr())
			}
			return nil
		}
	}
	return errors.New("no datagram arrived through the relays")
}

// quietLogs keeps pion's client quiet unless COURIER_TEST_LOG is set.
type quietLogs struct{}

func (quietLogs) NewLogger(scope string) logging.LeveledLogger {
	f := logging.NewDefaultLoggerFactory()
	f.DefaultLogLevel = logging.LogLevelDisabled
	if testLog() {
		f.DefaultLogLevel = logging.LogLevelDebug
	}
	return f.NewLogger(scope)
}

func testLog() bool { return os.Getenv("COURIER_TEST_LOG") != "" }
