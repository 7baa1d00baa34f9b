package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// Report is the outcome of a run. Its JSON keys are a contract: other
// tools parse them. Figures a scenario does not measure are zero.
type Report struct {
	Scenario string `json:"scenario"`
	Pairs    int    `json:"pairs"`
	Messages int    `json:"messages"`
	// WarmupMessages is how many messages each sender sent in an
	// unmeasured run before this one (direct --warmup).
	WarmupMessages int `json:"warmup_messages,omitempty"`
	Window         int `json:"window"`
	// Mode is "closed-loop" (each sender keeps Window sends in flight, as
	// fast as the server answers) or "open-loop" (sends go out on a
	// schedule of Rate messages a second in all).
	Mode string  `json:"mode"`
	Rate float64 `json:"rate"`
	// Gateways are the server URLs the clients were spread over.
	Gateways []string `json:"gateways"`

	// Sent counts messages the server acknowledged (single tick).
	Sent int64 `json:"sent"`
	// SendErrors counts sends that failed or were cut off by the time bound.
	SendErrors int64 `json:"send_errors"`
	// LastSendError is the last of them, for a first clue.
	LastSendError string `json:"last_send_error,omitempty"`
	// Expected counts the deliveries the acknowledged messages owe: one
	// per message in 1:1, one per other member in a group.
	Expected int64 `json:"expected"`
	// Delivered counts distinct deliveries the receivers got.
	Delivered int64 `json:"delivered"`
	// Lost counts expected deliveries that never arrived.
	Lost int64 `json:"lost"`
	// Duplicates counts messages a receiver got more than once.
	Duplicates int64 `json:"duplicates"`
	// Reordered counts messages that arrived after a later message of the
	// same sender in the same conversation.
	Reordered int64 `json:"reordered"`
	// Foreign counts messages that arrived at the wrong receiver or could
	// not be parsed.
	Foreign int64 `json:"foreign"`

	// DeliveredReceipts counts the delivered receipts (double ticks) the
	// senders got while the run lasted.
	DeliveredReceipts int64 `json:"delivered_receipts"`
	// Reconnects counts sessions the SDK had to reopen.
	Reconnects int64 `json:"reconnects"`

	SetupSec   float64 `json:"setup_sec"`
	ElapsedSec float64 `json:"elapsed_sec"`
	// MsgsPerSec is acknowledged messages per second of the run in group
	// scenarios, and delivered messages per second in 1:1 ones.
	MsgsPerSec float64 `json:"msgs_per_sec"`
	// DeliveriesPerSec is deliveries (a message reaching one member) per
	// second: the fan-out throughput.
	DeliveriesPerSec float64 `json:"deliveries_per_sec"`
	P50Ms            float64 `json:"p50_ms"`
	P90Ms            float64 `json:"p90_ms"`
	P99Ms            float64 `json:"p99_ms"`
	P999Ms           float64 `json:"p999_ms"`
	MaxMs            float64 `json:"max_ms"`
	MeanMs           float64 `json:"mean_ms"`
	// LatencyOf says what the percentiles measure.
	LatencyOf string `json:"latency_of"`

	// BenchCPUUsPerMsg is the bench process's CPU time (user + system) per
	// message while it sent and received.
	BenchCPUUsPerMsg float64 `json:"bench_cpu_us_per_msg"`
	// ServerCPUUsPerMsg is the same for the local server processes named
	// by --server-pid (0 without them).
	ServerCPUUsPerMsg float64 `json:"server_cpu_us_per_msg,omitempty"`
	// ServerCPUError says why the servers' CPU could not be read.
	ServerCPUError string `json:"server_cpu_error,omitempty"`

	// Held counts connections still open at the end of the hold (conns).
	Held int64 `json:"held"`
	// RSSPerConnKiB is the servers' resident memory growth per held
	// connection (conns).
	RSSPerConnKiB float64 `json:"rss_per_conn_kib"`

	// TimedOut: the time bound ended the run before every message arrived.
	TimedOut bool `json:"timed_out"`
	// Stalled: the bench gave up waiting for the last deliveries because
	// none arrived for the stall timeout (the missing ones are Lost).
	Stalled bool `json:"stalled"`
	// Interrupted: a signal ended the run; the figures are what was
	// measured until then.
	Interrupted bool `json:"interrupted"`

	Fanout *FanoutFigures `json:"fanout,omitempty"`
	Mixed  *MixedFigures  `json:"mixed,omitempty"`
	Storm  *StormFigures  `json:"storm,omitempty"`
	Conns  *ConnsFigures  `json:"conns,omitempty"`

	// Histogram is the full latency histogram (microseconds), as
	// HdrHistogram's exported snapshot; LatencyHistogram rebuilds it.
	Histogram *hdrhistogram.Snapshot `json:"histogram,omitempty"`
	// HistogramV2 is the same histogram in HdrHistogram's compressed V2
	// encoding (base64), which HdrHistogram tools in any language read.
	HistogramV2 string `json:"histogram_v2,omitempty"`
	// Timeline counts events (deliveries, or connections in conns) over
	// the run, for the throughput plot.
	Timeline Timeline `json:"timeline"`
}

// Timeline is a count of events per step since the measured phase began.
type Timeline struct {
	Of      string  `json:"of"`
	StepSec float64 `json:"step_sec"`
	Counts  []int64 `json:"counts"`
}

// FanoutFigures describe a fanout run.
type FanoutFigures struct {
	Groups  int `json:"groups"`
	Members int `json:"members"`
	Senders int `json:"senders_per_group"`
}

// MixedFigures break a mixed run down by kind of traffic.
type MixedFigures struct {
	Users           int     `json:"users"`
	Groups          int     `json:"groups"`
	GroupMin        int     `json:"group_min"`
	GroupMax        int     `json:"group_max"`
	GroupShare      float64 `json:"group_share"`
	ReadShare       float64 `json:"read_share"`
	DirectSent      int64   `json:"direct_sent"`
	GroupSent       int64   `json:"group_sent"`
	DirectDelivered int64   `json:"direct_delivered"`
	GroupDelivered  int64   `json:"group_delivered"`
	ReadsSent       int64   `json:"reads_sent"`
	ReadsReceived   int64   `json:"reads_received"`
	ReadsMissing    int64   `json:"reads_missing"`
	// ReadsRepeated counts read receipts that came again (a MarkRead the
	// SDK retried over a new connection): allowed, receipts are
	// at-least-once.
	ReadsRepeated    int64 `json:"reads_repeated"`
	ForcedReconnects int64 `json:"forced_reconnects"`
	// Typing and presence are best effort (never stored, dropped first
	// under pressure): counted, not verified. TypingFailed counts
	// indicators a client could not send (no session during a drop).
	TypingShare           float64 `json:"typing_share"`
	TypingSent            int64   `json:"typing_sent"`
	TypingFailed          int64   `json:"typing_failed"`
	TypingReceived        int64   `json:"typing_received"`
	PresenceSubscriptions int64   `json:"presence_subscriptions"`
	PresenceEvents        int64   `json:"presence_events"`
}

// StormFigures describe a reconnect storm.
type StormFigures struct {
	Clients          int `json:"clients"`
	Senders          int `json:"senders"`
	PendingPerClient int `json:"pending_per_client"`
	// CaughtUp counts clients that got their whole inbox back.
	CaughtUp int `json:"caught_up"`
	// ConnectedSec is how long until every client was connected again,
	// CatchUpSec until every one had its whole inbox.
	ConnectedSec float64 `json:"connected_sec"`
	CatchUpSec   float64 `json:"catch_up_sec"`
	// ConnectFailures counts clients that could not reconnect at all.
	ConnectFailures int64 `json:"connect_failures"`
}

// OK reports whether the run delivered every message exactly once, in
// order (conns: held every connection), and ran to its end.
func (r *Report) OK() bool { return r.Problem() == "" }

// Problem describes why OK is false ("" when it is not).
func (r *Report) Problem() string {
	var p []string
	if r.Interrupted {
		p = append(p, "interrupted before the end (the figures are what was measured so far)")
	}
	if r.Lost > 0 || r.Duplicates > 0 || r.Reordered > 0 || r.Foreign > 0 {
		p = append(p, fmt.Sprintf("delivery violated: lost %d, duplicates %d, reordered %d, foreign %d", r.Lost, r.Duplicates, r.Reordered, r.Foreign))
	}
	if m := r.Mixed; m != nil && m.ReadsMissing > 0 {
		p = append(p, fmt.Sprintf("%d read receipts never arrived", m.ReadsMissing))
	}
	if s := r.Storm; s != nil && s.ConnectFailures > 0 {
		p = append(p, fmt.Sprintf("%d clients could not reconnect", s.ConnectFailures))
	}
	if c := r.Conns; c != nil {
		if c.Failed > 0 {
			p = append(p, fmt.Sprintf("%d of %d connections failed", c.Failed, c.Count))
		}
		if c.Dropped > 0 {
			p = append(p, fmt.Sprintf("%d connections dropped while held", c.Dropped))
		}
		if len(p) == 0 && r.Held < int64(c.Count) {
			p = append(p, fmt.Sprintf("held %d of %d connections", r.Held, c.Count))
		}
	}
	if r.SendErrors > 0 {
		p = append(p, fmt.Sprintf("%d sends failed or were cut off", r.SendErrors))
	}
	if r.TimedOut {
		p = append(p, "the time bound ended the run")
	}
	if r.Stalled {
		p = append(p, "gave up waiting: no delivery arrived for the stall timeout")
	}
	want := r.Expected
	if want == 0 {
		want = r.Sent
	}
	if len(p) == 0 && r.Conns == nil && r.Delivered != want {
		p = append(p, fmt.Sprintf("delivered %d of %d expected", r.Delivered, want))
	}
	return strings.Join(p, "; ")
}

// setLatency fills the percentiles and the histogram from a histogram of
// microseconds.
func (r *Report) setLatency(h *hdrhistogram.Histogram) {
	r.P50Ms = quantileMs(h, 50)
	r.P90Ms = quantileMs(h, 90)
	r.P99Ms = quantileMs(h, 99)
	r.P999Ms = quantileMs(h, 99.9)
	r.MaxMs = float64(h.Max()) / 1000
	r.MeanMs = h.Mean() / 1000
	r.Histogram = h.Export()
	if b, err := h.Encode(hdrhistogram.V2CompressedEncodingCookieBase); err == nil {
		r.HistogramV2 = string(b)
	}
}

// maxTimelinePoints bounds the timeline in a report; longer runs are
// counted in coarser steps.
const maxTimelinePoints = 600

// setTimeline stores counts per TimelineStep, merged into coarser steps
// when the run was long.
func (r *Report) setTimeline(of string, counts []int64) {
	k := max(1, (len(counts)+maxTimelinePoints-1)/maxTimelinePoints)
	out := make([]int64, 0, (len(counts)+k-1)/k)
	for i := 0; i < len(counts); i += k {
		var n int64
		for _, c := range counts[i:min(i+k, len(counts))] {
			n += c
		}
		out = append(out, n)
	}
	r.Timeline = Timeline{Of: of, StepSec: (TimelineStep * time.Duration(k)).Seconds(), Counts: out}
}

// LatencyHistogram rebuilds the latency histogram (nil when the report
// has none).
func (r *Report) LatencyHistogram() *hdrhistogram.Histogram {
	if r.Histogram == nil || len(r.Histogram.Counts) == 0 {
		return nil
	}
	s := *r.Histogram
	s.Counts = append([]int64(nil), s.Counts...)
	return hdrhistogram.Import(&s)
}

// WriteJSON writes the report as one JSON object on one line.
func (r *Report) WriteJSON(w io.Writer) error {
	return json.NewEncoder(w).Encode(r)
}

// ReadJSON parses a report WriteJSON wrote.
func ReadJSON(rd io.Reader) (*Report, error) {
	var r Report
	if err := json.NewDecoder(rd).Decode(&r); err != nil {
		return nil, fmt.Errorf("bench: read report: %w", err)
	}
	return &r, nil
}
