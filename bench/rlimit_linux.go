package bench

import "golang.org/x/sys/unix"

// openFilesLimit is this process's open-files limit (Go raises the soft
// limit to the hard one at start-up).
func openFilesLimit() (uint64, bool) {
	var l unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &l); err != nil {
		return 0, false
	}
	return l.Cur, true
}
