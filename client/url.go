package client

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
)

// endpoints derives the HTTP API base URL (http or https, no trailing
// slash) and the WebSocket URL of /v1/ws (ws or wss) from what a user gave:
// ws://, wss://, http:// or https:// URLs, with or without a path prefix or
// a trailing /v1/ws, or a bare host:port (taken as http).
func endpoints(raw string) (httpBase, wsURL string, err error) {
	raw = strings.TrimSpace(raw)
	if raw == "" {
		return "", "", errors.New("server URL is empty")
	}
	if !strings.Contains(raw, "://") {
		raw = "http://" + raw
	}
	u, err := url.Parse(raw)
	if err != nil {
		return "", "", fmt.Errorf("server URL %q: %w", raw, err)
	}
	var httpScheme, wsScheme string
	switch strings.ToLower(u.Scheme) {
	case "http", "ws":
		httpScheme, wsScheme = "http", "ws"
	case "https", "wss":
		httpScheme, wsScheme = "https", "wss"
	default:
		return "", "", fmt.Errorf("server URL %q: scheme must be http, https, ws or wss", raw)
	}
	if u.Host == "" {
		return "", "", fmt.Errorf("server URL %q has no host", raw)
	}
	path := strings.TrimRight(u.Path, "/")
	path = strings.TrimSuffix(path, "/v1/ws")
	path = strings.TrimRight(path, "/")
	base := url.URL{Scheme: httpScheme, Host: u.Host, Path: path}
	ws := url.URL{Scheme: wsScheme, Host: u.Host, Path: path + "/v1/ws"}
	return base.String(), ws.String(), nil
}

// BaseURL normalises a server URL given as ws://, wss://, http://, https://
// or host:port into the http(s) base URL the HTTP API lives under.
func BaseURL(raw string) (string, error) {
	b, _, err := endpoints(raw)
	return b, err
}
