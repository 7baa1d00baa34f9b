package client

import "time"

// NewMediaClientForTest returns a Client that only makes HTTP API calls
// (media transfers, tokens) to creds.BaseURL, without a session: for
// tests of media against a fake server.
func NewMediaClientForTest(creds Credentials, opts ...Option) (*Client, error) {
	cfg, err := buildConfig(opts)
	if err != nil {
		return nil, err
	}
	httpBase, wsURL, err := endpoints(creds.BaseURL)
	if err != nil {
		return nil, err
	}
	creds.BaseURL = httpBase
	return &Client{
		cfg:     cfg,
		creds:   creds,
		servers: []server{{httpBase: httpBase, wsURL: wsURL}},
		log:     cfg.logger,
		tokens:  &tokenSource{hc: cfg.httpClient, creds: creds, now: time.Now},
	}, nil
}
