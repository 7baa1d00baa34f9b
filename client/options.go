package client

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"time"
)

// Defaults of the tunable options.
const (
	DefaultAckInterval    = 30 * time.Millisecond
	DefaultRequestTimeout = 10 * time.Second
	DefaultKeepAlive      = 20 * time.Second
	DefaultEntryBuffer    = 1024
	DefaultDedupeWindow   = 4096
	DefaultMinBackoff     = 100 * time.Millisecond
	DefaultMaxBackoff     = 10 * time.Second
	defaultWriteTimeout   = 10 * time.Second
	defaultHandshake      = 10 * time.Second
)

// Option configures Register and Dial.
type Option func(*config)

type config struct {
	tlsConfig      *tls.Config
	caFile         string
	json           bool
	logger         *slog.Logger
	ackInterval    time.Duration
	httpClient     *http.Client
	requestTimeout time.Duration
	keepAlive      time.Duration
	entryBuffer    int
	dedupeWindow   int
	minBackoff     time.Duration
	maxBackoff     time.Duration
	resumeAfter    uint64
	servers        []string
	e2eeFile       string
	connState      func(ConnEvent)
	// noFrameLimit: send frames whatever the server's limit (tests of the
	// server's refusals).
	noFrameLimit bool
	// verifyChallenge and verifyCode: Register's verification
	// (WithVerificationCode).
	verifyChallenge, verifyCode string
}

// WithTLSConfig sets the TLS configuration of https and wss connections.
func WithTLSConfig(c *tls.Config) Option { return func(o *config) { o.tlsConfig = c } }

// WithCAFile trusts the PEM certificates in path (a private CA) for https
// and wss connections, in addition to the configured TLS settings.
func WithCAFile(path string) Option { return func(o *config) { o.caFile = path } }

// WithJSON speaks the "json" subprotocol (protojson text frames) instead of
// binary protobuf frames.
func WithJSON() Option { return func(o *config) { o.json = true } }

// WithLogger sets where the SDK logs reconnects and protocol oddities
// (default: discard).
func WithLogger(l *slog.Logger) Option { return func(o *config) { o.logger = l } }

// WithAckInterval sets how long the SDK collects handed-out entries before
// it acknowledges them with one cumulative Ack (default 30ms).
func WithAckInterval(d time.Duration) Option { return func(o *config) { o.ackInterval = d } }

// WithHTTPClient sets the client of the HTTP API calls (register, token,
// lookup). WithTLSConfig and WithCAFile then only apply to the WebSocket.
func WithHTTPClient(c *http.Client) Option { return func(o *config) { o.httpClient = c } }

// WithRequestTimeout sets how long a request waits for its answer on one
// socket before it is written again (default 10s). Sends are idempotent, so
// writing again is safe.
func WithRequestTimeout(d time.Duration) Option { return func(o *config) { o.requestTimeout = d } }

// WithKeepAlive sets how often an idle socket is pinged (default 20s); a
// socket that hears nothing for two intervals is dropped and reconnected.
func WithKeepAlive(d time.Duration) Option { return func(o *config) { o.keepAlive = d } }

// WithEntryBuffer bounds how many received entries wait for the application
// (default 1024). See the package documentation on backpressure.
func WithEntryBuffer(n int) Option { return func(o *config) { o.entryBuffer = n } }

// WithDedupeWindow sets how many recent messages (by sender and
// client_msg_id) are remembered to suppress duplicates (default 4096).
func WithDedupeWindow(n int) Option { return func(o *config) { o.dedupeWindow = n } }

// WithBackoff bounds the jittered exponential reconnect delay
// (default 100ms to 10s).
func WithBackoff(minDelay, maxDelay time.Duration) Option {
	return func(o *config) { o.minBackoff, o.maxBackoff = minDelay, maxDelay }
}

// WithResumeAfter starts the first session after this inbox_seq, for an
// application that persisted LastSeq across restarts. Entries up to it are
// acknowledged on connect.
func WithResumeAfter(seq uint64) Option { return func(o *config) { o.resumeAfter = seq } }

// WithServers adds gateways of the same cluster to fail over to: when the
// current one cannot be reached, the next connection attempt goes to the
// next server in the list (the credentials' BaseURL first). Tokens are valid
// on every node of a cluster, so nothing else changes.
func WithServers(urls ...string) Option {
	return func(o *config) { o.servers = append(o.servers, urls...) }
}

func buildConfig(opts []Option) (config, error) {
	c := config{
		ackInterval:    DefaultAckInterval,
		requestTimeout: DefaultRequestTimeout,
		keepAlive:      DefaultKeepAlive,
		entryBuffer:    DefaultEntryBuffer,
		dedupeWindow:   DefaultDedupeWindow,
		minBackoff:     DefaultMinBackoff,
		maxBackoff:     DefaultMaxBackoff,
	}
	for _, o := range opts {
		o(&c)
	}
	if c.logger == nil {
		c.logger = slog.New(slog.DiscardHandler)
	}
	if c.ackInterval <= 0 {
		c.ackInterval = DefaultAckInterval
	}
	if c.requestTimeout <= 0 {
		c.requestTimeout = DefaultRequestTimeout
	}
	if c.keepAlive <= 0 {
		c.keepAlive = DefaultKeepAlive
	}
	if c.entryBuffer <= 0 {
		c.entryBuffer = DefaultEntryBuffer
	}
	if c.dedupeWindow <= 0 {
		c.dedupeWindow = DefaultDedupeWindow
	}
	if c.caFile != "" {
		pem, err := os.ReadFile(c.caFile)
		if err != nil {
			return c, fmt.Errorf("read CA file: %w", err)
		}
		var t *tls.Config
		if c.tlsConfig != nil {
			t = c.tlsConfig.Clone()
		} else {
			t = &tls.Config{MinVersion: tls.VersionTLS12}
		}
		pool := t.RootCAs
		if pool == nil {
			if pool, err = x509.SystemCertPool(); err != nil || pool == nil {
				pool = x509.NewCertPool()
			}
		}
		if !pool.AppendCertsFromPEM(pem) {
			return c, fmt.Errorf("CA file %s holds no PEM certificate", c.caFile)
		}
		t.RootCAs = pool
		c.tlsConfig = t
	}
	if c.httpClient == nil {
		c.httpClient = httpClientFor(c.tlsConfig)
	}
	return c, nil
}

var sharedHTTP = &http.Client{Transport: newTransport(nil), Timeout: 30 * time.Second}

// httpClientFor shares one pooled client among every Client without a TLS
// configuration of its own.
func httpClientFor(t *tls.Config) *http.Client {
	if t == nil {
		return sharedHTTP
	}
	return &http.Client{Transport: newTransport(t), Timeout: 30 * time.Second}
}

func newTransport(t *tls.Config) *http.Transport {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = 64
	if t != nil {
		tr.TLSClientConfig = t
	}
	return tr
}

// TLSConfigWithCA returns a TLS configuration that trusts the PEM
// certificates in caFile besides the system roots: for programs that open
// many Clients and share one configuration (WithTLSConfig) and one
// WithHTTPClient.
func TLSConfigWithCA(caFile string) (*tls.Config, error) {
	c, err := buildConfig([]Option{WithCAFile(caFile)})
	if err != nil {
		return nil, err
	}
	return c.tlsConfig, nil
}

// NewHTTPClient returns a pooled HTTP client for the API calls of many
// Clients, using t for https (nil: system defaults).
func NewHTTPClient(t *tls.Config, maxIdlePerHost int) *http.Client {
	tr := newTransport(t)
	if maxIdlePerHost > 0 {
		tr.MaxIdleConnsPerHost = maxIdlePerHost
	}
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}
}
