package httpapi

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"slices"
	"strconv"
	"sync"

	"github.com/kvrouter/router/internal/shutdown"
	"github.com/kvrouter/router/metrics"
	"github.com/kvrouter/router/service"
)

// PathPrefix is the prefix of every endpoint's path: POST
// /v1/{endpoint}.
const PathPrefix = "/v1/"

// Answerer answers one request of one of the router's endpoints, given the
// request's JSON body, and delivers the reply through to: service.Handler.
// Serve is called from many goroutines at once. It returns after calling
// to.Send exactly once, or with an error and no reply for an endpoint it
// does not serve. body is the caller's again once Serve returns.
type Answerer interface {
	Serve(ctx context.Context, endpoint string, body []byte, to service.Sender) error
}

var _ Answerer = (*service.Handler)(nil)

// Server is the HTTP API: the router's endpoints at POST /v1/{endpoint},
// with the same JSON as on NATS (docs/api.md §7).
type Server struct {
	cfg Config
	ans Answerer
	m   *Metrics
	log *slog.Logger
	// paths maps each served path to its endpoint; written by New only.
	paths map[string]string
	// bodies are pooled request-body buffers (*bytes.Buffer).
	bodies sync.Pool

	// mu guards ln; a leaf lock (docs/locks.md).
	mu sync.Mutex
	ln net.Listener
}

// New returns a server for cfg that answers with ans and records its
// families (Metrics) in m. It starts nothing and binds nothing; Listen
// binds the port, Run serves.
func New(cfg Config, ans Answerer, m *metrics.Router, log *slog.Logger) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("http api: %w", err)
	}
	if ans == nil || m == nil {
		return nil, errors.New("http api: nil answerer or metrics")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	hm, err := NewMetrics(m)
	if err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, ans: ans, m: hm, log: log, paths: map[string]string{}}
	for _, name := range service.Endpoints() {
		s.paths[PathPrefix+name] = name
	}
	return s, nil
}

// Paths returns the paths the server answers, sorted: PathPrefix and the
// name of each of the service's endpoints.
func (s *Server) Paths() []string { return slices.Sorted(maps.Keys(s.paths)) }

// Config returns the server's configuration.
func (s *Server) Config() Config { return s.cfg }

// Listen binds the listening socket, so that a port in use fails at once
// and the address is known before Run.
func (s *Server) Listen() (net.Addr, error) {
	ln, err := net.Listen("tcp", net.JoinHostPort(s.cfg.Host, strconv.Itoa(s.cfg.Port)))
	if err != nil {
		return nil, fmt.Errorf("http api: listen on %s:%d: %w", s.cfg.Host, s.cfg.Port, err)
	}
	s.mu.Lock()
	s.ln = ln
	s.mu.Unlock()
	return ln.Addr(), nil
}

// Addr returns the address listened on, or "" before Listen.
func (s *Server) Addr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ln == nil {
		return ""
	}
	return s.ln.Addr().String()
}

// Close releases the socket Listen bound, for a server that will not Run
// (the router failed to start). Run closes it itself.
func (s *Server) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ln == nil {
		return nil
	}
	return s.ln.Close()
}

// Run serves until ctx ends (calling Listen if that has not been done),
// then shuts down: it stops accepting connections, closes idle ones and
// waits for the requests in flight to be answered, for at most
// DrainTimeout and never past the router's shutdown deadline
// (internal/shutdown); cut short, it closes the connections left and says
// so once. A route waiting in the scheduler's queue is answered when the
// router closes at shutdown (internal: the router is shutting down), as on
// NATS. Run returns nil after a shutdown, and an error if serving fails.
func (s *Server) Run(ctx context.Context) error {
	s.mu.Lock()
	ln := s.ln
	s.mu.Unlock()
	if ln == nil {
		if _, err := s.Listen(); err != nil {
			return err
		}
		s.mu.Lock()
		ln = s.ln
		s.mu.Unlock()
	}
	srv := &http.Server{
		Handler:           s,
		ReadHeaderTimeout: s.cfg.ReadHeaderTimeout,
		ReadTimeout:       s.cfg.ReadTimeout,
		WriteTimeout:      s.cfg.WriteTimeout(),
		IdleTimeout:       s.cfg.IdleTimeout,
		MaxHeaderBytes:    s.cfg.MaxHeaderBytes,
		// net/http's own complaints (accept errors, a handler's panic)
		// go to the router's log, not to the standard logger.
		ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("http api: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := shutdown.DrainContext(ctx, s.cfg.DrainTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		d, _ := sctx.Deadline()
		s.log.Warn("http api: shutdown cut short; the connections still open are closed",
			"drain_timeout", s.cfg.DrainTimeout, "deadline", d, "error", err)
		_ = srv.Close()
	}
	if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("http api: %w", err)
	}
	return nil
}
