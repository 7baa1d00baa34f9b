package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/courier-im/courier/client"
)

// Media in the CLI: `send --file` encrypts and uploads a file (resumable,
// see client.UploadMedia) and sends its key and digest inside the end-to-end
// encrypted message; `listen --save-dir` downloads what arrives.

// uploadFile encrypts and uploads the file at path, showing progress on w.
func uploadFile(ctx context.Context, c *client.Client, path string, w io.Writer, tty bool) (client.MediaRef, error) {
	f, err := os.Open(path)
	if err != nil {
		return client.MediaRef{}, fmt.Errorf("open %s: %w", path, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return client.MediaRef{}, err
	}
	if !st.Mode().IsRegular() {
		return client.MediaRef{}, fmt.Errorf("%s is not a regular file", path)
	}
	bar := newProgressBar(w, "upload "+filepath.Base(path), tty)
	ref, err := c.UploadMedia(ctx, f, st.Size(),
		client.WithMediaFileName(filepath.Base(path)),
		client.WithMediaContentType(contentTypeOf(f, path)),
		client.WithMediaProgress(bar.update))
	bar.finish(err)
	if errors.Is(err, client.ErrMediaTooLarge) {
		return ref, fmt.Errorf("%s is %s, more than the server takes: %w", path, humanBytes(st.Size()), err)
	}
	if d, ok := client.MediaRetryAfter(err); ok {
		return ref, fmt.Errorf("your daily upload quota is used up; try again in %s: %w", d.Round(time.Minute), err)
	}
	if err != nil {
		return ref, fmt.Errorf("upload %s: %w", path, err)
	}
	return ref, nil
}

// contentTypeOf names a file's type from its extension, else its first
// bytes. Only the receiver sees it (inside the encrypted message).
func contentTypeOf(f *os.File, path string) string {
	if t := mime.TypeByExtension(filepath.Ext(path)); t != "" {
		return t
	}
	head := make([]byte, 512)
	n, _ := io.ReadFull(f, head)
	_, _ = f.Seek(0, io.SeekStart)
	return http.DetectContentType(head[:n])
}

// describeMedia is how a media message reads in the listener.
func describeMedia(ref client.MediaRef) string {
	name := ref.FileName
	if name == "" {
		name = "file"
	}
	return fmt.Sprintf("📎 %s (%s, %s)", name, humanBytes(ref.Size), ref.ContentType)
}

// mediaSaver downloads media messages into a directory in the background,
// two at a time, so a large file never holds up the listener.
type mediaSaver struct {
	dir  string
	c    *client.Client
	out  io.Writer
	slot chan struct{}
	wg   sync.WaitGroup
	mu   sync.Mutex // serializes choosing a free name
}

func newMediaSaver(dir string, c *client.Client, out io.Writer) (*mediaSaver, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("--save-dir: %w", err)
	}
	return &mediaSaver{dir: dir, c: c, out: out, slot: make(chan struct{}, 2)}, nil
}

// save starts downloading ref; the result is printed when it is done.
func (m *mediaSaver) save(ctx context.Context, ref client.MediaRef, from string) {
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		select {
		case m.slot <- struct{}{}:
		case <-ctx.Done():
			return
		}
		defer func() { <-m.slot }()
		path, err := m.download(ctx, ref)
		at := time.Now().Format(time.TimeOnly)
		if err != nil {
			if ctx.Err() == nil {
				fmt.Fprintf(m.out, "[%s] could not save %s from %s: %s\n", at, describeMedia(ref), from, userMessage(err))
			}
			return
		}
		fmt.Fprintf(m.out, "[%s] saved %s from %s to %s\n", at, describeMedia(ref), from, path)
	}()
}

// wait waits for the downloads in progress (they end with their context).
func (m *mediaSaver) wait() { m.wg.Wait() }

// download writes the file under a temporary name and renames it only once
// it is complete and verified, so a file in the directory is never partial
// or unverified.
func (m *mediaSaver) download(ctx context.Context, ref client.MediaRef) (string, error) {
	tmp, err := os.CreateTemp(m.dir, ".courier-download-*")
	if err != nil {
		return "", err
	}
	defer os.Remove(tmp.Name())
	if err := m.c.DownloadMedia(ctx, ref, tmp); err != nil {
		tmp.Close()
		return "", err
	}
	if err := tmp.Close(); err != nil {
		return "", err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	path := freeName(m.dir, safeFileName(ref))
	if err := os.Rename(tmp.Name(), path); err != nil {
		return "", err
	}
	return path, nil
}

// safeFileName is the sender's file name without any directory part: a
// name is the sender's word and must not escape the save directory.
func safeFileName(ref client.MediaRef) string {
	name := filepath.Base(filepath.Clean("/" + strings.ReplaceAll(ref.FileName, `\`, "/")))
	if name == "/" || name == "." || name == ".." || strings.HasPrefix(name, ".") {
		name = "media-" + ref.Digest[:min(12, len(ref.Digest))]
		if exts, _ := mime.ExtensionsByType(ref.ContentType); len(exts) > 0 {
			name += exts[0]
		}
	}
	return name
}

// freeName returns dir/name, or dir/name (n).ext for the first n free.
func freeName(dir, name string) string {
	ext := filepath.Ext(name)
	stem := strings.TrimSuffix(name, ext)
	p := filepath.Join(dir, name)
	for n := 1; ; n++ {
		if _, err := os.Lstat(p); errors.Is(err, os.ErrNotExist) {
			return p
		}
		p = filepath.Join(dir, fmt.Sprintf("%s (%d)%s", stem, n, ext))
	}
}

// progressBar shows bytes, rate and time left of a transfer: one line
// rewritten in place on a terminal, a line every few seconds otherwise.
type progressBar struct {
	w     io.Writer
	label string
	tty   bool
	start time.Time

	mu        sync.Mutex
	last      time.Time
	done, all int64
	shown     int64 // done as last printed; -1 before the first line
}

func newProgressBar(w io.Writer, label string, tty bool) *progressBar {
	return &progressBar{w: w, label: label, tty: tty, start: time.Now(), shown: -1}
}

func (p *progressBar) update(done, total int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.done, p.all = done, total
	every := 2 * time.Second
	if p.tty {
		every = 200 * time.Millisecond
	}
	if done == 0 && !p.tty {
		return // a log line saying nothing happened yet says nothing
	}
	if now := time.Now(); now.Sub(p.last) >= every || done == total {
		p.last = now
		p.printLocked(false)
	}
}

func (p *progressBar) finish(err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if err == nil && p.all > 0 {
		p.done = p.all
	}
	if p.tty || p.done != p.shown {
		p.printLocked(true)
	}
}

// printLocked writes the line. p.mu held.
func (p *progressBar) printLocked(final bool) {
	elapsed := time.Since(p.start).Seconds()
	rate := 0.0
	if elapsed > 0 {
		rate = float64(p.done) / elapsed
	}
	pct := 100.0
	if p.all > 0 {
		pct = 100 * float64(p.done) / float64(p.all)
	}
	eta := "--"
	if rate > 0 && p.all > p.done {
		eta = (time.Duration(float64(p.all-p.done)/rate) * time.Second / time.Second).Round(time.Second).String()
	}
	p.shown = p.done
	line := fmt.Sprintf("%s: %s of %s (%.0f%%), %s/s, %s left", p.label,
		humanBytes(p.done), humanBytes(p.all), pct, humanBytes(int64(rate)), eta)
	if p.done == p.all {
		line = fmt.Sprintf("%s: %s in %s, %s/s", p.label, humanBytes(p.all),
			time.Since(p.start).Round(time.Millisecond), humanBytes(int64(rate)))
	}
	switch {
	case p.tty && final:
		fmt.Fprintf(p.w, "\r%s\033[K\n", line)
	case p.tty:
		fmt.Fprintf(p.w, "\r%s\033[K", line)
	default:
		fmt.Fprintln(p.w, line)
	}
}

// humanBytes writes n in B, KiB, MiB or GiB.
func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	v, suffix := float64(n)/unit, "KiB"
	for _, s := range []string{"MiB", "GiB", "TiB"} {
		if v < unit {
			break
		}
		v, suffix = v/unit, s
	}
	return fmt.Sprintf("%.1f %s", v, suffix)
}

// isTerminal reports whether w is a terminal (for in-place progress).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}
