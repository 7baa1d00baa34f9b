//go:build !linux

package client

import "os"

// preallocSpool reserves disk space for a spool file where the platform
// can (Linux); elsewhere the file grows as it is written.
func preallocSpool(f *os.File, n int64) error { return nil }
