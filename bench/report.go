package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// Report is the outcome of a run. Its JSON keys are a contract: other
// tools parse them.
type Report struct {
	Scenario string `json:"scenario"`
	Pairs    int    `json:"pairs"`
	Messages int    `json:"messages"`
	Window   int    `json:"window"`

	// Sent counts messages the server acknowledged (single tick).
	Sent int64 `json:"sent"`
	// SendErrors counts sends that failed or were cut off by the time bound.
	SendErrors int64 `json:"send_errors"`
	// Delivered counts distinct messages the receivers got.
	Delivered int64 `json:"delivered"`
	// Lost counts acknowledged messages no receiver got.
	Lost int64 `json:"lost"`
	// Duplicates counts messages a receiver got more than once.
	Duplicates int64 `json:"duplicates"`
	// Reordered counts messages that arrived after a later message of the
	// same sender.
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
	MsgsPerSec float64 `json:"msgs_per_sec"`
	P50Ms      float64 `json:"p50_ms"`
	P90Ms      float64 `json:"p90_ms"`
	P99Ms      float64 `json:"p99_ms"`
	P999Ms     float64 `json:"p999_ms"`
	MaxMs      float64 `json:"max_ms"`
	MeanMs     float64 `json:"mean_ms"`
	// TimedOut: the time bound ended the run before every message arrived.
	TimedOut bool `json:"timed_out"`
}

// OK reports whether the run delivered every message exactly once, in order.
func (r *Report) OK() bool {
	return r.Lost == 0 && r.Duplicates == 0 && r.Reordered == 0 && r.Foreign == 0 &&
		r.SendErrors == 0 && !r.TimedOut && r.Delivered == r.Sent
}

// Problem describes why OK is false ("" when it is not).
func (r *Report) Problem() string {
	switch {
	case r.OK():
		return ""
	case r.Lost > 0 || r.Duplicates > 0 || r.Reordered > 0 || r.Foreign > 0:
		return fmt.Sprintf("delivery violated: lost %d, duplicates %d, reordered %d, foreign %d", r.Lost, r.Duplicates, r.Reordered, r.Foreign)
	case r.SendErrors > 0:
		return fmt.Sprintf("%d sends failed", r.SendErrors)
	case r.TimedOut:
		return "the time bound ended the run"
	default:
		return fmt.Sprintf("delivered %d of %d sent", r.Delivered, r.Sent)
	}
}

// setLatency fills the percentiles from a histogram of microseconds.
func (r *Report) setLatency(h *hdrhistogram.Histogram) {
	ms := func(us int64) float64 { return float64(us) / 1000 }
	r.P50Ms = ms(h.ValueAtQuantile(50))
	r.P90Ms = ms(h.ValueAtQuantile(90))
	r.P99Ms = ms(h.ValueAtQuantile(99))
	r.P999Ms = ms(h.ValueAtQuantile(99.9))
	r.MaxMs = ms(h.Max())
	r.MeanMs = h.Mean() / 1000
}

// WriteJSON writes the report as one JSON object on one line.
func (r *Report) WriteJSON(w io.Writer) error {
	return json.NewEncoder(w).Encode(r)
}

// WriteText writes the report for people.
func (r *Report) WriteText(w io.Writer) error {
	dur := func(s float64) time.Duration { return time.Duration(s * float64(time.Second)).Round(time.Millisecond) }
	_, err := fmt.Fprintf(w, `courier bench %s: %d pairs x %d messages, window %d
setup:       %v (register + connect %d clients)
sent:        %d (send errors %d)
delivered:   %d
lost:        %d
duplicates:  %d
reordered:   %d
receipts:    %d delivered receipts seen by senders
reconnects:  %d
elapsed:     %v
msgs/s:      %.0f
latency ms:  p50 %.2f  p90 %.2f  p99 %.2f  p99.9 %.2f  max %.2f  mean %.2f
`, r.Scenario, r.Pairs, r.Messages, r.Window,
		dur(r.SetupSec), 2*r.Pairs,
		r.Sent, r.SendErrors, r.Delivered, r.Lost, r.Duplicates, r.Reordered,
		r.DeliveredReceipts, r.Reconnects, dur(r.ElapsedSec), r.MsgsPerSec,
		r.P50Ms, r.P90Ms, r.P99Ms, r.P999Ms, r.MaxMs, r.MeanMs)
	if err != nil {
		return err
	}
	if p := r.Problem(); p != "" {
		_, err = fmt.Fprintf(w, "FAILED:      %s\n", p)
	} else {
		_, err = fmt.Fprintln(w, "result:      OK (every message exactly once, in order)")
	}
	return err
}
