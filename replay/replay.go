package replay

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/kvrouter/router/client"
	"github.com/kvrouter/router/sim"
)

// Config says how to replay a workload.
type Config struct {
	// Namespace, RouterComponent and WorkerComponent place the router and
	// the workers (their generate subjects) in Dynamo's layout.
	Namespace, RouterComponent, WorkerComponent string
	// Mode labels the run with the router's --router-mode (kv,
	// round-robin, random); the replay cannot change the router's mode.
	Mode string
	// Lockstep replays in simulated time that moves only between
	// requests (Options.Stepper), deterministically; otherwise arrivals
	// follow the wall clock, Speedup simulated seconds a second.
	Lockstep bool
	// Speedup is the ratio of simulated to wall time in real-time mode; it
	// must be the workers' own.
	Speedup float64
	// RouterTimeout bounds each call to the router.
	RouterTimeout time.Duration
	// RouteRetry sends a route again, with the same request id, when an
	// attempt got no reply within it (client.WithRouteRetry): how a replay
	// rides out a router replica killed mid-load. 0 sends each route once.
	RouteRetry time.Duration
	// GenerateTimeout bounds the wait for a worker to accept a request
	// (lockstep) and, in real-time mode, the wait for the last requests to
	// finish after the last arrival, in wall time.
	GenerateTimeout time.Duration
	// ProgressInterval is how often a progress line is written (wall
	// time); 0 turns progress off.
	ProgressInterval time.Duration
}

// DefaultConfig returns Dynamo's default names, lockstep off, speed-up 1,
// and a progress line a second.
func DefaultConfig() Config {
	return Config{
		Namespace: "dynamo", RouterComponent: "router", WorkerComponent: "backend",
		Mode: "kv", Speedup: 1,
		RouterTimeout: 10 * time.Second, GenerateTimeout: 10 * time.Minute,
		ProgressInterval: time.Second,
	}
}

// Validate reports every field out of range, naming its flag.
func (c Config) Validate() error {
	var errs []error
	if c.Namespace == "" || c.RouterComponent == "" || c.WorkerComponent == "" {
		errs = append(errs, errors.New("--namespace, --router-component and --component must not be empty"))
	}
	if c.Mode == "" {
		errs = append(errs, errors.New("--mode: must name the router's mode"))
	}
	if !c.Lockstep && !(c.Speedup >= 0.01 && c.Speedup <= 1e4) {
		errs = append(errs, fmt.Errorf("--speedup: %g is outside 0.01..10000", c.Speedup))
	}
	if c.RouterTimeout <= 0 || c.GenerateTimeout <= 0 {
		errs = append(errs, errors.New("--router-timeout and --generate-timeout must be positive"))
	}
	if c.RouteRetry < 0 || c.RouteRetry > c.RouterTimeout {
		errs = append(errs, fmt.Errorf("--route-retry: %v is outside 0..--router-timeout (%v)", c.RouteRetry, c.RouterTimeout))
	}
	if c.ProgressInterval < 0 {
		errs = append(errs, fmt.Errorf("--progress-interval: %v is negative", c.ProgressInterval))
	}
	return errors.Join(errs...)
}

// Stepper moves the simulated time of a lockstep fleet (sim.Fleet).
// AdvanceTo completes every step due by t and returns what the fleet has
// published; Published reads the counts at any time. The replay calls them
// from one goroutine.
type Stepper interface {
	AdvanceTo(ctx context.Context, t time.Duration) (sim.Published, error)
	Published() sim.Published
}

var _ Stepper = (*sim.Fleet)(nil)

// Options are the replay's collaborators besides its configuration.
type Options struct {
	// Stepper drives simulated time; required in lockstep mode.
	Stepper Stepper
	// Barrier makes the router catch up with the fleet's KV events before
	// each decision; lockstep mode without one is not deterministic.
	Barrier Barrier
	// WorkerIndex maps worker ids to positions for the report (optional).
	WorkerIndex map[uint64]int
	// Progress receives the progress lines (nil: none).
	Progress io.Writer
	// Log receives warnings; nil discards them.
	Log *slog.Logger
}

// ErrGenerate is wrapped by the errors of a request that a worker refused.
var ErrGenerate = errors.New("generate failed")

// Replayer replays one workload against a router and simulated workers,
// acting as the frontend: for each request it asks the router for a worker
// (route), sends the prompt to that worker (the generate protocol of
// package sim), tells the router of the first token (mark_prefill) and of
// the end (mark_free), and records what happened.
//
// Run owns the replay's goroutines: the NATS handler of the reply inbox
// (which sends the marks, in the order the replies come) and the progress
// writer.
type Replayer struct {
	cfg    Config
	opts   Options
	nc     *nats.Conn
	wl     *Workload
	router *client.Client
	log    *slog.Logger

	inbox string
	clock *sim.WallClock // real-time mode

	notices counter // first_token and done replies handled

	mu       sync.Mutex
	records  []Record
	flights  map[string]*flight
	sent     int
	finished int // done or failed
	ttfts    []float64
	errs     int
}

// flight is a request between route and its last reply.
type flight struct {
	index int
	// req is the router's booking, marked and freed through its handle.
	req      *client.Request
	accepted chan GenerateOutcome
}

// GenerateOutcome is the first answer of a worker to a generate request.
type GenerateOutcome struct {
	Err error
}

// New prepares a replay; it starts nothing.
func New(cfg Config, nc *nats.Conn, wl *Workload, opts Options) (*Replayer, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if wl == nil || len(wl.Requests) == 0 {
		return nil, ErrEmptyWorkload
	}
	if cfg.Lockstep && opts.Stepper == nil {
		return nil, errors.New("replay: lockstep needs a stepper (an in-process fleet)")
	}
	log := opts.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	router, err := client.New(nc, client.WithNamespace(cfg.Namespace), client.WithRouterComponent(cfg.RouterComponent),
		client.WithTimeout(cfg.RouterTimeout), client.WithRouteRetry(cfg.RouteRetry))
	if err != nil {
		return nil, fmt.Errorf("replay: %w", err)
	}
	return &Replayer{
		cfg: cfg, opts: opts, nc: nc, wl: wl, log: log,
		router:  router,
		flights: make(map[string]*flight),
		records: make([]Record, len(wl.Requests)),
		notices: newCounter(),
	}, nil
}

// Run replays the workload and returns what happened. A request that fails
// is recorded as failed; Run itself fails only when the replay cannot go
// on (the router or NATS unreachable, ctx ended, a barrier timed out).
func (r *Replayer) Run(ctx context.Context) (*Result, error) {
	r.inbox = r.nc.NewInbox()
	sub, err := r.nc.Subscribe(r.inbox+".*", r.onReply)
	if err != nil {
		return nil, fmt.Errorf("replay: subscribe to replies: %w", err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := sub.SetPendingLimits(-1, 1<<30); err != nil {
		return nil, fmt.Errorf("replay: pending limits: %w", err)
	}
	if err := r.nc.Flush(); err != nil {
		return nil, fmt.Errorf("replay: flush: %w", err)
	}
	for i, q := range r.wl.Requests {
		r.records[i] = Record{Index: i, Arrival: q.Arrival, InputLength: q.InputLength, WorkerIndex: -1}
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	if r.cfg.ProgressInterval > 0 && r.opts.Progress != nil {
		wg.Go(func() { r.progress(ctx) })
	}
	wallStart := time.Now()
	if r.cfg.Lockstep {
		err = r.runLockstep(ctx)
	} else {
		err = r.runRealTime(ctx)
	}
	cancel()
	wg.Wait()
	if err != nil {
		return nil, err
	}
	// Wait for the handler to finish with the last reply.
	if err := sub.Unsubscribe(); err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
		return nil, fmt.Errorf("replay: unsubscribe: %w", err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	res := &Result{
		Mode: r.cfg.Mode, Workload: r.wl.Name, Lockstep: r.cfg.Lockstep,
		Records: slices.Clone(r.records), Wall: time.Since(wallStart),
	}
	if r.cfg.ProgressInterval > 0 && r.opts.Progress != nil {
		r.writeProgressLocked(time.Since(wallStart))
	}
	return res, nil
}

// runLockstep replays in simulated time: before each arrival the fleet
// completes every step due, the replay handles every reply those steps
// produced (marks included), and the router takes in every KV event; only
// then is the request routed and submitted, at its arrival time.
func (r *Replayer) runLockstep(ctx context.Context) error {
	st := r.opts.Stepper
	sync := func(t time.Duration) error {
		pub, err := st.AdvanceTo(ctx, t)
		if err != nil {
			return err
		}
		if err := r.notices.wait(ctx, pub.Notices, r.cfg.GenerateTimeout); err != nil {
			return fmt.Errorf("replay: waiting for %d worker replies at %v: %w", pub.Notices, t, err)
		}
		if r.opts.Barrier != nil {
			if err := r.opts.Barrier.Wait(ctx, st.Published().Events); err != nil {
				return fmt.Errorf("replay at %v: %w", t, err)
			}
		}
		return nil
	}
	for i := range r.wl.Requests {
		q := &r.wl.Requests[i]
		if err := sync(q.Arrival); err != nil {
			return err
		}
		if err := r.dispatch(ctx, q, true); err != nil {
			return err
		}
	}
	// Let the fleet run on until every request is finished.
	t := r.wl.Requests[len(r.wl.Requests)-1].Arrival
	for !r.allFinished() {
		t += time.Second
		if err := sync(t); err != nil {
			return err
		}
	}
	return nil
}

// runRealTime replays on the wall clock, Speedup simulated seconds a second.
func (r *Replayer) runRealTime(ctx context.Context) error {
	r.clock = sim.NewWallClock(r.cfg.Speedup)
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	var inflight sync.WaitGroup
	defer inflight.Wait()
	for i := range r.wl.Requests {
		q := &r.wl.Requests[i]
		if d := r.clock.WallUntil(q.Arrival); d > 0 {
			timer.Reset(d)
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-timer.C:
			}
		}
		// Each request is routed on its own goroutine, so that a slow or
		// lost route answer delays no later arrival.
		inflight.Go(func() {
			if err := r.dispatch(ctx, q, false); err != nil && ctx.Err() == nil {
				r.log.Warn("replay: dispatch", "request", q.Index, "err", err)
			}
		})
	}
	inflight.Wait()
	deadline := time.Now().Add(r.cfg.GenerateTimeout)
	for !r.allFinished() {
		if time.Now().After(deadline) {
			r.mu.Lock()
			left := len(r.flights)
			r.mu.Unlock()
			r.log.Warn("replay: requests still unfinished at the deadline", "requests", left, "timeout", r.cfg.GenerateTimeout)
			return nil
		}
		timer.Reset(10 * time.Millisecond)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-timer.C:
		}
	}
	return nil
}

func (r *Replayer) allFinished() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.finished == len(r.wl.Requests)
}

// requestID names request i; ids are the same on every run.
func requestID(i int) string { return "req-" + strconv.Itoa(i) }

// dispatch routes one request and sends it to the chosen worker; with wait
// it also waits until the worker has queued it. A routing failure is
// recorded against the request; only an unreachable router stops the
// replay.
func (r *Replayer) dispatch(ctx context.Context, q *Request, wait bool) error {
	id := requestID(q.Index)
	tokens := r.wl.Tokens(q, make([]uint32, 0, q.InputLength))
	t0 := time.Now()
	req, err := r.router.Route(ctx, client.RouteRequest{RequestID: id, Prompt: client.Prompt{TokenIDs: tokens}})
	rtt := time.Since(t0)
	r.mu.Lock()
	r.sent++
	rec := &r.records[q.Index]
	rec.RouteRTT = rtt
	if err != nil {
		var rerr *client.Error
		// In lockstep a router that does not answer stops the replay; in
		// real time it is what a fault replay measures, so it is counted
		// and the replay goes on.
		if !errors.As(err, &rerr) && r.cfg.Lockstep {
			r.mu.Unlock()
			return fmt.Errorf("replay: request %d: %w", q.Index, err)
		}
		r.failLocked(q.Index, err)
		r.mu.Unlock()
		return nil
	}
	ch := req.Decision()
	workerID := uint64(ch.WorkerID)
	rec.WorkerID, rec.OverlapBlocks, rec.RouterBlocks = workerID, ch.OverlapBlocks, ch.NumBlocks
	if i, ok := r.opts.WorkerIndex[workerID]; ok {
		rec.WorkerIndex = i
	}
	f := &flight{index: q.Index, req: req, accepted: make(chan GenerateOutcome, 1)}
	r.flights[id] = f
	r.mu.Unlock()

	body, err := json.Marshal(sim.GenerateRequest{RequestID: id, TokenIDs: tokens, MaxTokens: q.OutputLength})
	if err != nil {
		return err
	}
	subject := sim.GenerateSubject(r.cfg.Namespace, r.cfg.WorkerComponent, workerID)
	if err := r.nc.PublishRequest(subject, r.inbox+"."+strconv.Itoa(q.Index), body); err != nil {
		if r.cfg.Lockstep {
			return fmt.Errorf("replay: request %d: publish generate: %w", q.Index, err)
		}
		r.mu.Lock()
		delete(r.flights, id)
		r.failLocked(q.Index, fmt.Errorf("%w: %v", errPublish, err))
		r.mu.Unlock()
		r.free(req, 0)
		return nil
	}
	if !wait {
		return nil
	}
	select {
	case out := <-f.accepted:
		_ = out // a refusal is already recorded by the handler
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(r.cfg.GenerateTimeout):
		return fmt.Errorf("replay: request %d: worker %x did not answer within %v (is it running in lockstep?)",
			q.Index, workerID, r.cfg.GenerateTimeout)
	}
}

// failLocked records a failed request. r.mu is held.
func (r *Replayer) failLocked(i int, err error) {
	rec := &r.records[i]
	if rec.Err == "" {
		rec.Err = err.Error()
		rec.Reason = failureReason(err)
		r.errs++
		r.finished++
	}
}

// The kinds of failure a replay counts (Record.Reason, Summary.FailedBy),
// besides "route_" and the router's error code (docs/api.md §3).
const (
	// ReasonNoRouter: no router answered on the route subject.
	ReasonNoRouter = "no_router"
	// ReasonRouteTimeout: the route call got no answer in time.
	ReasonRouteTimeout = "route_timeout"
	// ReasonRouteTransport: the route call failed in NATS otherwise, or
	// its answer could not be read.
	ReasonRouteTransport = "route_transport"
	// ReasonWorkerRefused: the chosen worker refused the request.
	ReasonWorkerRefused = "worker_refused"
	// ReasonPublish: the request could not be sent to the chosen worker.
	ReasonPublish = "publish"
	// ReasonUnfinished: neither finished nor failed when the replay ended.
	ReasonUnfinished = "unfinished"
)

// failureReason names the kind of a failure.
func failureReason(err error) string {
	var rerr *client.Error
	switch {
	case errors.As(err, &rerr):
		return "route_" + string(rerr.Code)
	case errors.Is(err, ErrGenerate):
		return ReasonWorkerRefused
	case errors.Is(err, errPublish):
		return ReasonPublish
	case errors.Is(err, nats.ErrNoResponders):
		return ReasonNoRouter
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, nats.ErrTimeout):
		return ReasonRouteTimeout
	}
	return ReasonRouteTransport
}

// errPublish marks a failure to send a request to its worker.
var errPublish = errors.New("publish generate")

// onReply handles one message of a worker's reply stream (NATS callback:
// one goroutine, in arrival order).
func (r *Replayer) onReply(msg *nats.Msg) {
	var rep sim.GenerateReply
	if err := json.Unmarshal(msg.Data, &rep); err != nil {
		r.log.Warn("replay: malformed generate reply", "subject", msg.Subject, "err", err)
		return
	}
	id := rep.RequestID
	if id == "" { // an error before the worker could read the id
		if i := lastToken(msg.Subject); i >= 0 && i < len(r.records) {
			id = requestID(i)
		}
	}
	r.mu.Lock()
	f, ok := r.flights[id]
	if !ok {
		r.mu.Unlock()
		return
	}
	rec := &r.records[f.index]
	arrival := r.wl.Requests[f.index].Arrival
	now := r.now(arrival)
	switch rep.Event {
	case sim.ReplyAccepted:
		r.mu.Unlock()
		f.accepted <- GenerateOutcome{}
		return
	case sim.ReplyError:
		msg := "worker refused the request"
		if rep.Error != nil {
			msg = rep.Error.Code + ": " + rep.Error.Message
		}
		r.failLocked(f.index, fmt.Errorf("%w: %s", ErrGenerate, msg))
		delete(r.flights, id)
		r.mu.Unlock()
		// Free the router's booking before the replay goes on: in lockstep
		// the next decision must see it gone.
		r.free(f.req, 0)
		f.accepted <- GenerateOutcome{Err: errors.New(msg)}
		return
	case sim.ReplyFirstToken:
		rec.TTFT = now(rep.FirstTokenAt)
		rec.PromptBlocks, rec.CachedBlocks = rep.PromptBlocks, rep.CachedBlocks
		r.ttfts = append(r.ttfts, rec.TTFT.Seconds())
		r.mu.Unlock()
		if err := f.req.Prefilled(context.Background()); err != nil {
			r.log.Warn("replay: mark_prefill", "request_id", id, "err", err)
		}
	case sim.ReplyDone:
		rec.E2E = now(rep.DoneAt)
		rec.OutputTokens = rep.OutputTokens
		rec.PromptBlocks, rec.CachedBlocks = rep.PromptBlocks, rep.CachedBlocks
		if rep.OutputTokens > 1 {
			rec.ITL = time.Duration((rep.DoneAt - rep.FirstTokenAt) / float64(rep.OutputTokens-1) * float64(time.Second))
		}
		rec.Done = true
		r.finished++
		delete(r.flights, id)
		r.mu.Unlock()
		r.free(f.req, rep.OutputTokens)
	default:
		r.mu.Unlock()
		return
	}
	r.notices.add()
}

// free ends a request at the router (mark_free).
func (r *Replayer) free(req *client.Request, outputTokens int) {
	if err := req.Done(context.Background(), outputTokens); err != nil {
		r.log.Warn("replay: mark_free", "request_id", req.ID(), "err", err)
	}
}

// now returns how to turn a worker's time of an event into the time since
// arrival: in lockstep the worker's clock is the replay's; in real time the
// replay reads its own clock when the reply comes.
func (r *Replayer) now(arrival time.Duration) func(workerAt float64) time.Duration {
	if r.cfg.Lockstep {
		return func(at float64) time.Duration {
			return time.Duration(math.Round(at*float64(time.Second))) - arrival
		}
	}
	t := r.clock.Now() - arrival
	return func(float64) time.Duration { return t }
}

func lastToken(subject string) int {
	for i := len(subject) - 1; i >= 0; i-- {
		if subject[i] == '.' {
			n, err := strconv.Atoi(subject[i+1:])
			if err != nil {
				return -1
			}
			return n
		}
	}
	return -1
}

// counter counts handled replies and lets one wait for a count.
type counter struct {
	mu sync.Mutex
	n  uint64
	ch chan struct{}
}

func newCounter() counter { return counter{ch: make(chan struct{})} }

func (c *counter) add() {
	c.mu.Lock()
	c.n++
	close(c.ch)
	c.ch = make(chan struct{})
	c.mu.Unlock()
}

func (c *counter) wait(ctx context.Context, target uint64, timeout time.Duration) error {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		c.mu.Lock()
		n, ch := c.n, c.ch
		c.mu.Unlock()
		if n >= target {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		case <-timer.C:
			return fmt.Errorf("only %d of them within %v", n, timeout)
		}
	}
}
