package service

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/kvrouter/router/internal/shutdown"
	"github.com/kvrouter/router/metrics"
	"github.com/kvrouter/router/scheduler"
)

// Defaults of Config.
const (
	// DefaultNamespace is Dynamo's default namespace.
	DefaultNamespace = "dynamo"
	// DefaultComponent is the router's own component.
	DefaultComponent = "router"
	// DefaultDrainTimeout bounds the wait for in-flight requests at
	// shutdown.
	DefaultDrainTimeout = 10 * time.Second
)

// Config says where the service listens. It is plain data; flags and
// environment variables are bound in cmd/.
type Config struct {
	// Namespace is the Dynamo namespace (--namespace, DYN_NAMESPACE).
	Namespace string
	// Component is the router's component (--router-component): the
	// subjects' component and the queue group.
	Component string
	// RouterID is this replica's instance id: the router_id of its replica
	// events, so that it can ignore its own echo.
	RouterID uint64
	// Handlers is the number of subscriptions per endpoint in the queue
	// group (--router-handlers, ours; 0 means GOMAXPROCS). NATS runs each
	// subscription's handler on one goroutine, so this is how many requests
	// of one endpoint are decoded and answered in parallel.
	Handlers int
	// DrainTimeout bounds the service's whole stop, the drain of its
	// subscriptions and the flush of the last replies together
	// (--router-drain-timeout, ours). The router's shutdown deadline cuts
	// it shorter when it comes first (internal/shutdown).
	DrainTimeout time.Duration
}

// DefaultConfig returns Dynamo's names and our defaults.
func DefaultConfig() Config {
	return Config{Namespace: DefaultNamespace, Component: DefaultComponent, DrainTimeout: DefaultDrainTimeout}
}

// Validate reports every setting out of range, one error per setting joined
// with errors.Join, each naming its flag first and the allowed range.
func (c Config) Validate() error {
	var errs []error
	for _, n := range []struct{ flag, v string }{{"--namespace", c.Namespace}, {"--router-component", c.Component}} {
		if n.v == "" || strings.ContainsAny(n.v, ".*> \t\r\n") {
			errs = append(errs, fmt.Errorf("%s: %q must be a non-empty NATS subject token (no '.', '*', '>' or white space)", n.flag, n.v))
		}
	}
	if c.Handlers < 0 || c.Handlers > 1024 {
		errs = append(errs, fmt.Errorf("--router-handlers: %d is out of range (allowed 0..1024, 0 means one per CPU)", c.Handlers))
	}
	if c.DrainTimeout <= 0 || c.DrainTimeout > time.Hour {
		errs = append(errs, fmt.Errorf("--router-drain-timeout: %v is out of range (allowed > 0 and ≤ 1h)", c.DrainTimeout))
	}
	return errors.Join(errs...)
}

// Subject returns the subject of one of the router's endpoints:
// namespace.{ns}.component.{component}.{endpoint}.
func Subject(namespace, component, endpoint string) string {
	return "namespace." + namespace + ".component." + component + "." + endpoint
}

// Service answers the router's NATS endpoints (docs/api.md §3) with a
// scheduler.Router, and carries its replica-sync events when the router's
// configuration turns replica sync on.
type Service struct {
	cfg Config
	nc  *nats.Conn
	r   *scheduler.Router
	m   *Metrics
	log *slog.Logger
	// pub is the replica-sync publisher (nil without replica sync).
	pub *SyncPublisher

	requests sync.Pool // *request
	buffers  sync.Pool // *[]byte
	// pending counts route requests handed to the router and not yet
	// answered.
	pending sync.WaitGroup
	// ready is closed once Run's subscriptions are live (tests wait on it).
	ready chan struct{}
}

// New returns a service for r on nc, which the caller owns (and closes
// after Run returns). With replica sync on in r's configuration, pub must
// be the publisher r was built with (NewSyncPublisher): the service runs it
// and applies the peers' events to r; without, pub must be nil. It builds
// its families (Metrics) from m and starts nothing.
func New(cfg Config, nc *nats.Conn, r *scheduler.Router, pub *SyncPublisher, m *metrics.Router, log *slog.Logger) (*Service, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("router service: %w", err)
	}
	if nc == nil || r == nil || m == nil {
		return nil, errors.New("router service: nil NATS connection, router or metrics")
	}
	if sync := r.Config().ReplicaSync; sync != (pub != nil) {
		return nil, fmt.Errorf("router service: --router-replica-sync is %v but a replica-sync publisher was given: %v", sync, pub != nil)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.Handlers == 0 {
		cfg.Handlers = runtime.GOMAXPROCS(0)
	}
	sm, err := NewMetrics(m)
	if err != nil {
		return nil, fmt.Errorf("router service: %w", err)
	}
	s := &Service{cfg: cfg, nc: nc, r: r, m: sm, log: log, ready: make(chan struct{})}
	s.requests.New = func() any {
		r := &request{}
		r.reply.done = r.answer
		return r
	}
	s.buffers.New = func() any { b := make([]byte, 0, 512); return &b }
	s.pub = pub
	return s, nil
}

// endpoint is one served endpoint.
type endpoint struct {
	name    string
	handler nats.MsgHandler
}

// Run subscribes to the endpoints (Handlers subscriptions each, in the
// queue group named after the component) and, with replica sync, to the
// replica events, and serves until ctx ends. Then it drains the
// subscriptions (requests already received are answered), closes the
// router (requests waiting in its queue are answered with an internal
// error saying the router is shutting down), waits for every answer,
// flushes the replies, and returns nil; the drain and the flush together
// take at most DrainTimeout, and end at the shutdown deadline that ctx
// ended with, if sooner. A subscription that cannot be made is an error
// returned at once.
func (s *Service) Run(ctx context.Context) error {
	eps := []endpoint{
		{metrics.EndpointRoute, s.handleRoute},
		{metrics.EndpointMarkPrefill, s.handleMark(s.m.MarkPrefill, false)},
		{metrics.EndpointMarkFree, s.handleMark(s.m.MarkFree, true)},
		{metrics.EndpointOverlapScores, s.handleOverlapScores},
		{metrics.EndpointPotentialLoads, s.handlePotentialLoads},
	}
	var subs []*nats.Subscription
	for _, ep := range eps {
		subject := Subject(s.cfg.Namespace, s.cfg.Component, ep.name)
		for range s.cfg.Handlers {
			sub, err := s.nc.QueueSubscribe(subject, s.cfg.Component, ep.handler)
			if err == nil {
				// Generous limits: a slow handler shows in the latency
				// histograms long before NATS drops anything.
				err = sub.SetPendingLimits(1<<16, 256<<20)
			}
			if err != nil {
				for _, sub := range subs {
					_ = sub.Unsubscribe()
				}
				return fmt.Errorf("router service: subscribe to %s: %w", subject, err)
			}
			subs = append(subs, sub)
		}
	}
	var wg sync.WaitGroup
	replicaCtx, stopReplica := context.WithCancel(context.WithoutCancel(ctx))
	defer stopReplica()
	var syncSub *nats.Subscription
	if s.pub != nil {
		var err error
		if syncSub, err = s.subscribeSync(); err != nil {
			for _, sub := range subs {
				_ = sub.Unsubscribe()
			}
			return err
		}
		wg.Go(func() { s.pub.run(replicaCtx) })
	}
	if err := s.nc.Flush(); err != nil {
		s.log.Warn("flushing the subscriptions failed", "error", err)
	}
	close(s.ready)
	s.log.Info("router service listening", "subjects", Subject(s.cfg.Namespace, s.cfg.Component, "*"),
		"queue_group", s.cfg.Component, "handlers", s.cfg.Handlers, "replica_sync", s.pub != nil)

	<-ctx.Done()
	dctx, cancel := shutdown.DrainContext(ctx, s.cfg.DrainTimeout)
	defer cancel()
	s.drain(dctx, subs)
	s.r.Close()
	s.pending.Wait()
	if syncSub != nil {
		_ = syncSub.Unsubscribe()
	}
	stopReplica()
	wg.Wait()
	if dctx.Err() != nil {
		return nil // the drain was cut short and said so
	}
	if err := s.nc.FlushWithContext(dctx); err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
		s.log.Warn("router service: flushing the last replies failed", "error", err)
	}
	return nil
}

// drain stops new requests and waits, until ctx ends, for those already
// received to be handled. Cut short, it unsubscribes and says so once.
func (s *Service) drain(ctx context.Context, subs []*nats.Subscription) {
	closed := make([]<-chan nats.SubStatus, 0, len(subs))
	for _, sub := range subs {
		ch := sub.StatusChanged(nats.SubscriptionClosed)
		if err := sub.Drain(); err != nil {
			continue // the connection is closed: nothing to drain
		}
		closed = append(closed, ch)
	}
	for _, ch := range closed {
		select {
		case <-ch:
		case <-ctx.Done():
			d, _ := ctx.Deadline()
			s.log.Warn("router service: drain cut short; requests still in NATS's buffers go unanswered",
				"drain_timeout", s.cfg.DrainTimeout, "deadline", d, "nats_connected", s.nc.IsConnected())
			for _, sub := range subs {
				_ = sub.Unsubscribe()
			}
			return
		}
	}
}

// respond sends body as the reply to msg and records the request in the
// endpoint's metrics; errType is the reply's error code, or empty.
func (s *Service) respond(ep *Endpoint, msg *nats.Msg, start time.Time, body []byte, errType string) {
	if err := msg.Respond(body); err != nil {
		errType = metrics.ErrorTypePublishResponse
		s.log.Debug("cannot reply", "endpoint", ep.Name, "error", err)
	}
	ep.Observe(time.Since(start), len(msg.Data), len(body), errType)
	ep.Inflight.Dec()
}

// fail replies with an error and counts a bad request by its reason.
func (s *Service) fail(ep *Endpoint, msg *nats.Msg, start time.Time, err error) {
	code := scheduler.Code(err)
	var re *requestError
	if errors.As(err, &re) {
		code = scheduler.CodeBadRequest
	}
	if code == scheduler.CodeBadRequest {
		ep.BadRequests.WithLabelValues(reasonOf(err)).Inc()
	}
	b := s.buffer()
	*b = appendError((*b)[:0], code, err.Error())
	s.respond(ep, msg, start, *b, code)
	s.buffers.Put(b)
}

func (s *Service) buffer() *[]byte { return s.buffers.Get().(*[]byte) }

// handleRoute answers a route request, now or, when it waits in the
// queue, from the goroutine that releases it.
func (s *Service) handleRoute(msg *nats.Msg) {
	start := time.Now()
	ep := s.m.Route
	ep.Inflight.Inc()
	req := s.requests.Get().(*request)
	if err := decodeRequest(msg.Data, req, routeFields, s.r.Config().BlockSize); err != nil {
		s.requests.Put(req)
		s.fail(ep, msg, start, err)
		return
	}
	s.pending.Add(1)
	req.reply.svc, req.reply.msg, req.reply.start = s, msg, start
	s.r.Submit(&req.sched, req.reply.done)
}

// answer replies to a route request with its decision; the scheduler
// calls it, once.
func (r *request) answer(d scheduler.Decision, err error) {
	s, msg, start := r.reply.svc, r.reply.msg, r.reply.start
	r.reply.msg = nil
	s.requests.Put(r)
	defer s.pending.Done()
	ep := s.m.Route
	if err != nil {
		s.fail(ep, msg, start, err)
		return
	}
	b := s.buffer()
	*b = appendDecision((*b)[:0], d)
	s.respond(ep, msg, start, *b, "")
	s.buffers.Put(b)
}

// handleMark answers mark_prefill (free false) or mark_free.
func (s *Service) handleMark(ep *Endpoint, free bool) nats.MsgHandler {
	return func(msg *nats.Msg) {
		start := time.Now()
		ep.Inflight.Inc()
		m, err := decodeMark(msg.Data, free)
		if err != nil {
			s.fail(ep, msg, start, err)
			return
		}
		var ok bool
		if free {
			ok = s.r.Free(m.id, m.outputTokens)
		} else {
			ok = s.r.MarkPrefill(m.id)
		}
		b := s.buffer()
		*b = appendSuccess((*b)[:0], ok)
		s.respond(ep, msg, start, *b, "")
		s.buffers.Put(b)
	}
}

// handleOverlapScores answers overlap_scores.
func (s *Service) handleOverlapScores(msg *nats.Msg) {
	s.answerPrompt(s.m.OverlapScores, msg, func(dst []byte, req *scheduler.Request) ([]byte, error) {
		n, scores, err := s.r.OverlapScores(req)
		if err != nil {
			return dst, err
		}
		return appendOverlaps(dst, s.r.Config().BlockSize, n, scores, s.r.Disaggregated()), nil
	})
}

// handlePotentialLoads answers potential_loads.
func (s *Service) handlePotentialLoads(msg *nats.Msg) {
	s.answerPrompt(s.m.PotentialLoads, msg, func(dst []byte, req *scheduler.Request) ([]byte, error) {
		loads, pending, err := s.r.PotentialLoads(req)
		if err != nil {
			return dst, err
		}
		return appendLoads(dst, loads, pending), nil
	})
}

// answerPrompt serves an endpoint that reads a prompt and changes nothing:
// decode, let answer append the reply to a pooled buffer, respond.
func (s *Service) answerPrompt(ep *Endpoint, msg *nats.Msg, answer func(dst []byte, req *scheduler.Request) ([]byte, error)) {
	start := time.Now()
	ep.Inflight.Inc()
	req := s.requests.Get().(*request)
	defer s.requests.Put(req)
	if err := decodeRequest(msg.Data, req, promptFields, s.r.Config().BlockSize); err != nil {
		s.fail(ep, msg, start, err)
		return
	}
	b := s.buffer()
	defer s.buffers.Put(b)
	out, err := answer((*b)[:0], &req.sched)
	if err != nil {
		s.fail(ep, msg, start, err)
		return
	}
	*b = out
	s.respond(ep, msg, start, *b, "")
}
