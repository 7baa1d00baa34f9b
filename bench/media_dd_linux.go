package bench

import (
	"fmt"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// dropCache asks the kernel to forget the file's (clean, just synced)
// pages: posix_fadvise DONTNEED needs no privilege, unlike
// /proc/sys/vm/drop_caches. The kernel may keep some; residentPct tells.
func dropCache(f *os.File) string {
	if err := unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
		return fmt.Sprintf("posix_fadvise(DONTNEED) failed (%v): the read may come from the page cache", err)
	}
	return "page cache dropped for the file with posix_fadvise(DONTNEED)"
}

// residentPct is the share of the file's pages in the page cache
// (mincore over a mapping of it); -1 when it cannot be told.
func residentPct(f *os.File, size int64) float64 {
	if size == 0 {
		return 0
	}
	m, err := unix.Mmap(int(f.Fd()), 0, int(size), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		return -1
	}
	defer func() { _ = unix.Munmap(m) }()
	page := int64(os.Getpagesize())
	vec := make([]byte, (size+page-1)/page)
	_, _, errno := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(&m[0])), uintptr(len(m)), uintptr(unsafe.Pointer(&vec[0])))
	if errno != 0 {
		return -1
	}
	in := 0
	for _, v := range vec {
		if v&1 != 0 {
			in++
		}
	}
	return 100 * float64(in) / float64(len(vec))
}
