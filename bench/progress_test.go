package bench

import (
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// lockedWriter lets a test read what goroutines write.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func (l *lockedWriter) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.(*strings.Builder).String()
}

// TestProgressPrintsPlainLinesOffTerminal: a pipe or a file gets one plain
// line per interval and a final one, never a redrawn bar.
func TestProgressPrintsPlainLinesOffTerminal(t *testing.T) {
	out := &lockedWriter{w: &strings.Builder{}}
	con := newConsole(out, 40*time.Millisecond)
	if con.tty {
		t.Fatal("a strings.Builder taken for a terminal")
	}
	var done atomic.Int64
	m := con.track("sending", func() status { return status{Done: done.Load(), Total: 100, Unit: "msgs"} })
	for range 5 {
		done.Add(10)
		time.Sleep(40 * time.Millisecond)
	}
	m.Stop()
	m.Stop() // idempotent
	text := out.String()
	lines := strings.Split(strings.TrimSpace(text), "\n")
	if len(lines) < 3 || strings.Contains(text, "\r") || strings.Contains(text, "[#") {
		t.Fatalf("want plain periodic lines:\n%s", text)
	}
	last := lines[len(lines)-1]
	if !strings.HasPrefix(last, "bench: sending 50/100 msgs (50%)") || !strings.Contains(last, "(done)") {
		t.Fatalf("final line %q", last)
	}
}

func TestProgressQuietWithoutWriter(t *testing.T) {
	con := newConsole(nil, 0)
	con.say("nothing %d", 1)
	con.track("x", func() status { return status{} }).Stop()
}

func TestProgressText(t *testing.T) {
	tests := []struct {
		s     status
		rate  float64
		final bool
		want  string
		bar   string
	}{
		{status{Done: 25, Total: 100, Unit: "msgs"}, 12.4, false, "25/100 msgs (25%), 12/s, 2s", "[##......]"},
		{status{Done: 100, Total: 100, Unit: "msgs", Extra: "3 acked"}, 0, true, "100/100 msgs (100%), 50/s, 2s, 3 acked (done)", "[########]"},
		{status{Done: 7, Unit: "open"}, 3, false, "7 open, 3/s, 2s", "[........]"},
		{status{Done: 150, Total: 100, Unit: "x"}, 0, false, "150/100 x (100%), 0/s, 2s", "[########]"},
		{status{Done: 40, Total: 50, Unit: "open", NoRate: true}, 9, true, "40/50 open (80%), 2s (done)", "[######..]"},
	}
	for _, tt := range tests {
		if got := progressText(tt.s, tt.rate, 2*time.Second, tt.final); got != tt.want {
			t.Errorf("progressText = %q, want %q", got, tt.want)
		}
		if got := bar(tt.s, 8); got != tt.bar {
			t.Errorf("bar = %q, want %q", got, tt.bar)
		}
	}
}
