package media

import (
	"errors"
	"fmt"
	"log/slog"
	"time"
)

// Config tunes media. Zero values take the defaults below; negative values
// switch a limit off.
type Config struct {
	// Dir holds uploads in progress (Dir/uploads) and published blobs
	// (Dir/blobs) of the local blob store. Required unless Blobs is set;
	// the node defaults it to <data>/media.
	Dir string
	// Blobs is where uploads and blobs live; nil: a LocalStore in Dir.
	Blobs BlobStore
	// MaxSize is the largest upload in bytes (default: a 2 GiB file and
	// its encryption overhead; negative: no limit). A larger Upload-Length
	// is refused with 413 before a byte is stored.
	MaxSize int64
	// DailyQuota is how many bytes one user may upload per UTC day
	// (default 20 GiB; negative: no quota). Over it, creation is answered
	// 429 with Retry-After.
	DailyQuota int64
	// TTL is how long a blob is kept after its last upload or re-reference,
	// and how long an unfinished upload may take (default 720h = 30 days;
	// negative: nothing expires).
	TTL time.Duration
	// IdleTimeout cuts off a PATCH whose body sends nothing for this long
	// (default 30s; negative: never). The bytes received so far are kept.
	IdleTimeout time.Duration
	// SweepInterval is how often expired blobs and stale uploads are
	// deleted (default 1h; negative: no background sweeper, call Sweep).
	SweepInterval time.Duration
	// Now is the clock of expiry, quotas and Upload-Expires (default
	// time.Now); tests inject one.
	Now    func() time.Time
	Logger *slog.Logger
}

const (
	// DefaultMaxSize is the default of Config.MaxSize: the promise is files
	// of 2 GiB, and an upload is ciphertext, a little larger than its file
	// (the SDK's chunked AES-GCM adds 16 bytes per 64 KiB: 512 KiB on 2 GiB).
	// One MiB of headroom covers that and any client format within reason.
	DefaultMaxSize = 2<<30 + 1<<20
	// DefaultDailyQuota is the default of Config.DailyQuota.
	DefaultDailyQuota = 20 << 30
	// DefaultTTL is the default of Config.TTL.
	DefaultTTL = 30 * 24 * time.Hour
	// DefaultIdleTimeout is the default of Config.IdleTimeout.
	DefaultIdleTimeout = 30 * time.Second
	// DefaultSweepInterval is the default of Config.SweepInterval.
	DefaultSweepInterval = time.Hour
)

func (c Config) withDefaults() Config {
	if c.MaxSize == 0 {
		c.MaxSize = DefaultMaxSize
	}
	if c.DailyQuota == 0 {
		c.DailyQuota = DefaultDailyQuota
	}
	if c.TTL == 0 {
		c.TTL = DefaultTTL
	}
	if c.IdleTimeout == 0 {
		c.IdleTimeout = DefaultIdleTimeout
	}
	if c.SweepInterval == 0 {
		c.SweepInterval = DefaultSweepInterval
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// validate lists every inconsistency of a config with defaults applied.
func (c Config) validate() error {
	var errs []error
	if c.Dir == "" && c.Blobs == nil {
		errs = append(errs, errors.New("media: Dir is required without Blobs"))
	}
	if c.TTL > 0 && c.TTL < time.Minute {
		errs = append(errs, fmt.Errorf("media: TTL %v is under a minute: uploads would expire while they run", c.TTL))
	}
	if c.IdleTimeout > 0 && c.IdleTimeout < 10*time.Millisecond {
		errs = append(errs, fmt.Errorf("media: IdleTimeout %v is under 10ms", c.IdleTimeout))
	}
	if c.MaxSize > 0 && c.DailyQuota > 0 && c.DailyQuota < c.MaxSize {
		// Allowed (a small quota is a policy), but a file between the
		// two could never be sent: say so at start rather than per upload.
		c.Logger.Warn("media: daily quota is below the largest upload: files between the two are always refused with 429",
			"quota", c.DailyQuota, "max", c.MaxSize)
	}
	return errors.Join(errs...)
}
