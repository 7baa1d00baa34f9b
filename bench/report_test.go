package bench

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// TestReportJSONRoundTrips parses the JSON of real reports back: every
// figure, the histogram and the timeline survive, and they match the
// human summary.
func TestReportJSONRoundTrips(t *testing.T) {
	n := startNode(t)
	tests := []struct {
		name string
		run  func() (*Report, error)
	}{
		{"direct", func() (*Report, error) {
			return Direct(context.Background(), DirectConfig{Target: Target{URL: n.URL(), DurationLimit: time.Minute}, Pairs: 4, Messages: 25})
		}},
		{"fanout", func() (*Report, error) {
			return Fanout(context.Background(), FanoutConfig{Target: Target{URL: n.URL(), DurationLimit: time.Minute}, Members: 5, Senders: 2, Messages: 10})
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := tt.run()
			if err != nil {
				t.Fatal(err)
			}
			var js bytes.Buffer
			if err := r.WriteJSON(&js); err != nil {
				t.Fatal(err)
			}
			if lines := strings.Count(js.String(), "\n"); lines != 1 {
				t.Fatalf("the JSON report is %d lines, want one document on one line", lines)
			}
			back, err := ReadJSON(&js)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(r, back) {
				t.Fatalf("the report changed through JSON:\n%+v\n%+v", r, back)
			}

			h := back.LatencyHistogram()
			if h == nil || h.TotalCount() != back.Delivered {
				t.Fatalf("the parsed histogram does not count the %d deliveries", back.Delivered)
			}
			for _, q := range []struct {
				p    float64
				want float64
			}{{50, back.P50Ms}, {90, back.P90Ms}, {99, back.P99Ms}, {99.9, back.P999Ms}} {
				if got := quantileMs(h, q.p); got != q.want {
					t.Errorf("p%v from the parsed histogram = %v, the report says %v", q.p, got, q.want)
				}
			}
			v2, err := hdrhistogram.Decode([]byte(back.HistogramV2))
			if err != nil {
				t.Fatalf("histogram_v2: %v", err)
			}
			if v2.TotalCount() != h.TotalCount() || v2.ValueAtQuantile(99) != h.ValueAtQuantile(99) {
				t.Fatalf("histogram_v2 differs: %d values, p99 %d", v2.TotalCount(), v2.ValueAtQuantile(99))
			}

			// The summary table shows the same figures.
			var text bytes.Buffer
			if err := back.WriteText(&text); err != nil {
				t.Fatal(err)
			}
			rows := summaryRows(text.String())
			for label, want := range map[string]string{
				"sent":       fmt.Sprintf("%d (send errors %d)", back.Sent, back.SendErrors),
				"delivered":  fmt.Sprint(back.Delivered),
				"lost":       fmt.Sprint(back.Lost),
				"duplicates": fmt.Sprint(back.Duplicates),
				"reordered":  fmt.Sprint(back.Reordered),
				"msgs/s":     fmt.Sprintf("%.0f", back.MsgsPerSec),
				"latency ms": fmt.Sprintf("p50 %.2f  p90 %.2f  p99 %.2f  p99.9 %.2f", back.P50Ms, back.P90Ms, back.P99Ms, back.P999Ms),
			} {
				if got, ok := rows[label]; !ok || !strings.HasPrefix(got, want) {
					t.Errorf("summary %q = %q, the JSON says %q", label, got, want)
				}
			}
		})
	}
}

// summaryRows parses the table of WriteText: "  label   value".
func summaryRows(text string) map[string]string {
	rows := make(map[string]string)
	sc := bufio.NewScanner(strings.NewReader(text))
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "  ") {
			continue
		}
		label, value, ok := strings.Cut(strings.TrimSpace(line), "  ")
		if ok {
			rows[label] = strings.TrimSpace(value)
		}
	}
	return rows
}

func TestReportProblem(t *testing.T) {
	tests := []struct {
		name string
		r    Report
		want string // in the problem; "" for a clean report
	}{
		{"clean", Report{Sent: 10, Delivered: 10}, ""},
		{"clean fan-out", Report{Sent: 10, Expected: 40, Delivered: 40}, ""},
		{"lost", Report{Sent: 10, Delivered: 9, Lost: 1}, "lost 1"},
		{"duplicate", Report{Sent: 10, Delivered: 10, Duplicates: 1}, "duplicates 1"},
		{"reordered", Report{Sent: 10, Delivered: 10, Reordered: 1}, "reordered 1"},
		{"send errors", Report{Sent: 9, Delivered: 9, SendErrors: 1}, "1 sends failed or were cut off"},
		{"timed out", Report{Sent: 10, Delivered: 10, TimedOut: true}, "time bound"},
		{"stalled", Report{Sent: 10, Delivered: 10, Stalled: true}, "stall"},
		{"interrupted", Report{Sent: 10, Delivered: 10, Interrupted: true}, "interrupted"},
		{"short fan-out", Report{Sent: 10, Expected: 40, Delivered: 39}, "delivered 39 of 40"},
		{"reads missing", Report{Sent: 1, Delivered: 1, Mixed: &MixedFigures{ReadsMissing: 2}}, "2 read receipts"},
		{"storm failures", Report{Sent: 1, Delivered: 1, Storm: &StormFigures{ConnectFailures: 3}}, "3 clients could not reconnect"},
		{"conns clean", Report{Held: 5, Conns: &ConnsFigures{Count: 5, Connected: 5}}, ""},
		{"conns failed", Report{Held: 4, Conns: &ConnsFigures{Count: 5, Connected: 4, Failed: 1}}, "1 of 5 connections failed"},
		{"conns dropped", Report{Held: 4, Conns: &ConnsFigures{Count: 5, Connected: 5, Dropped: 1}}, "1 connections dropped"},
		{"conns short", Report{Held: 4, Conns: &ConnsFigures{Count: 5, Connected: 4}}, "held 4 of 5"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := tt.r.Problem()
			if tt.r.OK() != (tt.want == "") || !strings.Contains(p, tt.want) || (tt.want == "") != (p == "") {
				t.Fatalf("OK = %v, Problem = %q; want %q", tt.r.OK(), p, tt.want)
			}
		})
	}
}

func TestTimelineIsMergedForLongRuns(t *testing.T) {
	tests := []struct {
		steps     int
		wantLen   int
		wantStep  float64
		wantFirst int64
	}{
		{10, 10, 0.1, 1},
		{600, 600, 0.1, 1},
		{601, 301, 0.2, 2},
		{3000, 600, 0.5, 5},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.steps), func(t *testing.T) {
			counts := make([]int64, tt.steps)
			for i := range counts {
				counts[i] = 1
			}
			var r Report
			r.setTimeline("deliveries", counts)
			var sum int64
			for _, c := range r.Timeline.Counts {
				sum += c
			}
			if len(r.Timeline.Counts) != tt.wantLen || fmt.Sprintf("%.1f", r.Timeline.StepSec) != fmt.Sprintf("%.1f", tt.wantStep) ||
				r.Timeline.Counts[0] != tt.wantFirst || sum != int64(tt.steps) {
				t.Fatalf("%d steps -> %d of %.2fs (first %d, sum %d)", tt.steps, len(r.Timeline.Counts), r.Timeline.StepSec, r.Timeline.Counts[0], sum)
			}
		})
	}
}
