package bench

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/courier-im/courier/client"
)

// MediaConfig describes a media run: Clients users each upload one file
// of Size bytes through the SDK (encrypted, tus, resumable) and then
// download it back, all clients at once in each phase. Every file's
// plaintext is generated from Seed on the way up and hashed on the way up
// and on the way down: the two SHA-256s must match.
type MediaConfig struct {
	Target
	// Clients is how many users upload and download at once (default 4).
	Clients int
	// Size of every file in bytes (default 64 MiB).
	Size int64
	// PieceSize is the bytes one PATCH carries at most (0: the SDK's
	// default, 8 MiB).
	PieceSize int64
	// KillEvery, when positive, closes each of a client's HTTP connections
	// this long after it was opened, so transfers break mid-way and must
	// resume from the server's offset (uploads) or with a Range (downloads).
	KillEvery time.Duration
	// PayloadSource is PayloadRandom (default) or PayloadZero; Seed makes
	// the random files reproducible (client i's file depends on Seed and i).
	PayloadSource string
	Seed          uint64
	// ServerPIDs are local server processes: their memory (VmRSS, sampled
	// every 100 ms) and CPU time go into the report.
	ServerPIDs []int
	// TempDir is where the SDK keeps a download's ciphertext until it is
	// verified (default os.TempDir()).
	TempDir string
	// DD adds the dd reference: a file of Size written and read on the
	// filesystem of DDDir (default os.TempDir()) after the run.
	DD    bool
	DDDir string

	// tamper, in tests, wraps client i's download destination.
	tamper func(i int, w io.Writer) io.Writer
}

func (c MediaConfig) withDefaults() (MediaConfig, error) {
	var err error
	if c.Target, err = c.Target.withDefaults(); err != nil {
		return c, err
	}
	c.Clients = orDefault(c.Clients, 4)
	if c.Size == 0 {
		c.Size = 64 << 20
	}
	if c.PayloadSource == "" {
		c.PayloadSource = PayloadRandom
	}
	switch {
	case c.Clients < 1 || c.Size < 1 || c.PieceSize < 0 || c.KillEvery < 0 || c.Concurrency < 0:
		return c, errors.New("bench: media needs clients >= 1, size >= 1 byte, and no negative piece size, kill interval or concurrency")
	case client.MediaCipherSize(c.Size) < 0:
		return c, fmt.Errorf("bench: size %d is larger than a media file can be", c.Size)
	case c.PayloadSource != PayloadRandom && c.PayloadSource != PayloadZero:
		return c, fmt.Errorf("bench: unknown payload source %q (random or zero)", c.PayloadSource)
	}
	return c, nil
}

// mediaClient is one client's run.
type mediaClient struct {
	i   int
	c   *client.Client
	net *mediaNet
	hc  *http.Client

	ref               client.MediaRef
	upStart, upEnd    time.Time
	upSent            time.Time // the SDK's first progress report: sending starts
	upDone            atomic.Int64
	dnStart, dnEnd    time.Time
	dnGot             time.Time // the last ciphertext byte arrived
	dnDone            atomic.Int64
	upSum, dnSum      string
	upErr, dnErr      error
	corrupt, mismatch bool
	upResumes         int64
	dnResumes         int64
}

// Media runs the media scenario. It returns an error only when the run
// could not be set up; failed transfers and digest mismatches are in the
// report (see MediaReport.OK).
func Media(ctx context.Context, cfg MediaConfig) (*MediaReport, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	r, con, f, release, err := startFleet(ctx, cfg.Target, cfg.net())
	if err != nil {
		return nil, err
	}
	defer release()
	setupStart := time.Now()
	creds, err := f.register(r.ctx, cfg.Clients)
	if err != nil {
		return nil, r.setupErr(err)
	}
	var tlsConf *tls.Config
	if cfg.CAFile != "" {
		if tlsConf, err = client.TLSConfigWithCA(cfg.CAFile); err != nil {
			return nil, fmt.Errorf("bench: %w", err)
		}
	}
	mcs := make([]*mediaClient, cfg.Clients)
	con.say("connecting %d clients", cfg.Clients)
	err = forEach(r.ctx, cfg.Clients, f.conc, func(ctx context.Context, i int) error {
		n, hc := newMediaNet(tlsConf, 0)
		dctx, cancel := context.WithTimeout(ctx, time.Minute)
		defer cancel()
		c, err := client.Dial(dctx, creds[i], append(slices.Clip(f.opts), client.WithHTTPClient(hc))...)
		if err != nil {
			return err
		}
		mcs[i] = &mediaClient{i: i, c: c, net: n, hc: hc}
		return nil
	})
	defer func() {
		_ = forEach(context.Background(), len(mcs), f.conc, func(_ context.Context, i int) error {
			if mcs[i] != nil {
				mcs[i].net.stopKilling()
				_ = mcs[i].c.Close()
			}
			return nil
		})
	}()
	if err != nil {
		return nil, r.setupErr(fmt.Errorf("bench: connect: %w", err))
	}
	setup := time.Since(setupStart)

	rep := &MediaReport{Scenario: "media", Gateways: f.bases, Clients: cfg.Clients, SizeBytes: cfg.Size, PayloadSource: cfg.PayloadSource,
		Seed: cfg.Seed, PieceSizeBytes: cfg.PieceSize, ServerPIDs: cfg.ServerPIDs, KillEverySec: cfg.KillEvery.Seconds(), SetupSec: setup.Seconds()}
	if rep.PieceSizeBytes == 0 {
		rep.PieceSizeBytes = client.DefaultMediaPieceSize
	}
	// From here on every connection a client opens is cut after KillEvery:
	// drop the ones setup opened, which have no deadline.
	for _, m := range mcs {
		m.net.closeMu.Lock()
		m.net.killEvery = cfg.KillEvery
		m.net.closeMu.Unlock()
		m.hc.CloseIdleConnections()
	}

	rss := startRSSSampler(cfg.ServerPIDs, 100*time.Millisecond)
	cpu0 := readCPU(cfg.ServerPIDs)
	start := time.Now()
	opts := []client.MediaOption{}
	if cfg.PieceSize > 0 {
		opts = append(opts, client.WithMediaPieceSize(cfg.PieceSize))
	}
	if cfg.TempDir != "" {
		opts = append(opts, client.WithMediaTempDir(cfg.TempDir))
	}
	total := int64(cfg.Clients) * client.MediaCipherSize(cfg.Size)
	sumDone := func(get func(m *mediaClient) int64) int64 {
		var n int64
		for _, m := range mcs {
			n += get(m)
		}
		return n
	}
	resumes := func() int64 {
		return sumDone(func(m *mediaClient) int64 { return m.net.upResumes.Load() + m.net.dnResumes.Load() })
	}

	// Upload: every client at once.
	con.say("uploading %d files of %s", cfg.Clients, FormatSize(cfg.Size))
	meter := con.track("uploading", func() status {
		return status{Done: sumDone(func(m *mediaClient) int64 { return m.upDone.Load() }) >> 20, Total: total >> 20, Unit: "MiB",
			Extra: fmt.Sprintf("%d resumes", resumes())}
	})
	all(mcs, func(m *mediaClient) { m.upload(r.ctx, cfg, opts) })
	meter.Stop()
	cpu1 := readCPU(cfg.ServerPIDs)
	wire1 := sumDone(func(m *mediaClient) int64 { return m.net.wireUp.Load() })
	kills1 := sumDone(func(m *mediaClient) int64 { return m.net.kills.Load() })
	busy1 := sumDone(func(m *mediaClient) int64 { return m.net.busyKills.Load() })

	// Download: every client its own file, at once.
	uploaded := 0
	for _, m := range mcs {
		if m.upErr == nil {
			uploaded++
		}
	}
	con.say("downloading %d files", uploaded)
	down0 := sumDone(func(m *mediaClient) int64 { return m.net.wireDown.Load() })
	meter = con.track("downloading", func() status {
		return status{Done: sumDone(func(m *mediaClient) int64 { return m.dnDone.Load() }) >> 20, Total: int64(uploaded) * client.MediaCipherSize(cfg.Size) >> 20, Unit: "MiB",
			Extra: fmt.Sprintf("%d resumes", resumes())}
	})
	all(mcs, func(m *mediaClient) {
		if m.upErr == nil {
			m.download(r.ctx, cfg, opts)
		}
	})
	meter.Stop()
	cpu2 := readCPU(cfg.ServerPIDs)
	elapsed := time.Since(start)
	for _, m := range mcs {
		m.net.stopKilling()
	}
	rep.ServerRSS = rss.stop()
	rep.ElapsedSec = elapsed.Seconds()

	rep.Upload = phaseOf(mcs, cfg.Size, true)
	rep.Upload.WireMiB = float64(wire1) / (1 << 20)
	rep.Upload.Kills, rep.Upload.BusyKills = kills1, busy1
	rep.Download = phaseOf(mcs, cfg.Size, false)
	rep.Download.WireMiB = float64(sumDone(func(m *mediaClient) int64 { return m.net.wireDown.Load() })-down0) / (1 << 20)
	rep.Download.Kills = sumDone(func(m *mediaClient) int64 { return m.net.kills.Load() }) - kills1
	rep.Download.BusyKills = sumDone(func(m *mediaClient) int64 { return m.net.busyKills.Load() }) - busy1
	rep.setCPU(cpu0, cpu1, cpu2, cfg.Size)
	rep.Resumes = rep.Upload.Resumes + rep.Download.Resumes
	for _, m := range mcs {
		rep.PerClient = append(rep.PerClient, m.figures(cfg.Size))
		switch {
		case m.upErr != nil:
			rep.noteErr(fmt.Errorf("client %d: upload: %w", m.i, m.upErr))
		case m.dnErr != nil:
			rep.noteErr(fmt.Errorf("client %d: download: %w", m.i, m.dnErr))
			if m.corrupt {
				rep.Corrupt++
			}
		case m.mismatch:
			rep.DigestMismatches++
			rep.noteErr(fmt.Errorf("client %d: the file came back different: sha256 %s up, %s down", m.i, m.upSum, m.dnSum))
		default:
			rep.FilesChecked++
		}
	}
	rep.Interrupted = r.interrupted()
	rep.TimedOut = r.timedOut()
	if cfg.DD && !rep.Interrupted && !rep.TimedOut {
		con.say("dd reference: writing and reading %s in %s", FormatSize(cfg.Size), orTemp(cfg.DDDir))
		dd := measureDD(r.ctx, cfg.DDDir, cfg.Size)
		dd.setRatios(rep)
		rep.DD = &dd
	}
	rep.Problem = rep.problem()
	return rep, nil
}

func (c MediaConfig) net() netConfig { return netConfig{Target: c.Target} }

// all runs fn for every client at once and waits.
func all(mcs []*mediaClient, fn func(m *mediaClient)) {
	var wg sync.WaitGroup
	for _, m := range mcs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			fn(m)
		}()
	}
	wg.Wait()
}

func (m *mediaClient) upload(ctx context.Context, cfg MediaConfig, opts []client.MediaOption) {
	p, err := newMediaPayload(cfg.PayloadSource, cfg.Seed, m.i, cfg.Size)
	if err != nil {
		m.upErr = err
		return
	}
	defer p.close()
	var once sync.Once
	progress := client.WithMediaProgress(func(done, _ int64) {
		once.Do(func() { m.upSent = time.Now() })
		m.upDone.Store(done)
	})
	m.upStart = time.Now()
	m.ref, m.upErr = m.c.UploadMedia(ctx, p, cfg.Size, append(slices.Clip(opts), progress)...)
	m.upEnd = time.Now()
	if m.upErr == nil {
		m.upSum, m.upErr = p.sum()
	}
	m.upResumes = m.net.upResumes.Load()
}

func (m *mediaClient) download(ctx context.Context, cfg MediaConfig, opts []client.MediaOption) {
	hw := newHashWriter()
	defer hw.close()
	var w io.Writer = hw
	if cfg.tamper != nil {
		w = cfg.tamper(m.i, hw)
	}
	progress := client.WithMediaProgress(func(done, total int64) {
		m.dnDone.Store(done)
		if done == total {
			m.dnGot = time.Now()
		}
	})
	m.dnStart = time.Now()
	m.dnErr = m.c.DownloadMedia(ctx, m.ref, w, append(slices.Clip(opts), progress)...)
	m.dnEnd = time.Now()
	m.dnResumes = m.net.dnResumes.Load()
	switch {
	case errors.Is(m.dnErr, client.ErrMediaCorrupt):
		m.corrupt = true
	case m.dnErr == nil && hw.n != cfg.Size:
		m.dnErr = fmt.Errorf("bench: the download wrote %d of %d bytes", hw.n, cfg.Size)
	case m.dnErr == nil:
		m.dnSum = hw.sum()
		m.mismatch = m.dnSum != m.upSum
	}
}

func orTemp(dir string) string {
	if dir == "" {
		return "the temporary directory"
	}
	return dir
}
