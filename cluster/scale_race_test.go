//go:build race

package cluster

import "time"

// The race detector slows everything about 10×: run a tenth of the grains
// and allow a proportionally slower probe. The numbers that count come from
// the run without -race.
const (
	scaleGrains      = 100_000
	scalePassivated  = 10_000
	scaleProbeP99Max = 250 * time.Millisecond
)
