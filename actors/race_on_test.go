//go:build race

package actors_test

// raceEnabled shrinks the scale test: the race detector slows it tenfold.
const raceEnabled = true
