package turn

import (
	"context"
	"fmt"
	"net"
	"strconv"
)

// Service issues TURN credentials and, unless Config.URIs names external
// servers, runs the embedded server they are valid on. Its owner (the
// node) calls Close.
type Service struct {
	cfg    Config
	uris   []string
	server *server // nil with external URIs
}

// Start validates cfg and starts the embedded server when cfg asks for one.
func Start(ctx context.Context, cfg Config) (*Service, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	s := &Service{cfg: cfg}
	if !cfg.embedded() {
		s.uris = append([]string(nil), cfg.URIs...)
		cfg.Logger.Info("turn: clients use external TURN servers", "uris", s.uris, "ttl", cfg.TTL)
		return s, nil
	}
	if s.server, err = startServer(ctx, cfg); err != nil {
		return nil, err
	}
	port := s.server.conn.LocalAddr().(*net.UDPAddr).Port
	s.uris = []string{"turn:" + net.JoinHostPort(cfg.RelayIP, strconv.Itoa(port)) + "?transport=udp"}
	cfg.Logger.Info("turn: embedded server listening", "udp", s.server.conn.LocalAddr().String(), "relay_ip", cfg.RelayIP, "uris", s.uris, "ttl", cfg.TTL)
	return s, nil
}

// Issue returns fresh credentials for userID, valid for the configured TTL.
func (s *Service) Issue(userID string) (Credentials, error) {
	return NewCredentials(s.cfg.Secret, userID, s.cfg.TTL, s.cfg.Now())
}

// URIs are the TURN URIs clients use the credentials on.
func (s *Service) URIs() []string { return append([]string(nil), s.uris...) }

// Addr is the embedded server's UDP address (nil with external servers).
func (s *Service) Addr() net.Addr {
	if s.server == nil {
		return nil
	}
	return s.server.conn.LocalAddr()
}

// Allocations is how many relays the embedded server holds now.
func (s *Service) Allocations() int {
	if s.server == nil {
		return 0
	}
	return s.server.pion.AllocationCount()
}

// Close stops the embedded server and waits, within ctx, until its socket
// and all relay sockets are closed (T2). Relayed calls break; clients fall
// back to another server from a fresh GET /v1/calls/turn.
func (s *Service) Close(ctx context.Context) error {
	if s.server == nil {
		return nil
	}
	if err := s.server.close(ctx); err != nil {
		return fmt.Errorf("close turn server on %s: %w", s.server.conn.LocalAddr(), err)
	}
	return nil
}
