package embedded

import (
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// natsReadyTimeout bounds how long StartNATS waits for a server that has
// neither failed nor started accepting connections.
const natsReadyTimeout = 10 * time.Second

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
// A port another process holds fails at once with the listen error, which
// matches syscall.EADDRINUSE under errors.Is; any other failure the server
// reports while starting also returns at once, with its message.
func StartNATS(cfg NATSConfig) (*NATS, error) {
	if cfg.JetStream && cfg.StoreDir == "" {
		return nil, fmt.Errorf("start nats: jetstream needs a store directory")
	}
	addr := net.JoinHostPort(cfg.Host, strconv.Itoa(cfg.Port))
	if cfg.Port > 0 {
		// nats-server reports a failed listen only to its logger, as text.
		// Trying the port first gives the caller the listen error itself,
		// to test with errors.Is. The port is free again once l closes: a
		// listening socket that accepted nothing leaves no TIME_WAIT.
		l, err := net.Listen("tcp", addr)
		if err != nil {
			return nil, fmt.Errorf("start nats on %s: %w", addr, err)
		}
		l.Close()
	}
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
	srv, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("start nats on %s: %w", addr, err)
	}
	// Without a logger a fatal start (the port taken since the check above,
	// JetStream's store unusable) would go unseen until the timeout.
	fatal := &fatalLogger{ch: make(chan error, 1)}
	srv.SetLogger(fatal, false, false)
	go srv.Start()
	deadline := time.Now().Add(natsReadyTimeout)
	for !srv.ReadyForConnections(50 * time.Millisecond) {
		var startErr error
		select {
		case startErr = <-fatal.ch:
		default:
			if time.Now().After(deadline) {
				startErr = fmt.Errorf("not ready within %v", natsReadyTimeout)
			}
		}
		if startErr != nil {
			srv.Shutdown()
			srv.WaitForShutdown()
			return nil, fmt.Errorf("start nats on %s: %w", addr, startErr)
		}
	}
	return &NATS{srv: srv}, nil
}

// fatalLogger is the embedded server's logger: it drops everything but the
// first fatal error, which it hands to StartNATS. The server calls it from
// its own goroutines.
type fatalLogger struct {
	ch chan error // buffered 1: the first fatal error; later ones are dropped
}

func (l *fatalLogger) Fatalf(format string, v ...any) {
	select {
	case l.ch <- fmt.Errorf(format, v...):
	default:
	}
}

func (*fatalLogger) Noticef(string, ...any) {}
func (*fatalLogger) Warnf(string, ...any)   {}
func (*fatalLogger) Errorf(string, ...any)  {}
func (*fatalLogger) Debugf(string, ...any)  {}
func (*fatalLogger) Tracef(string, ...any)  {}

// URL returns the client URL, e.g. nats://127.0.0.1:4222.
func (n *NATS) URL() string { return n.srv.ClientURL() }

// Server returns the underlying server, for tests that need to poke it.
func (n *NATS) Server() *server.Server { return n.srv }

// Close stops the server and waits for it.
func (n *NATS) Close() {
	n.srv.Shutdown()
	n.srv.WaitForShutdown()
}
