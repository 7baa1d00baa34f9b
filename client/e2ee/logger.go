package e2ee

import "go.mau.fi/libsignal/logger"

// libsignal logs through a package-global logger whose default prints
// warnings and errors to stdout (for example on every message that fails
// its MAC) and is installed lazily without synchronization, which the race
// detector flags when two devices work in parallel. A library must not
// print, so unless the program already configured a logger we install one
// that discards everything, once, before any goroutine can race on it.
func init() {
	if logger.Logger == nil {
		var l logger.Loggable = silentLogger{}
		logger.Setup(&l)
	}
}

type silentLogger struct{}

func (silentLogger) Debug(string, string)   {}
func (silentLogger) Info(string, string)    {}
func (silentLogger) Warning(string, string) {}
func (silentLogger) Error(string, string)   {}
func (silentLogger) Configure(string)       {}
