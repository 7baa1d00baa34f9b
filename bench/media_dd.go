package bench

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"os"
	"time"
)

// DDFigures are the `dd` reference of a media run: the same number of
// bytes written and read back sequentially, 1 MiB at a time, on the
// filesystem of Dir, by this process alone. They say what the disk does
// without Courier, so upload and download rates can be read as a share of
// it (the server's blobs are on the same machine when it is local).
type DDFigures struct {
	Dir       string `json:"dir"`
	SizeBytes int64  `json:"size_bytes"`
	// WriteMBPerSec: sequential 1 MiB writes and one fsync at the end
	// (dd bs=1M conv=fsync), 10^6 bytes a second.
	WriteMBPerSec float64 `json:"write_mb_per_sec"`
	// ReadMBPerSec: the first sequential read after the bench asked the
	// kernel to drop the file from the page cache (posix_fadvise
	// DONTNEED, which needs no privilege); ReadResidentPct is how much of
	// the file was still cached when that read began (mincore): 0 means a
	// read from the disk, 100 a read from memory.
	ReadMBPerSec    float64 `json:"read_mb_per_sec"`
	ReadResidentPct float64 `json:"read_resident_pct"`
	// CachedReadMBPerSec: a second read right after, from the page cache
	// as far as it holds the file (CachedResidentPct).
	CachedReadMBPerSec float64 `json:"cached_read_mb_per_sec"`
	CachedResidentPct  float64 `json:"cached_resident_pct"`
	// CacheNote says how the cache was dropped, or why it could not be.
	CacheNote string `json:"cache_note,omitempty"`
	// Ratios of the run's aggregate rates to these: upload / write,
	// download / read (uncached) and download / cached read.
	UploadVsWrite        float64 `json:"upload_vs_write"`
	DownloadVsRead       float64 `json:"download_vs_read"`
	DownloadVsCachedRead float64 `json:"download_vs_cached_read"`
	Error                string  `json:"error,omitempty"`
}

const ddBlock = 1 << 20

// measureDD writes a file of size bytes in dir, then reads it twice.
func measureDD(ctx context.Context, dir string, size int64) DDFigures {
	if dir == "" {
		dir = os.TempDir()
	}
	d := DDFigures{Dir: dir, SizeBytes: size}
	if err := d.measure(ctx, dir, size); err != nil {
		d.Error = err.Error()
	}
	return d
}

func (d *DDFigures) measure(ctx context.Context, dir string, size int64) error {
	f, err := os.CreateTemp(dir, "courier-bench-dd-*")
	if err != nil {
		return fmt.Errorf("bench: dd file: %w", err)
	}
	defer func() {
		_ = f.Close()
		_ = os.Remove(f.Name())
	}()
	// Random bytes, in case the filesystem compresses.
	buf := make([]byte, ddBlock)
	_, _ = rand.Read(buf)
	start := time.Now()
	for left := size; left > 0; {
		if err := ctx.Err(); err != nil {
			return err
		}
		n := int(min(left, ddBlock))
		if _, err := f.Write(buf[:n]); err != nil {
			return fmt.Errorf("bench: dd write: %w", err)
		}
		left -= int64(n)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("bench: dd fsync: %w", err)
	}
	d.WriteMBPerSec = mbPerSec(size, time.Since(start))

	d.CacheNote = dropCache(f)
	d.ReadResidentPct = residentPct(f, size)
	secs, err := ddRead(ctx, f, buf)
	if err != nil {
		return err
	}
	d.ReadMBPerSec = mbPerSec(size, secs)
	d.CachedResidentPct = residentPct(f, size)
	if secs, err = ddRead(ctx, f, buf); err != nil {
		return err
	}
	d.CachedReadMBPerSec = mbPerSec(size, secs)
	return nil
}

func ddRead(ctx context.Context, f *os.File, buf []byte) (time.Duration, error) {
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return 0, err
	}
	start := time.Now()
	for {
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		_, err := f.Read(buf)
		if errors.Is(err, io.EOF) {
			return time.Since(start), nil
		}
		if err != nil {
			return 0, fmt.Errorf("bench: dd read: %w", err)
		}
	}
}

// mbPerSec is 10^6 bytes a second, as dd prints.
func mbPerSec(n int64, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(n) / 1e6 / d.Seconds()
}
