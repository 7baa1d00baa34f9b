//go:build !linux

package bench

import "os"

func dropCache(*os.File) string {
	return "the page cache cannot be dropped here (Linux only): the reads may come from memory"
}

func residentPct(*os.File, int64) float64 { return -1 }
