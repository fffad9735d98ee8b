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
	"sync"
	"time"

	"github.com/kvrouter/router/internal/httpserve"
	"github.com/kvrouter/router/metrics"
	"github.com/kvrouter/router/service"
)

// PathPrefix is the prefix of every endpoint's path: POST
// /v1/{endpoint}.
const PathPrefix = "/v1/"

// Server is the HTTP API: the router's endpoints at POST /v1/{endpoint},
// with the same JSON as on NATS (docs/api.md §7).
type Server struct {
	cfg Config
	// h answers each request, as it does on NATS.
	h   *service.Handler
	m   *Metrics
	log *slog.Logger
	// paths maps each served path to its endpoint; written by New only.
	paths map[string]string
	// bodies are pooled request-body buffers (*bytes.Buffer).
	bodies sync.Pool

	// ln is the listening socket (internal/httpserve).
	ln *httpserve.Listener
}

// New returns a server for cfg that answers with h and records its
// families (Metrics) in m. It starts nothing and binds nothing; Listen
// binds the port, Run serves.
func New(cfg Config, h *service.Handler, m *metrics.Router, log *slog.Logger) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("http api: %w", err)
	}
	if h == nil || m == nil {
		return nil, errors.New("http api: nil handler or metrics")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	hm, err := NewMetrics(m)
	if err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, h: h, m: hm, log: log, paths: map[string]string{},
		ln: httpserve.NewListener("http api", cfg.Host, cfg.Port)}
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
func (s *Server) Listen() (net.Addr, error) { return s.ln.Listen() }

// Addr returns the address listened on, or "" before Listen.
func (s *Server) Addr() string { return s.ln.Addr() }

// Close releases the socket Listen bound, for a server that will not Run
// (the router failed to start). Run closes it itself.
func (s *Server) Close() error { return s.ln.Close() }

// Run serves until ctx ends (calling Listen if that has not been done),
// then shuts down: it stops accepting connections, closes idle ones and
// waits for the requests in flight to be answered, for at most
// DrainTimeout and never past the router's shutdown deadline
// (internal/shutdown); cut short, it closes the connections left and says
// so once. A route waiting in the scheduler's queue is answered when the
// router closes at shutdown (internal: the router is shutting down), as on
// NATS. Run returns nil after a shutdown, and an error if serving fails.
func (s *Server) Run(ctx context.Context) error {
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
	return s.ln.Serve(ctx, srv, s.cfg.DrainTimeout, func(deadline time.Time, err error) {
		s.log.Warn("http api: shutdown cut short; the connections still open are closed",
			"drain_timeout", s.cfg.DrainTimeout, "deadline", deadline, "error", err)
	})
}
