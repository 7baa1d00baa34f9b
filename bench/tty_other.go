//go:build !linux

package bench

import "io"

// isTerminal is false off Linux: progress is printed as plain lines.
func isTerminal(io.Writer) bool { return false }

// terminalWidth is unknown off Linux.
func terminalWidth(io.Writer) int { return 0 }
