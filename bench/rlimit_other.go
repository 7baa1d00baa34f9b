//go:build !linux

package bench

// openFilesLimit is unknown off Linux.
func openFilesLimit() (uint64, bool) { return 0, false }
