// Package bench loads a Courier server through the Go SDK (package client)
// and checks what it delivers: every scenario counts loss, duplicates and
// reordering as well as throughput and latency, so a fast but wrong server
// fails the run.
package bench
