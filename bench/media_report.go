package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"
)

// MediaReport is what a media run measured. Its JSON keys are a contract
// like Report's. Rates are MB/s: 10^6 bytes of the file (plaintext) a
// second, as dd prints them.
type MediaReport struct {
	Scenario       string   `json:"scenario"`
	Gateways       []string `json:"gateways"`
	Clients        int      `json:"clients"`
	SizeBytes      int64    `json:"size_bytes"`
	PayloadSource  string   `json:"payload_source"`
	Seed           uint64   `json:"seed"`
	PieceSizeBytes int64    `json:"piece_size_bytes"`
	// KillEverySec: each HTTP connection of a client was closed this long
	// after it was opened (0: never).
	KillEverySec float64 `json:"kill_every_sec"`
	SetupSec     float64 `json:"setup_sec"`
	// ElapsedSec: first upload start to last download end.
	ElapsedSec float64    `json:"elapsed_sec"`
	Upload     MediaPhase `json:"upload"`
	Download   MediaPhase `json:"download"`
	// Resumes: transfers that continued after a break (both phases).
	Resumes int64 `json:"resumes"`
	// FilesChecked counts files that came back with the plaintext SHA-256
	// they went up with. DigestMismatches counts files that came back
	// different, Corrupt downloads the SDK refused as corrupt or tampered.
	FilesChecked     int      `json:"files_checked"`
	DigestMismatches int      `json:"digest_mismatches"`
	Corrupt          int      `json:"corrupt"`
	Errors           []string `json:"errors,omitempty"`
	// ServerPIDs are the --server-pid processes; ServerRSS is their
	// resident memory.
	ServerPIDs     []int                `json:"server_pids,omitempty"`
	ServerRSS      *MediaRSS            `json:"server_rss,omitempty"`
	ServerCPUError string               `json:"server_cpu_error,omitempty"`
	DD             *DDFigures           `json:"dd,omitempty"`
	PerClient      []MediaClientFigures `json:"per_client"`
	TimedOut       bool                 `json:"timed_out"`
	Interrupted    bool                 `json:"interrupted"`
	Problem        string               `json:"problem,omitempty"`
}

// MediaPhase is the upload or the download phase: every client at once.
type MediaPhase struct {
	Files  int `json:"files"`  // transfers that succeeded
	Failed int `json:"failed"` // transfers that failed
	// ElapsedSec: the phase's first start to its last end; MBPerSec: the
	// files' bytes over it (aggregate).
	ElapsedSec float64 `json:"elapsed_sec"`
	MBPerSec   float64 `json:"mb_per_sec"`
	// Per client, each over its own UploadMedia or DownloadMedia call.
	ClientP50MBPerSec float64 `json:"client_p50_mb_per_sec"`
	ClientMinMBPerSec float64 `json:"client_min_mb_per_sec"`
	// TransferP50MBPerSec: per client (median), over the network part
	// only. LocalP50Sec (median) is the rest of the call. Upload: what
	// the SDK does before its first progress report (creation; with a
	// digest declared at creation, the pass that hashed the whole file). Download: after the last byte (check the digest and the
	// chunks' tags the SDK computed on the way, decrypt). The bench's own
	// SHA-256 of the plaintext runs on a goroutine of its own (hashAhead):
	// every byte is hashed before a file counts as checked, but a
	// transfer's end does not wait for the last blocks (at most 1.25 MiB).
	TransferP50MBPerSec float64 `json:"transfer_p50_mb_per_sec"`
	LocalP50Sec         float64 `json:"local_p50_sec"`
	// TTFB (download): the first blob request's time from being sent to
	// its first body byte.
	TTFBP50Ms float64 `json:"ttfb_p50_ms,omitempty"`
	TTFBMaxMs float64 `json:"ttfb_max_ms,omitempty"`
	// Resumes: an upload's PATCH after it asked the server its offset
	// (HEAD); a download's GET with a Range. Kills: connections the bench
	// cut (--kill-every), BusyKills those of them that had carried a byte
	// in the last 50 ms (cut mid-transfer, not idle in the pool). WireMiB:
	// bytes on the clients' connections (upload: sent; download:
	// received), headers and re-sent bytes included.
	Resumes   int64   `json:"resumes"`
	Kills     int64   `json:"kills"`
	BusyKills int64   `json:"busy_kills"`
	WireMiB   float64 `json:"wire_mib"`
	// CPU time (user + system) per MiB of file moved in this phase: the
	// bench process's, and the --server-pid processes'.
	BenchCPUMsPerMiB  float64 `json:"bench_cpu_ms_per_mib"`
	ServerCPUMsPerMiB float64 `json:"server_cpu_ms_per_mib,omitempty"`
}

// MediaRSS is the servers' VmRSS before the first upload, its peak while
// the transfers ran (sampled every 100 ms) and after the last download.
type MediaRSS struct {
	BeforeBytes     uint64 `json:"before_bytes"`
	PeakBytes       uint64 `json:"peak_bytes"`
	AfterBytes      uint64 `json:"after_bytes"`
	GrowthBytes     int64  `json:"growth_bytes"`      // after - before
	PeakGrowthBytes int64  `json:"peak_growth_bytes"` // peak - before
	Samples         int    `json:"samples"`
	Error           string `json:"error,omitempty"`
}

// MediaClientFigures is one client's file.
type MediaClientFigures struct {
	Client           int     `json:"client"`
	UploadMBPerSec   float64 `json:"upload_mb_per_sec"`
	DownloadMBPerSec float64 `json:"download_mb_per_sec"`
	TTFBMs           float64 `json:"ttfb_ms"`
	UploadResumes    int64   `json:"upload_resumes"`
	DownloadResumes  int64   `json:"download_resumes"`
	// SHA256 is the plaintext's digest, as it went up; DownloadSHA256 as
	// it came back (absent when the download failed).
	SHA256         string `json:"sha256,omitempty"`
	DownloadSHA256 string `json:"download_sha256,omitempty"`
	Error          string `json:"error,omitempty"`
}

// OK reports a run where every file came back intact and in time.
func (r *MediaReport) OK() bool { return r.Problem == "" }

// WriteJSON writes the report as one JSON object on one line.
func (r *MediaReport) WriteJSON(w io.Writer) error { return json.NewEncoder(w).Encode(r) }

// ReadMediaJSON parses a report MediaReport.WriteJSON wrote.
func ReadMediaJSON(rd io.Reader) (*MediaReport, error) {
	var r MediaReport
	if err := json.NewDecoder(rd).Decode(&r); err != nil {
		return nil, fmt.Errorf("bench: read media report: %w", err)
	}
	return &r, nil
}

const maxMediaErrors = 10

func (r *MediaReport) noteErr(err error) {
	if len(r.Errors) < maxMediaErrors {
		r.Errors = append(r.Errors, strings.TrimSpace(err.Error()))
	}
}

func (r *MediaReport) problem() string {
	var p []string
	if r.Interrupted {
		p = append(p, "interrupted before the end (the figures are what was measured so far)")
	}
	if r.TimedOut {
		p = append(p, "the time bound ended the run")
	}
	if r.DigestMismatches > 0 {
		p = append(p, fmt.Sprintf("%d files came back different (plaintext SHA-256 mismatch)", r.DigestMismatches))
	}
	if r.Corrupt > 0 {
		p = append(p, fmt.Sprintf("%d downloads refused as corrupt", r.Corrupt))
	}
	if n := r.Upload.Failed; n > 0 {
		p = append(p, fmt.Sprintf("%d uploads failed", n))
	}
	if n := r.Download.Failed - r.Corrupt; n > 0 {
		p = append(p, fmt.Sprintf("%d downloads failed", n))
	}
	if len(p) == 0 && r.FilesChecked != r.Clients {
		p = append(p, fmt.Sprintf("%d of %d files checked", r.FilesChecked, r.Clients))
	}
	return strings.Join(p, "; ")
}

// phaseOf sums up one phase over the clients that ran it.
func phaseOf(mcs []*mediaClient, size int64, up bool) MediaPhase {
	var ph MediaPhase
	var first, last time.Time
	var rates, transfer, local, ttfb []float64
	for _, m := range mcs {
		start, end, err := m.dnStart, m.dnEnd, m.dnErr
		net, sent := m.dnStart, m.dnGot
		if up {
			start, end, err = m.upStart, m.upEnd, m.upErr
			net, sent = m.upSent, m.upEnd
		}
		if start.IsZero() {
			continue // never ran (its upload failed)
		}
		if up {
			ph.Resumes += m.upResumes
		} else {
			ph.Resumes += m.dnResumes
		}
		if err != nil {
			ph.Failed++
			continue
		}
		ph.Files++
		if first.IsZero() || start.Before(first) {
			first = start
		}
		if end.After(last) {
			last = end
		}
		rates = append(rates, mbPerSec(size, end.Sub(start)))
		if !net.IsZero() && !sent.IsZero() && sent.After(net) {
			transfer = append(transfer, mbPerSec(size, sent.Sub(net)))
			if up {
				local = append(local, net.Sub(start).Seconds())
			} else {
				local = append(local, end.Sub(sent).Seconds())
			}
		}
		if !up {
			if d := m.net.ttfb(); d > 0 {
				ttfb = append(ttfb, float64(d.Microseconds())/1000)
			}
		}
	}
	if ph.Files > 0 {
		ph.ElapsedSec = last.Sub(first).Seconds()
		ph.MBPerSec = mbPerSec(int64(ph.Files)*size, last.Sub(first))
		ph.ClientP50MBPerSec = median(rates)
		ph.ClientMinMBPerSec = slices.Min(rates)
		ph.TransferP50MBPerSec = median(transfer)
		ph.LocalP50Sec = median(local)
	}
	if len(ttfb) > 0 {
		ph.TTFBP50Ms = median(ttfb)
		ph.TTFBMaxMs = slices.Max(ttfb)
	}
	return ph
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func (m *mediaClient) figures(size int64) MediaClientFigures {
	f := MediaClientFigures{Client: m.i, UploadResumes: m.upResumes, DownloadResumes: m.dnResumes, SHA256: m.upSum, DownloadSHA256: m.dnSum}
	if m.upErr == nil && !m.upStart.IsZero() {
		f.UploadMBPerSec = mbPerSec(size, m.upEnd.Sub(m.upStart))
	}
	if m.dnErr == nil && !m.dnStart.IsZero() {
		f.DownloadMBPerSec = mbPerSec(size, m.dnEnd.Sub(m.dnStart))
	}
	f.TTFBMs = float64(m.net.ttfb().Microseconds()) / 1000
	switch {
	case m.upErr != nil:
		f.Error = "upload: " + m.upErr.Error()
	case m.dnErr != nil:
		f.Error = "download: " + m.dnErr.Error()
	case m.mismatch:
		f.Error = "plaintext SHA-256 mismatch"
	}
	return f
}

// cpuReading is the bench's and the servers' CPU time at one moment.
type cpuReading struct {
	bench, server time.Duration
	err           error
}

func readCPU(pids []int) cpuReading {
	var c cpuReading
	c.bench, _ = selfCPU()
	if len(pids) > 0 {
		c.server, c.err = serversCPU(pids)
	}
	return c
}

// setCPU fills each phase's CPU per MiB from readings at its start and end.
func (r *MediaReport) setCPU(c0, c1, c2 cpuReading, size int64) {
	per := func(a, b cpuReading, files int) (float64, float64) {
		mib := float64(int64(files)*size) / (1 << 20)
		if mib <= 0 {
			return 0, 0
		}
		return float64((b.bench - a.bench).Microseconds()) / 1000 / mib, float64((b.server - a.server).Microseconds()) / 1000 / mib
	}
	for _, c := range []cpuReading{c0, c1, c2} {
		if c.err != nil {
			r.ServerCPUError = c.err.Error()
		}
	}
	r.Upload.BenchCPUMsPerMiB, r.Upload.ServerCPUMsPerMiB = per(c0, c1, r.Upload.Files)
	r.Download.BenchCPUMsPerMiB, r.Download.ServerCPUMsPerMiB = per(c1, c2, r.Download.Files)
	if r.ServerCPUError != "" {
		r.Upload.ServerCPUMsPerMiB, r.Download.ServerCPUMsPerMiB = 0, 0
	}
}

func (d *DDFigures) setRatios(r *MediaReport) {
	ratio := func(a, b float64) float64 {
		if b <= 0 {
			return 0
		}
		return a / b
	}
	d.UploadVsWrite = ratio(r.Upload.MBPerSec, d.WriteMBPerSec)
	d.DownloadVsRead = ratio(r.Download.MBPerSec, d.ReadMBPerSec)
	d.DownloadVsCachedRead = ratio(r.Download.MBPerSec, d.CachedReadMBPerSec)
}

// rssSampler reads the servers' VmRSS every interval until stopped.
type rssSampler struct {
	pids  []int
	stopc chan struct{}
	done  chan struct{}
	mu    sync.Mutex
	rss   MediaRSS
}

func startRSSSampler(pids []int, every time.Duration) *rssSampler {
	s := &rssSampler{pids: pids, stopc: make(chan struct{}), done: make(chan struct{})}
	if len(pids) == 0 {
		close(s.done)
		return s
	}
	s.rss.BeforeBytes, _ = s.sample()
	s.rss.PeakBytes = s.rss.BeforeBytes
	go func() {
		defer close(s.done)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-s.stopc:
				return
			case <-t.C:
				s.sample()
			}
		}
	}()
	return s
}

// sample reads the sum of the servers' VmRSS and keeps the peak.
func (s *rssSampler) sample() (uint64, bool) {
	var sum uint64
	for _, pid := range s.pids {
		v, err := procRSS(strconv.Itoa(pid))
		if err != nil {
			s.mu.Lock()
			if s.rss.Error == "" {
				s.rss.Error = err.Error()
			}
			s.mu.Unlock()
			return 0, false
		}
		sum += v
	}
	s.mu.Lock()
	s.rss.Samples++
	s.rss.PeakBytes = max(s.rss.PeakBytes, sum)
	s.mu.Unlock()
	return sum, true
}

// stop ends the sampling with a last reading (nil without server pids).
func (s *rssSampler) stop() *MediaRSS {
	if len(s.pids) == 0 {
		return nil
	}
	close(s.stopc)
	<-s.done
	s.rss.AfterBytes, _ = s.sample()
	r := s.rss
	r.GrowthBytes = int64(r.AfterBytes) - int64(r.BeforeBytes)
	r.PeakGrowthBytes = int64(r.PeakBytes) - int64(r.BeforeBytes)
	return &r
}

// WriteText writes the report for people.
func (r *MediaReport) WriteText(w io.Writer) error {
	var b strings.Builder
	kill := "no forced drops"
	if r.KillEverySec > 0 {
		kill = fmt.Sprintf("connections cut every %v", secs(r.KillEverySec))
	}
	fmt.Fprintf(&b, "courier bench media: %s x %s (%s payload), pieces of %s, %s, %s\n", plural(r.Clients, "client", "clients"),
		FormatSize(r.SizeBytes), r.PayloadSource, FormatSize(r.PieceSizeBytes), kill, plural(len(r.Gateways), "gateway", "gateways"))
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	row := func(label, format string, args ...any) {
		fmt.Fprintf(tw, "  %s\t%s\n", label, fmt.Sprintf(format, args...))
	}
	row("setup", "%v", secs(r.SetupSec))
	for _, ph := range []struct {
		name string
		p    MediaPhase
	}{{"upload", r.Upload}, {"download", r.Download}} {
		p := ph.p
		local := "SDK before sending (creation)"
		if ph.name == "download" {
			local = "verify+decrypt after the last byte"
		}
		row(ph.name, "%.1f MB/s aggregate over %v; per client p50 %.1f, min %.1f MB/s; %d ok, %d failed",
			p.MBPerSec, secs(p.ElapsedSec), p.ClientP50MBPerSec, p.ClientMinMBPerSec, p.Files, p.Failed)
		row("", "network part p50 %.1f MB/s per client; %s p50 %v", p.TransferP50MBPerSec, local, secs(p.LocalP50Sec))
		row("", "%d resumes, %d connections cut (%d mid-transfer), %.1f MiB on the wire", p.Resumes, p.Kills, p.BusyKills, p.WireMiB)
		switch {
		case r.ServerCPUError != "":
			row("", "cpu/MiB: bench %.2f ms, server unknown: %s", p.BenchCPUMsPerMiB, r.ServerCPUError)
		case len(r.ServerPIDs) > 0:
			row("", "cpu/MiB: bench %.2f ms, server %.2f ms", p.BenchCPUMsPerMiB, p.ServerCPUMsPerMiB)
		default:
			row("", "cpu/MiB: bench %.2f ms (--server-pid adds the server's)", p.BenchCPUMsPerMiB)
		}
	}
	row("ttfb", "p50 %.2f ms, max %.2f ms (first download request to its first byte)", r.Download.TTFBP50Ms, r.Download.TTFBMaxMs)
	if s := r.ServerRSS; s != nil {
		mib := func(v uint64) float64 { return float64(v) / (1 << 20) }
		row("server rss", "before %.1f MiB, peak %.1f MiB (+%.1f), after %.1f MiB (%+.1f); %d samples",
			mib(s.BeforeBytes), mib(s.PeakBytes), float64(s.PeakGrowthBytes)/(1<<20), mib(s.AfterBytes), float64(s.GrowthBytes)/(1<<20), s.Samples)
		if s.Error != "" {
			row("", "error: %s", s.Error)
		}
	}
	row("files", "%d of %d checked (plaintext SHA-256 up = down), %d mismatched, %d refused as corrupt", r.FilesChecked, r.Clients, r.DigestMismatches, r.Corrupt)
	if d := r.DD; d != nil {
		if d.Error != "" {
			row("dd", "failed: %s", d.Error)
		} else {
			row("dd", "%s in %s: write+fsync %.1f MB/s, read %.1f MB/s (%.0f%% cached before), cached read %.1f MB/s (%.0f%% cached)",
				FormatSize(d.SizeBytes), d.Dir, d.WriteMBPerSec, d.ReadMBPerSec, d.ReadResidentPct, d.CachedReadMBPerSec, d.CachedResidentPct)
			row("", "%s", d.CacheNote)
			row("vs dd", "upload/write %.2f, download/read %.2f, download/cached read %.2f", d.UploadVsWrite, d.DownloadVsRead, d.DownloadVsCachedRead)
		}
	}
	row("elapsed", "%v", secs(r.ElapsedSec))
	for _, e := range r.Errors {
		row("error", "%s", e)
	}
	_ = tw.Flush()
	if r.Problem != "" {
		fmt.Fprintf(&b, "FAILED: %s\n", r.Problem)
	} else {
		b.WriteString("result: OK (every file came back with its SHA-256)\n")
	}
	_, err := io.WriteString(w, b.String())
	return err
}
