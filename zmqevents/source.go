package zmqevents

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/kvrouter/router/events"
	"github.com/kvrouter/router/indexer"
	"github.com/kvrouter/router/metrics"
)

// Engine is the wire format a publisher speaks.
type Engine uint8

// The publishers' wire formats.
const (
	// EngineVLLM is vLLM's KV event publisher (--kv-events-config).
	EngineVLLM Engine = iota + 1
	// EngineSGLang is SGLang's, vLLM's format with SGLang's differences.
	EngineSGLang
	// EngineDynamo is Dynamo's ZMQ event plane: RouterEvents in envelopes.
	EngineDynamo
)

// String returns the engine's name, as the workers file and the engine label
// spell it.
func (e Engine) String() string {
	switch e {
	case EngineVLLM:
		return "vllm"
	case EngineSGLang:
		return "sglang"
	case EngineDynamo:
		return "dynamo"
	}
	return fmt.Sprintf("engine(%d)", uint8(e))
}

// ParseEngine returns the engine a workers file names: vllm or sglang.
func ParseEngine(s string) (Engine, error) {
	switch s {
	case "vllm":
		return EngineVLLM, nil
	case "sglang":
		return EngineSGLang, nil
	}
	return 0, fmt.Errorf("engine %q: want vllm or sglang", s)
}

// Endpoint is one publisher of KV events.
type Endpoint struct {
	// Rank is the worker rank whose events an engine publisher carries.
	// On Dynamo's event plane the events name their own worker and rank,
	// and Rank.ID is only the publisher's instance id, for logs.
	Rank indexer.Worker
	// Addr is the publisher's address, tcp://host:port or ipc://path.
	Addr string
	// Replay is the address of an engine's replay socket; empty when it
	// has none.
	Replay string
	// Topic is the prefix of the topic frames to subscribe to; empty for
	// every message.
	Topic  string
	Engine Engine
}

// String describes the endpoint for logs and /health.
func (e Endpoint) String() string {
	if e.Engine == EngineDynamo {
		return fmt.Sprintf("dynamo publisher %x at %s", uint64(e.Rank.ID), e.Addr)
	}
	return fmt.Sprintf("%s worker %d rank %d at %s", e.Engine, e.Rank.ID, e.Rank.DPRank, e.Addr)
}

// Sink is where a Source delivers: the index's one writer (events.Writer).
type Sink interface {
	// SubmitWait queues one event with its publisher's event_id, waiting
	// while the queue is full: the connection stops reading meanwhile, so
	// that a publisher faster than the index is held back by TCP, not
	// answered by loss in the router.
	SubmitWait(ctx context.Context, ev indexer.Event, eventID uint64, n events.Numbering) error
	// ClearRank drops every block of a rank and forgets its event_id.
	ClearRank(rank indexer.Worker)
}

// Config of a Source.
type Config struct {
	// BlockSize is the router's KV block size: engine blocks of another
	// size are not indexed.
	BlockSize int
	// ReconnectMin and ReconnectMax bound the backoff between dials of a
	// publisher that is not reachable or went away.
	ReconnectMin, ReconnectMax time.Duration
	// ReplayTimeout bounds one replay request, from the dial to the last
	// batch wanted.
	ReplayTimeout time.Duration
	// DialTimeout bounds one dial.
	DialTimeout time.Duration
}

// DefaultConfig returns the defaults for a router of the given block size.
func DefaultConfig(blockSize int) Config {
	return Config{
		BlockSize:     blockSize,
		ReconnectMin:  100 * time.Millisecond,
		ReconnectMax:  5 * time.Second,
		ReplayTimeout: 5 * time.Second,
		DialTimeout:   2 * time.Second,
	}
}

// Validate checks the configuration.
func (c Config) Validate() error {
	switch {
	case c.BlockSize <= 0:
		return fmt.Errorf("zmq events: block size %d, want > 0", c.BlockSize)
	case c.ReconnectMin <= 0 || c.ReconnectMax < c.ReconnectMin:
		return fmt.Errorf("zmq events: reconnect backoff %v..%v, want 0 < min <= max", c.ReconnectMin, c.ReconnectMax)
	case c.ReplayTimeout <= 0 || c.DialTimeout <= 0:
		return errors.New("zmq events: replay and dial timeouts must be > 0")
	}
	return nil
}

// Source subscribes to a set of publishers and delivers their events to a
// Sink. The set comes in groups (the workers file, Dynamo's event plane),
// each replaced whole by Set; a publisher that leaves the set is
// disconnected and one that joins is dialled. Make one with New, call Run
// once; Set is safe for concurrent use, before or during Run.
type Source struct {
	cfg  Config
	sink Sink
	m    *Metrics
	log  *slog.Logger

	mu      sync.Mutex
	groups  map[string][]Endpoint
	conns   map[Endpoint]*conn
	ctx     context.Context // Run's; nil before Run and after it returned
	wg      sync.WaitGroup
	started bool
}

// New prepares a source that delivers to sink and counts in families built
// from m. It starts nothing; Run does.
func New(cfg Config, sink Sink, m *metrics.Router, log *slog.Logger) (*Source, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if sink == nil || m == nil {
		return nil, errors.New("zmq events: nil sink or metrics")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	registerTransports()
	zm, err := NewMetrics(m)
	if err != nil {
		return nil, fmt.Errorf("zmq events: %w", err)
	}
	return &Source{
		cfg: cfg, sink: sink, m: zm, log: log,
		groups: make(map[string][]Endpoint),
		conns:  make(map[Endpoint]*conn),
	}, nil
}

// Set replaces the publishers of one group. Publishers of other groups are
// untouched; one named by two groups is connected once.
func (s *Source) Set(group string, eps []Endpoint) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.groups[group] = slices.Clone(eps)
	if s.ctx != nil {
		s.reconcileLocked()
	}
}

// Run connects to the publishers and delivers their events until ctx ends,
// then disconnects and returns nil once every connection's goroutine has
// exited. It may be called once.
func (s *Source) Run(ctx context.Context) error {
	s.mu.Lock()
	if s.started {
		s.mu.Unlock()
		return errors.New("zmq events: Run called twice")
	}
	s.started = true
	s.ctx = ctx
	s.reconcileLocked()
	s.mu.Unlock()

	<-ctx.Done()
	s.mu.Lock()
	s.ctx = nil
	for ep, c := range s.conns {
		c.cancel()
		delete(s.conns, ep)
	}
	s.mu.Unlock()
	s.wg.Wait()
	return nil
}

// reconcileLocked starts a connection for every wanted publisher without
// one and stops those no longer wanted. mu is held and Run is running.
func (s *Source) reconcileLocked() {
	want := make(map[Endpoint]bool)
	for _, eps := range s.groups {
		for _, ep := range eps {
			want[ep] = true
		}
	}
	for ep, c := range s.conns {
		if !want[ep] {
			c.cancel()
			delete(s.conns, ep)
			s.log.Info("zmq events: publisher removed", slog.String("publisher", ep.String()))
		}
	}
	for ep := range want {
		if _, ok := s.conns[ep]; ok {
			continue
		}
		c := newConn(s, ep)
		s.conns[ep] = c
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			c.run()
		}()
	}
}

// PublisherStatus is what /health shows of one publisher.
type PublisherStatus struct {
	Endpoint  Endpoint
	Connected bool
	// LastError is why the last connection ended or failed; empty while
	// connected.
	LastError string
	// Mismatch is the block size of the engine's last store when it is
	// not the router's (0 when they agree or nothing was stored).
	Mismatch int
	// Delivered counts the batches delivered to the index, and LastSeq is
	// the sequence of the last one (engines).
	Delivered, LastSeq uint64
}

// Status returns every publisher's state, sorted by worker and rank.
func (s *Source) Status() []PublisherStatus {
	s.mu.Lock()
	out := make([]PublisherStatus, 0, len(s.conns))
	for _, c := range s.conns {
		out = append(out, c.status())
	}
	s.mu.Unlock()
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i].Endpoint, out[j].Endpoint
		if a.Rank != b.Rank {
			if a.Rank.ID != b.Rank.ID {
				return a.Rank.ID < b.Rank.ID
			}
			return a.Rank.DPRank < b.Rank.DPRank
		}
		return a.Addr < b.Addr
	})
	return out
}

// Health summarises Status for /health: the publishers not connected and
// those whose block size is not the router's, or "" when all is well.
func Health(st []PublisherStatus, blockSize int) (down, mismatched string) {
	var d, m []string
	for _, p := range st {
		if !p.Connected {
			msg := p.Endpoint.String()
			if p.LastError != "" {
				msg += " (" + p.LastError + ")"
			}
			d = append(d, msg)
		}
		if p.Mismatch != 0 {
			m = append(m, fmt.Sprintf("%s publishes blocks of %d tokens, the router's are %d: its blocks are not indexed",
				p.Endpoint, p.Mismatch, blockSize))
		}
	}
	if len(d) > 0 {
		down = fmt.Sprintf("%d of %d publisher(s) not connected: %s", len(d), len(st), strings.Join(d, "; "))
	}
	return down, strings.Join(m, "; ")
}

// RankAddr returns the address rank r of a data-parallel engine publishes
// on: vLLM and SGLang offset the port of tcp:// endpoints by the rank, and
// suffix ipc:// paths with _dp{r}. Rank 0 keeps the address.
func RankAddr(addr string, r int) (string, error) {
	if err := CheckAddr(addr); err != nil {
		return "", err
	}
	if r == 0 {
		return addr, nil
	}
	if path, ok := strings.CutPrefix(addr, "ipc://"); ok {
		return fmt.Sprintf("ipc://%s_dp%d", path, r), nil
	}
	i := strings.LastIndexByte(addr, ':')
	port, _ := strconv.Atoi(addr[i+1:]) // CheckAddr checked it
	if port+r > 65535 {
		return "", fmt.Errorf("%q: rank %d would publish on port %d, past 65535", addr, r, port+r)
	}
	return fmt.Sprintf("%s:%d", addr[:i], port+r), nil
}

// EngineEndpoints returns the publishers of every rank of an engine worker
// with dpSize ranks, whose rank 0 publishes on addr (and replays on replay,
// when not empty).
func EngineEndpoints(id indexer.WorkerID, dpSize int, addr, replay, topic string, engine Engine) ([]Endpoint, error) {
	eps := make([]Endpoint, dpSize)
	for r := range dpSize {
		a, err := RankAddr(addr, r)
		if err != nil {
			return nil, fmt.Errorf("endpoint: %w", err)
		}
		var ra string
		if replay != "" {
			if ra, err = RankAddr(replay, r); err != nil {
				return nil, fmt.Errorf("replay_endpoint: %w", err)
			}
		}
		eps[r] = Endpoint{Rank: indexer.Worker{ID: id, DPRank: indexer.DPRank(r)}, Addr: a, Replay: ra, Topic: topic, Engine: engine}
	}
	return eps, nil
}
