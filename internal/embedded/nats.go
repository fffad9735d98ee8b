package embedded

import (
	"fmt"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// NATSConfig says where an embedded NATS server listens and keeps its data.
type NATSConfig struct {
	// Host and Port to listen on; port -1 picks a free port.
	Host string
	Port int
	// JetStream turns JetStream on, with its store in StoreDir.
	JetStream bool
	StoreDir  string
}

// NATS is a running embedded NATS server.
type NATS struct {
	srv *server.Server
}

// StartNATS starts a NATS server and waits until it accepts connections.
func StartNATS(cfg NATSConfig) (*NATS, error) {
	opts := &server.Options{
		Host:      cfg.Host,
		Port:      cfg.Port,
		NoLog:     true,
		NoSigs:    true,
		JetStream: cfg.JetStream,
		StoreDir:  cfg.StoreDir,
		// Large enough for index snapshots chunked by the object store.
		MaxPayload: 8 << 20,
	}
	if cfg.JetStream && cfg.StoreDir == "" {
		return nil, fmt.Errorf("start nats: jetstream needs a store directory")
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("start nats on %s:%d: %w", cfg.Host, cfg.Port, err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		srv.Shutdown()
		srv.WaitForShutdown()
		return nil, fmt.Errorf("start nats on %s:%d: not ready within 10s", cfg.Host, cfg.Port)
	}
	return &NATS{srv: srv}, nil
}

// URL returns the client URL, e.g. nats://127.0.0.1:4222.
func (n *NATS) URL() string { return n.srv.ClientURL() }

// Server returns the underlying server, for tests that need to poke it.
func (n *NATS) Server() *server.Server { return n.srv }

// Close stops the server and waits for it.
func (n *NATS) Close() {
	n.srv.Shutdown()
	n.srv.WaitForShutdown()
}
