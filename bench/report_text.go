package bench

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
)

// WriteText writes the report for people: a title line and a table of
// figures, then the verdict.
func (r *Report) WriteText(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "courier bench %s: %s\n", r.Scenario, r.title())
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	for _, row := range r.rows() {
		fmt.Fprintf(tw, "  %s\t%s\n", row[0], row[1])
	}
	_ = tw.Flush()
	if p := r.Problem(); p != "" {
		fmt.Fprintf(&b, "FAILED: %s\n", p)
	} else if r.Conns != nil {
		b.WriteString("result: OK (every connection opened and held)\n")
	} else {
		b.WriteString("result: OK (every message exactly once, in order)\n")
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func (r *Report) title() string {
	gw := plural(len(r.Gateways), "gateway", "gateways")
	mode := r.Mode
	if r.Mode == "open-loop" {
		mode = fmt.Sprintf("open loop at %.0f msgs/s", r.Rate)
	} else if r.Window > 0 {
		mode = fmt.Sprintf("closed loop, window %d", r.Window)
	}
	if r.WarmupMessages > 0 {
		mode += fmt.Sprintf(", after a warm-up of %d each", r.WarmupMessages)
	}
	switch {
	case r.Conns != nil:
		c := r.Conns
		return fmt.Sprintf("%d connections over %s, held %v, %s", c.Count, plural(c.Procs, "process", "processes"), secs(c.HoldSec), gw)
	case r.Fanout != nil:
		f := r.Fanout
		return fmt.Sprintf("%s x %d members, %s x %d messages each, %s, %s", plural(f.Groups, "group", "groups"), f.Members, plural(f.Senders, "sender", "senders"), r.Messages, mode, gw)
	case r.Mixed != nil:
		m := r.Mixed
		return fmt.Sprintf("%d users, %d groups of %d-%d, %s, %s", m.Users, m.Groups, m.GroupMin, m.GroupMax, mode, gw)
	case r.Storm != nil:
		s := r.Storm
		return fmt.Sprintf("%d clients with %d pending messages each reconnect at once, %s", s.Clients, s.PendingPerClient, gw)
	default:
		return fmt.Sprintf("%d pairs x %d messages, %s, %s", r.Pairs, r.Messages, mode, gw)
	}
}

// plural is "1 group" or "2 groups".
func plural(n int, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return fmt.Sprintf("%d %s", n, many)
}

func secs(s float64) time.Duration {
	return time.Duration(s * float64(time.Second)).Round(time.Millisecond)
}

// rows are the table's label/value pairs.
func (r *Report) rows() [][2]string {
	var rows [][2]string
	add := func(label, format string, args ...any) {
		rows = append(rows, [2]string{label, fmt.Sprintf(format, args...)})
	}
	lat := fmt.Sprintf("p50 %.2f  p90 %.2f  p99 %.2f  p99.9 %.2f  max %.2f  mean %.2f", r.P50Ms, r.P90Ms, r.P99Ms, r.P999Ms, r.MaxMs, r.MeanMs)
	if c := r.Conns; c != nil {
		r.connsRows(add)
		add("connect ms", "%s", lat)
		return rows
	}
	add("setup", "%v", secs(r.SetupSec))
	add("sent", "%d (send errors %d)", r.Sent, r.SendErrors)
	if r.LastSendError != "" {
		add("last error", "%s", r.LastSendError)
	}
	add("expected", "%d", r.Expected)
	add("delivered", "%d", r.Delivered)
	add("lost", "%d", r.Lost)
	add("duplicates", "%d", r.Duplicates)
	add("reordered", "%d", r.Reordered)
	add("foreign", "%d", r.Foreign)
	add("receipts", "%d", r.DeliveredReceipts)
	add("reconnects", "%d", r.Reconnects)
	if m := r.Mixed; m != nil {
		add("1:1 sent", "%d (delivered %d)", m.DirectSent, m.DirectDelivered)
		add("group sent", "%d (deliveries %d)", m.GroupSent, m.GroupDelivered)
		add("reads", "%d marked, %d receipts back, %d missing", m.ReadsSent, m.ReadsReceived, m.ReadsMissing)
		add("forced drops", "%d", m.ForcedReconnects)
		add("typing", "%d sent (%d without a session), %d received (best effort)", m.TypingSent, m.TypingFailed, m.TypingReceived)
		add("presence", "%d subscriptions, %d updates received", m.PresenceSubscriptions, m.PresenceEvents)
	}
	if s := r.Storm; s != nil {
		add("caught up", "%d of %d clients (%d could not reconnect)", s.CaughtUp, s.Clients, s.ConnectFailures)
		add("all connected", "%v", secs(s.ConnectedSec))
		add("all caught up", "%v", secs(s.CatchUpSec))
	}
	add("elapsed", "%v", secs(r.ElapsedSec))
	add("msgs/s", "%.0f", r.MsgsPerSec)
	add("deliveries/s", "%.0f", r.DeliveriesPerSec)
	r.costRow(add)
	label := "latency ms"
	if r.Storm != nil {
		label = "catch-up ms"
	}
	add(label, "%s", lat)
	return rows
}

func (r *Report) connsRows(add func(label, format string, args ...any)) {
	c := r.Conns
	add("connected", "%d of %d (failed %d)", c.Connected, c.Count, c.Failed)
	add("held", "%d (dropped while held %d)", r.Held, c.Dropped)
	add("connect time", "%v", secs(c.ConnectSec))
	add("connects/s", "%.0f", c.ConnectsPerSec)
	if c.ServerNote != "" {
		add("server", "%s", c.ServerNote)
	}
	add("rss/conn", "%.2f KiB", r.RSSPerConnKiB)
	add("goroutines/conn", "%.2f", c.GoroutinesPerConn)
	for _, s := range c.Servers {
		add("  "+s.Name, "rss %.1f -> %.1f MiB, goroutines %d -> %d, sessions %d",
			float64(s.Before.RSSBytes)/(1<<20), float64(s.After.RSSBytes)/(1<<20),
			s.Before.Goroutines, s.After.Goroutines, s.After.Sessions)
	}
	for _, p := range c.Processes {
		add(fmt.Sprintf("  worker %d", p.Index), "%d/%d connected, held %d, dropped %d, %.0f conns/s, client rss %.1f MiB",
			p.Connected, p.Count, p.Held, p.Dropped, p.ConnectsPerSec, float64(p.RSSBytes)/(1<<20))
	}
	for _, e := range c.Errors {
		add("  error", "%s", e)
	}
}

// costRow says what a message cost in CPU, the bench's and the servers'.
func (r *Report) costRow(add func(label, format string, args ...any)) {
	switch {
	case r.ServerCPUError != "":
		add("cpu/msg", "bench %.1f µs, server unknown: %s", r.BenchCPUUsPerMsg, r.ServerCPUError)
	case r.ServerCPUUsPerMsg > 0:
		add("cpu/msg", "bench %.1f µs, server %.1f µs", r.BenchCPUUsPerMsg, r.ServerCPUUsPerMsg)
	case r.BenchCPUUsPerMsg > 0:
		add("cpu/msg", "bench %.1f µs (--server-pid adds the server's)", r.BenchCPUUsPerMsg)
	}
}
