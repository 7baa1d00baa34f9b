package turn

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"time"
)

// DefaultRealm is the default of Config.Realm.
const DefaultRealm = "courier"

// Config configures the TURN service. Zero values take the defaults named;
// the node fills Listen and Secret (node/node.go).
type Config struct {
	// Listen is the embedded server's UDP address, host:port. Empty with
	// URIs set: no embedded server. The node defaults it next to the
	// gateway (see node.Config.TURN).
	Listen string
	// RelayIP is the address clients and peers reach the server and its
	// relays on: the host of the issued turn: URIs and of every relayed
	// transport address. Default: Listen's host when it names one,
	// otherwise this machine's first global unicast IPv4 address (behind a
	// NAT or with several interfaces, set it). Relay sockets bind to
	// Listen's host, or every address when that is unspecified.
	RelayIP string
	// URIs point clients at external TURN servers (coturn with
	// use-auth-secret and static-auth-secret=Secret, for one) instead of
	// the embedded one: with URIs set no server runs here.
	URIs []string
	// Secret is the shared secret credentials are signed with. Required.
	Secret []byte
	// TTL is how long issued credentials stay valid (default DefaultTTL).
	TTL time.Duration
	// Realm is the embedded server's realm (default DefaultRealm).
	Realm string
	// AllowLoopbackPeers lets relays send to loopback peers, and
	// AllowPrivatePeers to private (RFC 1918, fc00::/7) ones. Both default to
	// on exactly when RelayIP is itself of that kind (a one-machine or LAN
	// deployment, where the other party's relay lives there too); from a
	// public relay they are refused, so the relay cannot be used to reach
	// the server's own network. Link-local, multicast and unspecified peers
	// are always refused.
	AllowLoopbackPeers, AllowPrivatePeers *bool
	// Now is the clock credentials are issued and checked by (default
	// time.Now); tests inject one.
	Now    func() time.Time
	Logger *slog.Logger
}

// embedded reports whether this configuration runs a server here.
func (c Config) embedded() bool { return len(c.URIs) == 0 }

func (c Config) withDefaults() (Config, error) {
	if c.TTL == 0 {
		c.TTL = DefaultTTL
	}
	if c.Realm == "" {
		c.Realm = DefaultRealm
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if !c.embedded() {
		return c, nil
	}
	if c.RelayIP == "" {
		host, _, err := net.SplitHostPort(c.Listen)
		if err != nil {
			return c, fmt.Errorf("turn: listen address %q: %w", c.Listen, err)
		}
		if ip := net.ParseIP(host); ip != nil && !ip.IsUnspecified() {
			c.RelayIP = ip.String()
		} else if ip, err := firstGlobalIPv4(); err == nil {
			c.RelayIP = ip.String()
			c.Logger.Info("turn: relaying on this machine's first global address; set --turn-relay-ip when peers reach it on another", "relay_ip", c.RelayIP)
		} else {
			return c, fmt.Errorf("turn: listen address %q names no host and %w: set the relay address (--turn-relay-ip)", c.Listen, err)
		}
	}
	relay := net.ParseIP(c.RelayIP)
	if c.AllowLoopbackPeers == nil {
		c.AllowLoopbackPeers = ptr(relay != nil && relay.IsLoopback())
	}
	if c.AllowPrivatePeers == nil {
		c.AllowPrivatePeers = ptr(relay != nil && (relay.IsPrivate() || relay.IsLoopback()))
	}
	return c, nil
}

func (c Config) validate() error {
	var errs []error
	if len(c.Secret) == 0 {
		errs = append(errs, errors.New("turn: no shared secret"))
	}
	if c.TTL < 0 {
		errs = append(errs, fmt.Errorf("turn: credential ttl %v is negative", c.TTL))
	}
	for _, u := range c.URIs {
		if !strings.HasPrefix(u, "turn:") && !strings.HasPrefix(u, "turns:") {
			errs = append(errs, fmt.Errorf("turn: URI %q is neither turn: nor turns:", u))
		}
	}
	if c.embedded() {
		if ip := net.ParseIP(c.RelayIP); ip == nil || ip.IsUnspecified() {
			errs = append(errs, fmt.Errorf("turn: relay address %q is not a usable IP", c.RelayIP))
		}
	}
	return errors.Join(errs...)
}

func firstGlobalIPv4() (net.IP, error) {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil, fmt.Errorf("list interface addresses: %w", err)
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil && n.IP.IsGlobalUnicast() {
			return n.IP.To4(), nil
		}
	}
	return nil, errors.New("this machine has no global unicast IPv4 address")
}

func ptr[T any](v T) *T { return &v }
