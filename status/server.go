package status

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kvrouter/router/internal/httpserve"
	"github.com/kvrouter/router/metrics"
)

// Health states, as Dynamo spells them.
const (
	Ready    = "ready"
	NotReady = "notready"
)

// Config says where the status server listens and how its paths are named.
type Config struct {
	// Host and Port to listen on (DYN_SYSTEM_HOST, DYN_SYSTEM_PORT); port 0
	// picks a free port.
	Host string
	Port int
	// HealthPath and LivePath rename the probes (DYN_SYSTEM_HEALTH_PATH,
	// DYN_SYSTEM_LIVE_PATH).
	HealthPath string
	LivePath   string
	// StartingStatus is reported until every check has passed once
	// (DYN_SYSTEM_STARTING_HEALTH_STATUS): "notready" by default; "ready"
	// makes the router report ready from the start, as Dynamo allows.
	StartingStatus string
}

// DefaultConfig returns Dynamo's defaults, on port 0.
func DefaultConfig() Config {
	return Config{Host: "0.0.0.0", HealthPath: "/health", LivePath: "/live", StartingStatus: NotReady}
}

// Validate reports every problem, one error per setting joined with
// errors.Join, each naming its flag first (the flags of `router serve`;
// the environment variables are in the comments of Config).
func (c Config) Validate() error {
	var errs []error
	if c.Port < 0 || c.Port > 65535 {
		errs = append(errs, fmt.Errorf("--system-port: %d is out of range (allowed 0..65535)", c.Port))
	}
	for _, p := range []struct{ flag, path string }{{"--system-health-path", c.HealthPath}, {"--system-live-path", c.LivePath}} {
		if len(p.path) < 2 || p.path[0] != '/' {
			errs = append(errs, fmt.Errorf("%s: %q must start with / and name a path", p.flag, p.path))
		}
	}
	if c.HealthPath == c.LivePath {
		errs = append(errs, fmt.Errorf("--system-live-path: %q is also the health path (--system-health-path)", c.LivePath))
	}
	if c.StartingStatus != Ready && c.StartingStatus != NotReady {
		errs = append(errs, fmt.Errorf("--system-starting-health-status: %q is not %s or %s", c.StartingStatus, Ready, NotReady))
	}
	return errors.Join(errs...)
}

// State is the verdict of a Check.
type State uint8

// States of a check, from best to worst.
const (
	// OK: this part of the router works.
	OK State = iota
	// Degraded: this part has a problem the operator should see, but the
	// router still serves correctly (e.g. etcd is unreachable and the last
	// known workers are served). /health stays ready and lists it under
	// "degraded".
	Degraded
	// Failed: the router cannot serve as it should; /health is notready.
	Failed
)

// String returns "ok", "degraded" or "failed".
func (s State) String() string {
	switch s {
	case OK:
		return "ok"
	case Degraded:
		return "degraded"
	case Failed:
		return "failed"
	}
	return "State(" + strconv.Itoa(int(s)) + ")"
}

// Check reports the state of one part of the router and, unless it is OK,
// why. It is called on every probe, from any goroutine, so it must be cheap
// and safe for concurrent use. A state other than the three is Failed.
type Check func() (State, string)

// Server is the status server. Register checks with AddCheck before Run.
type Server struct {
	cfg      Config
	gatherer prometheus.Gatherer
	log      *slog.Logger
	start    time.Time
	now      func() time.Time
	// ln is the listening socket (internal/httpserve), guarded by a lock
	// of its own.
	ln *httpserve.Listener

	// mu guards the fields below; a leaf lock, never held while a check
	// runs (docs/locks.md).
	mu      sync.Mutex
	checks  []namedCheck
	started bool // every check has passed once
}

type namedCheck struct {
	name  string
	check Check
}

// New returns a server for cfg that exposes gatherer's metrics.
func New(cfg Config, gatherer prometheus.Gatherer, log *slog.Logger) *Server {
	return &Server{cfg: cfg, gatherer: gatherer, log: log, start: time.Now(), now: time.Now,
		ln: httpserve.NewListener("status server", cfg.Host, cfg.Port)}
}

// AddCheck registers a check under name, reported in the "endpoints" map
// of /health and, unless OK, in "problems" or "degraded".
func (s *Server) AddCheck(name string, c Check) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.checks = append(s.checks, namedCheck{name, c})
}

// Config returns the server's configuration.
func (s *Server) Config() Config { return s.cfg }

// Addr returns the address listened on, or "" before Listen.
func (s *Server) Addr() string { return s.ln.Addr() }

// Listen binds the listening socket, so the address is known before Run.
func (s *Server) Listen() (net.Addr, error) { return s.ln.Listen() }

// Run serves until ctx ends, then shuts down, giving open requests up to
// five seconds, and never past the router's shutdown deadline
// (internal/shutdown). It calls Listen if that has not been done.
func (s *Server) Run(ctx context.Context) error {
	srv := &http.Server{Handler: s.Handler(), ReadHeaderTimeout: 5 * time.Second}
	return s.ln.Serve(ctx, srv, 5*time.Second, nil)
}

// Handler returns the HTTP handler: /metrics, the two probes, 404 elsewhere.
func (s *Server) Handler() http.Handler {
	metricsHandler := metrics.Handler(s.gatherer, s.log)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/metrics":
			metricsHandler.ServeHTTP(w, r)
		case s.cfg.HealthPath, s.cfg.LivePath:
			s.serveHealth(w)
		default:
			http.NotFound(w, r)
		}
	})
}

// Health is the JSON of /health and /live. Status, Uptime and Endpoints
// are Dynamo's: Endpoints maps each check to "ready" (OK or Degraded) or
// "notready" (Failed), and Status is "notready" if any check failed.
// Problems and Degraded are ours: one line per failed check, one line per
// degraded check, each "name: detail".
type Health struct {
	Status    string            `json:"status"`
	Uptime    Uptime            `json:"uptime"`
	Endpoints map[string]string `json:"endpoints"`
	Problems  []string          `json:"problems,omitempty"`
	Degraded  []string          `json:"degraded,omitempty"`
}

// Uptime is a duration as Rust's serde writes one, as Dynamo reports it.
type Uptime struct {
	Secs  uint64 `json:"secs"`
	Nanos uint32 `json:"nanos"`
}

// Report evaluates every check.
func (s *Server) Report() Health {
	s.mu.Lock()
	checks := append([]namedCheck(nil), s.checks...)
	s.mu.Unlock()
	up := s.now().Sub(s.start)
	h := Health{
		Status:    Ready,
		Uptime:    Uptime{Secs: uint64(up / time.Second), Nanos: uint32(up % time.Second)},
		Endpoints: make(map[string]string, len(checks)),
	}
	for _, c := range checks {
		state, detail := c.check()
		line := c.name
		if detail != "" {
			line += ": " + detail
		}
		switch state {
		case OK:
			h.Endpoints[c.name] = Ready
		case Degraded:
			h.Endpoints[c.name] = Ready
			h.Degraded = append(h.Degraded, line)
		default:
			h.Endpoints[c.name] = NotReady
			h.Status = NotReady
			h.Problems = append(h.Problems, line)
		}
	}
	s.mu.Lock()
	if h.Status == Ready {
		s.started = true
	} else if !s.started && s.cfg.StartingStatus == Ready {
		h.Status = Ready
	}
	s.mu.Unlock()
	return h
}

func (s *Server) serveHealth(w http.ResponseWriter) {
	h := s.Report()
	w.Header().Set("Content-Type", "application/json")
	if h.Status != Ready {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	if err := json.NewEncoder(w).Encode(h); err != nil {
		s.log.Debug("write health response", "err", err)
	}
}
