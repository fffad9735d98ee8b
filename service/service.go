package service

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"strconv"
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
	// events, so that it can ignore its own echo, and of its route replies,
	// and the last token of its own mark subjects (ReplicaSubject). 0 (in
	// process tests, `router compare`) serves no subjects of its own and
	// leaves router_id out of route replies.
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

// ReplicaSubject returns the subject on which replica routerID alone
// answers one of the mark endpoints:
// namespace.{ns}.component.{component}.{endpoint}.{routerID in lower-case
// hex}, the hex of the etcd instance keys (docs/api.md §1, §3). The
// client's Client.ReplicaSubject is the same function; a test holds them
// equal.
func ReplicaSubject(namespace, component, endpoint string, routerID uint64) string {
	return Subject(namespace, component, endpoint) + "." + strconv.FormatUint(routerID, 16)
}

// Service answers the router's NATS endpoints (docs/api.md §3) with a
// scheduler.Router, and carries its replica-sync events when the router's
// configuration turns replica sync on. Its Handler does each endpoint's
// work; the Service is the NATS transport around it.
type Service struct {
	cfg Config
	nc  *nats.Conn
	r   *scheduler.Router
	h   *Handler
	log *slog.Logger
	// pub is the replica-sync publisher (nil without replica sync).
	pub *SyncPublisher

	// pending counts route requests handed to the router and marks
	// forwarded to another replica, not yet answered.
	pending sync.WaitGroup
	// ready is closed once Run's subscriptions are live (tests wait on it).
	ready chan struct{}
}

// New returns a service for r on nc, which the caller owns (and closes
// after Run returns). Its route replies carry the worker URLs of urls (nil:
// none). With replica sync on in r's configuration, pub must
// be the publisher r was built with (NewSyncPublisher): the service runs it
// and applies the peers' events to r; without, pub must be nil. It builds
// its Handler, and with it the endpoint families (Metrics), from m, and
// starts nothing.
func New(cfg Config, nc *nats.Conn, r *scheduler.Router, urls WorkerURLs, pub *SyncPublisher, m *metrics.Router, log *slog.Logger) (*Service, error) {
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
	h, err := newHandler(r, urls, m, log, cfg.RouterID, newForwarder(nc, cfg.Namespace, cfg.Component))
	if err != nil {
		return nil, fmt.Errorf("router service: %w", err)
	}
	return &Service{cfg: cfg, nc: nc, r: r, h: h, log: log, pub: pub, ready: make(chan struct{})}, nil
}

// Handler returns the handler the service answers with, for another
// transport of the same endpoints (the HTTP API). Its route replies carry
// the service's RouterID, and it forwards marks that name another replica
// over the service's NATS connection.
func (s *Service) Handler() *Handler { return s.h }

// endpoint is one served subject.
type endpoint struct {
	subject string
	handler nats.MsgHandler
}

// Run subscribes to the endpoints (Handlers subscriptions each, in the
// queue group named after the component) and, with replica sync, to the
// replica events, and serves until ctx ends. Then it drains the
// subscriptions (requests already received are answered), closes the
// router (requests waiting in its queue are routed at once, as if no
// worker were busy), waits for every answer,
// flushes the replies, and returns nil; the drain and the flush together
// take at most DrainTimeout, and end at the shutdown deadline that ctx
// ended with, if sooner. A subscription that cannot be made is an error
// returned at once.
func (s *Service) Run(ctx context.Context) error {
	subject := func(name string) string { return Subject(s.cfg.Namespace, s.cfg.Component, name) }
	markPrefill, markFree := s.handleMark(s.h.m.MarkPrefill, false), s.handleMark(s.h.m.MarkFree, true)
	eps := []endpoint{
		{subject(metrics.EndpointRoute), s.handleRoute},
		{subject(metrics.EndpointMarkPrefill), markPrefill},
		{subject(metrics.EndpointMarkFree), markFree},
		{subject(metrics.EndpointOverlapScores), s.handleOverlapScores},
		{subject(metrics.EndpointPotentialLoads), s.handlePotentialLoads},
	}
	if id := s.cfg.RouterID; id != 0 {
		// This replica's own mark subjects, for the marks of the requests
		// it booked (docs/api.md §3): in the queue group too, so that each
		// mark is handled once by one of its subscriptions.
		eps = append(eps,
			endpoint{ReplicaSubject(s.cfg.Namespace, s.cfg.Component, metrics.EndpointMarkPrefill, id), markPrefill},
			endpoint{ReplicaSubject(s.cfg.Namespace, s.cfg.Component, metrics.EndpointMarkFree, id), markFree})
	}
	var subs []*nats.Subscription
	for _, ep := range eps {
		subject := ep.subject
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
	marks := "none (no router id)"
	if s.cfg.RouterID != 0 {
		marks = ReplicaSubject(s.cfg.Namespace, s.cfg.Component, "*", s.cfg.RouterID)
	}
	s.log.Info("router service listening", "subjects", Subject(s.cfg.Namespace, s.cfg.Component, "*"),
		"queue_group", s.cfg.Component, "handlers", s.cfg.Handlers, "replica_sync", s.pub != nil,
		"replica_mark_subjects", marks)

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

// natsReply is a NATS request as the Handler's Sender: the reply goes to
// the request's reply subject. A conversion of the *nats.Msg, so that
// handing it to the Handler allocates nothing.
type natsReply nats.Msg

// Send publishes reply to the request's reply subject; the code is in the
// reply itself.
func (m *natsReply) Send(reply []byte, _ string) error { return (*nats.Msg)(m).Respond(reply) }

// handleRoute answers a route request, now or, when it waits in the
// queue, from the goroutine that releases it: a waiting request holds no
// handler goroutine.
func (s *Service) handleRoute(msg *nats.Msg) {
	s.h.submit(msg.Data, (*natsReply)(msg), &s.pending)
}

// handleMark answers mark_prefill (free false) or mark_free, on the queue
// group's subject or this replica's own. A mark to forward is forwarded
// on a goroutine that pending counts, so that Run waits for its answer.
func (s *Service) handleMark(ep *Endpoint, free bool) nats.MsgHandler {
	return func(msg *nats.Msg) {
		s.h.mark(context.Background(), ep, free, msg.Data, (*natsReply)(msg), isForwarded(msg), &s.pending)
	}
}

// handleOverlapScores answers overlap_scores.
func (s *Service) handleOverlapScores(msg *nats.Msg) { s.h.overlapScores(msg.Data, (*natsReply)(msg)) }

// handlePotentialLoads answers potential_loads.
func (s *Service) handlePotentialLoads(msg *nats.Msg) {
	s.h.potentialLoads(msg.Data, (*natsReply)(msg))
}
