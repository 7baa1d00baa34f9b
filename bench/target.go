package bench

import (
	"errors"
	"io"
	"log/slog"
	"time"
)

// Target is what the SDK scenarios (Direct, Fanout, Mixed, Storm and
// Presence) share: the server, how their clients reach it, and how the run
// is bounded and reported. Each scenario's config embeds it.
type Target struct {
	// URL of the server: ws://, wss://, http:// or https://. Several
	// gateways of one cluster may be given, separated by commas: clients are
	// spread over them and fail over to the others.
	URL string
	// Concurrency bounds registrations and connects in flight (default 64).
	Concurrency int
	// CAFile trusts a private CA for https/wss.
	CAFile string
	// JSON makes the clients use the json subprotocol.
	JSON bool
	// AckInterval is the SDK's ack batching interval (0: SDK default).
	AckInterval time.Duration
	// Logger receives SDK logs (default: discard).
	Logger *slog.Logger
	// DurationLimit bounds the whole run (0: no bound but ctx).
	DurationLimit time.Duration
	// Progress receives phase lines and a progress bar (a terminal) or
	// periodic progress lines (anything else); nil: quiet.
	Progress io.Writer
	// ProgressInterval is the period of plain progress lines (default 2s).
	ProgressInterval time.Duration
}

// withDefaults requires a URL and fills in the default concurrency. The
// scenarios check the sign of Concurrency along with their own numbers.
func (t Target) withDefaults() (Target, error) {
	if t.URL == "" {
		return t, errors.New("bench: a server URL is required")
	}
	t.Concurrency = orDefault(t.Concurrency, 64)
	return t, nil
}

// net is how the scenario's clients reach the server.
func (t Target) net() netConfig {
	return netConfig{Target: t}
}
