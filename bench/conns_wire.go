package bench

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// The conns coordinator and its workers talk in JSON lines: the
// coordinator writes the worker's configuration and then commands to the
// worker's standard input; the worker writes events to its standard
// output. Workers are separate processes (`courier bench conns-worker`),
// or goroutines over pipes when no command is configured (tests).

// workerConfig is a worker's share of a conns run.
type workerConfig struct {
	Index       int           `json:"index"`
	Bases       []string      `json:"bases"`
	First       int           `json:"first"` // global index of its first connection
	Count       int           `json:"count"`
	Rate        float64       `json:"rate"` // connections a second (0: as fast as Concurrency allows)
	Concurrency int           `json:"concurrency"`
	SourceIPs   int           `json:"source_ips"` // loopback source addresses to spread over (0: the OS picks)
	Prefix      string        `json:"prefix"`
	CAFile      string        `json:"ca_file,omitempty"`
	Ping        time.Duration `json:"ping_ns"`
}

// Commands to a worker.
const (
	cmdGo      = "go"      // start connecting
	cmdRelease = "release" // close the connections and report
)

type workerCmd struct {
	Cmd string `json:"cmd"`
}

// Events from a worker.
const (
	evProgress = "progress"
	evPrepared = "prepared" // users registered and tokens fetched
	evReady    = "ready"    // every connection attempted
	evResult   = "result"   // final figures; the worker exits after it
	evFailed   = "failed"   // the worker cannot go on (Error says why)
)

type workerEvent struct {
	Type       string        `json:"type"`
	Registered int64         `json:"registered,omitempty"`
	Connected  int64         `json:"connected,omitempty"`
	Failed     int64         `json:"failed,omitempty"`
	Open       int64         `json:"open,omitempty"`
	Dropped    int64         `json:"dropped,omitempty"`
	Error      string        `json:"error,omitempty"`
	Result     *workerResult `json:"result,omitempty"`
}

// workerResult is what a worker measured.
type workerResult struct {
	Process ConnsProcess `json:"process"`
	// Histogram of connect latencies (µs); Timeline counts connections per
	// TimelineStep from StartUnixNano.
	Histogram     *hdrhistogram.Snapshot `json:"histogram"`
	Timeline      []int64                `json:"timeline"`
	StartUnixNano int64                  `json:"start_unix_nano"`
}

// lineWriter writes JSON lines from several goroutines.
type lineWriter struct {
	mu  sync.Mutex
	enc *json.Encoder
}

func newLineWriter(w io.Writer) *lineWriter { return &lineWriter{enc: json.NewEncoder(w)} }

func (w *lineWriter) send(v any) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if err := w.enc.Encode(v); err != nil {
		return fmt.Errorf("bench: write to the conns coordinator: %w", err)
	}
	return nil
}

// newLineScanner reads JSON lines of up to 64 MiB (a result carries a
// histogram).
func newLineScanner(r io.Reader) *bufio.Scanner {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 64<<20)
	return sc
}
