package bench

import (
	"fmt"
	"io"
	"strings"
	"sync"
	"time"
)

// console is where a run tells a person how it is going: phase lines, and
// a progress bar redrawn in place on a terminal or plain periodic lines
// anywhere else (a file, a pipe, CI). A nil writer makes it quiet.
type console struct {
	w     io.Writer
	tty   bool
	every time.Duration // plain-line interval

	mu      sync.Mutex
	barLive bool // a bar is drawn on the current terminal line
}

// Progress intervals: a bar redraws often; plain lines must not flood logs.
const (
	barInterval   = 200 * time.Millisecond
	plainInterval = 2 * time.Second
)

func newConsole(w io.Writer, every time.Duration) *console {
	if every <= 0 {
		every = plainInterval
	}
	return &console{w: w, tty: w != nil && isTerminal(w), every: every}
}

// say prints one phase line.
func (c *console) say(format string, args ...any) {
	if c == nil || c.w == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.clearBarLocked()
	fmt.Fprintf(c.w, "bench: "+format+"\n", args...)
}

func (c *console) clearBarLocked() {
	if c.barLive {
		fmt.Fprint(c.w, "\r\033[K")
		c.barLive = false
	}
}

// status is one progress reading.
type status struct {
	Done, Total int64  // Total 0: unknown
	Unit        string // what Done counts ("msgs", "conns")
	Extra       string // anything else worth a glance
	NoRate      bool   // Done is a level (e.g. open connections), not a count
}

// meter shows a phase's progress until stopped.
type meter struct {
	c     *console
	phase string
	read  func() status
	start time.Time
	stop  chan struct{}
	done  chan struct{}
}

// track starts showing read() under phase; stop the meter when the phase
// ends (it prints the final reading once).
func (c *console) track(phase string, read func() status) *meter {
	m := &meter{c: c, phase: phase, read: read, start: time.Now(), stop: make(chan struct{}), done: make(chan struct{})}
	if c == nil || c.w == nil {
		close(m.done)
		return m
	}
	go m.loop()
	return m
}

func (m *meter) loop() {
	defer close(m.done)
	every := m.c.every
	if m.c.tty {
		every = barInterval
	}
	t := time.NewTicker(every)
	defer t.Stop()
	prev, prevAt := m.read().Done, time.Now()
	for {
		select {
		case <-m.stop:
			m.show(m.read(), 0, true)
			return
		case now := <-t.C:
			s := m.read()
			rate := float64(s.Done-prev) / now.Sub(prevAt).Seconds()
			prev, prevAt = s.Done, now
			m.show(s, rate, false)
		}
	}
}

// Stop ends the meter and waits for its goroutine.
func (m *meter) Stop() {
	if m == nil {
		return
	}
	select {
	case <-m.stop:
	default:
		close(m.stop)
	}
	<-m.done
}

func (m *meter) show(s status, rate float64, final bool) {
	elapsed := time.Since(m.start)
	line := m.phase + " " + progressText(s, rate, elapsed, final)
	m.c.mu.Lock()
	defer m.c.mu.Unlock()
	switch {
	case m.c.tty && !final:
		// One terminal row, or the carriage return cannot redraw it.
		text := bar(s, 24) + " " + line
		if width := terminalWidth(m.c.w); width > 1 && len(text) >= width {
			text = text[:width-1]
		}
		fmt.Fprintf(m.c.w, "\r\033[K%s", text)
		m.c.barLive = true
	case m.c.tty:
		m.c.clearBarLocked()
		fmt.Fprintf(m.c.w, "bench: %s\n", line)
	default:
		fmt.Fprintf(m.c.w, "bench: %s\n", line)
	}
}

// progressText is "1200/5000 msgs (24%), 830/s, 1.5s" (the rate is the
// recent one; a final reading gives the average instead).
func progressText(s status, rate float64, elapsed time.Duration, final bool) string {
	var b strings.Builder
	if s.Total > 0 {
		fmt.Fprintf(&b, "%d/%d %s (%d%%)", s.Done, s.Total, s.Unit, pct(s.Done, s.Total))
	} else {
		fmt.Fprintf(&b, "%d %s", s.Done, s.Unit)
	}
	if final && elapsed > 0 {
		rate = float64(s.Done) / elapsed.Seconds()
	}
	if !s.NoRate {
		fmt.Fprintf(&b, ", %.0f/s", rate)
	}
	fmt.Fprintf(&b, ", %v", elapsed.Round(100*time.Millisecond))
	if s.Extra != "" {
		b.WriteString(", " + s.Extra)
	}
	if final {
		b.WriteString(" (done)")
	}
	return b.String()
}

func pct(done, total int64) int64 {
	if total <= 0 {
		return 0
	}
	return min(100, done*100/total)
}

// bar draws [#####.....] width characters wide.
func bar(s status, width int) string {
	filled := 0
	if s.Total > 0 {
		filled = int(min(int64(width), s.Done*int64(width)/s.Total))
	}
	return "[" + strings.Repeat("#", filled) + strings.Repeat(".", width-filled) + "]"
}
