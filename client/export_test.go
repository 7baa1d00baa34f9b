package client

// WithoutFrameLimitForTest makes a Client send frames whatever the
// server's frame limit, to test how it copes with the server's refusals.
func WithoutFrameLimitForTest() Option { return func(o *config) { o.noFrameLimit = true } }
