package scheduler

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kvrouter/router/indexer"
	"github.com/kvrouter/router/metrics"
	"github.com/kvrouter/router/overhead"
)

// MaxPriorityJump bounds a request's priority_jump, in seconds: a day is
// more than any queue will ever hold.
const MaxPriorityJump = 86400

// Options are the Router's collaborators besides its configuration.
type Options struct {
	// Rand drives tie breaks, softmax sampling, random mode and generated
	// request ids. Nil seeds one from the runtime's entropy; tests pass a
	// seeded one. The Router uses it under its lock only.
	Rand *rand.Rand
	// Log receives the router's few logs; nil discards them.
	Log *slog.Logger
}

// Router routes requests: for each it hashes the prompt, asks the index
// which ranks hold its leading blocks, scores the eligible ranks, chooses
// one, and books the request in its bookkeeping (Sequences), or parks the
// request in the threshold queue while every eligible rank is busy. It
// also serves MarkPrefill and Free, the read-only OverlapScores and
// PotentialLoads, and the replica-sync events of its peers.
//
// All methods are safe for concurrent use. See the package documentation
// for its lock and goroutines.
type Router struct {
	cfg    Config
	fleet  Fleet
	idx    Index
	m      *metrics.Router
	log    *slog.Logger
	approx *approx
	pool   sync.Pool // *scratch

	idPrefix string
	idSeq    atomic.Uint64
	pub      atomic.Pointer[publisher]
	// thresholds says a busy threshold is configured.
	thresholds bool

	// mu guards everything below. Lock order: mu, then the index's lock
	// (FindMatches while releasing the queue), then a Publisher's.
	mu     sync.Mutex
	seqs   *Sequences
	queue  *Queue // nil when the queue is off
	views  [numKinds]*view
	gauges []rankGauges // by rank index
	rng    *rand.Rand
	rr     uint64
	closed bool
	marks  pendingMarks
}

// publisher boxes a Publisher for the atomic pointer.
type publisher struct{ p Publisher }

// scratch holds one decision's buffers; pooled so that a decision
// allocates nothing once the pool is warm.
type scratch struct {
	locals, seqHashes []uint64
	query             []indexer.LocalHash
	matches           []indexer.Match
	overlap, prefix   []uint32
	sparse, elig      []int32
	ties, markedTies  []int32
	mark              []bool
	costs, finite     []float64
	bits              []uint64
	weights           []float64
	allowed           []indexer.WorkerID
}

// marks returns mark resized to n with exactly the sparse positions set.
func (s *scratch) marks(n int, sparse []int32) []bool {
	if cap(s.mark) < n {
		s.mark = make([]bool, n)
	}
	clear(s.mark[:cap(s.mark)])
	s.mark = s.mark[:n]
	for _, i := range sparse {
		s.mark[i] = true
	}
	return s.mark
}

// prompt is what a decision knows of a request's prompt.
type prompt struct {
	locals, seqHashes []uint64
	matches           []indexer.Match
	numBlocks, isl    int
}

// New returns a Router. fleet, idx and m are required. It starts nothing:
// Run runs its maintenance.
func New(cfg Config, fleet Fleet, idx Index, m *metrics.Router, opts Options) (*Router, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("scheduler: %w", err)
	}
	if fleet == nil || idx == nil || m == nil {
		return nil, errors.New("scheduler: nil fleet, index or metrics")
	}
	rng := opts.Rand
	if rng == nil {
		rng = rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))
	}
	log := opts.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	r := &Router{
		cfg: cfg, fleet: fleet, idx: idx, m: m, log: log, rng: rng,
		seqs:     NewSequences(cfg.TrackActiveBlocks, cfg.AssumeKVReuse),
		idPrefix: strconv.FormatUint(rng.Uint64()>>16, 36) + "-",
		marks:    newPendingMarks(),
	}
	r.pool.New = func() any { return &scratch{} }
	r.thresholds = cfg.ActiveDecodeBlocksThreshold != nil || cfg.ActivePrefillTokensThreshold != nil ||
		cfg.ActivePrefillTokensThresholdFrac != nil
	if cfg.QueueThreshold != nil {
		r.queue = NewQueue(cfg.QueuePolicy, cfg.QueueCapacity, cfg.QueueAgingLimit, time.Now())
	}
	if !cfg.UseKVEvents && cfg.Mode == ModeKV {
		r.approx = newApprox(idx, m, cfg.TTL, cfg.ApproxMaxEntries)
	}
	return r, nil
}

// Config returns the router's configuration.
func (r *Router) Config() Config { return r.cfg }

// SetPublisher makes the router share its bookkeeping changes through p
// (replica sync); nil stops sharing. Set it before routing starts.
func (r *Router) SetPublisher(p Publisher) {
	if p == nil {
		r.pub.Store(nil)
		return
	}
	r.pub.Store(&publisher{p: p})
}

// publishLocked shares one change, if a publisher is set; mu is held.
func (r *Router) publishLocked(ev SyncEvent) {
	if b := r.pub.Load(); b != nil {
		b.p.Publish(ev)
	}
}

// Route routes req and returns the decision, waiting in the queue while
// every eligible rank is busy. When ctx ends first, the request leaves the
// queue and Route returns ctx's error. req must not change until Route
// returns.
func (r *Router) Route(ctx context.Context, req *Request) (Decision, error) {
	d, w, err := r.route(req, nil)
	if w == nil {
		return d, err
	}
	select {
	case res := <-w.ch:
		return res.d, res.err
	case <-ctx.Done():
		if r.cancel(w) {
			return Decision{}, ctx.Err()
		}
		res := <-w.ch // decided meanwhile
		return res.d, res.err
	}
}

// Submit routes req and calls done exactly once with the decision: before
// Submit returns when no wait is needed, else later from the goroutine
// that releases the request (a MarkPrefill, Free or maintenance pass) or
// from its queue timer. done must not block for long. req must not change
// until done is called.
func (r *Router) Submit(req *Request, done func(Decision, error)) {
	d, w, err := r.route(req, done)
	if w == nil {
		done(d, err)
	}
}

// route decides req, or parks it and returns its waiter.
func (r *Router) route(req *Request, done func(Decision, error)) (Decision, *waiter, error) {
	if err := r.check(req); err != nil {
		return Decision{}, nil, err
	}
	s := r.pool.Get().(*scratch)
	defer r.pool.Put(s)
	kv := r.cfg.Mode == ModeKV
	var t overhead.Timer
	if kv {
		t = overhead.Start()
	}
	p := r.prepare(req, s, &t, kv)
	s.allowed = sortedIDs(s.allowed, req.AllowedWorkerIDs)
	now := time.Now()

	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return Decision{}, nil, ErrClosed
	}
	if !req.QueryOnly && req.ID != "" && r.seqs.Has(req.ID) {
		r.mu.Unlock()
		return Decision{}, nil, fmt.Errorf("%w: request_id %q is already active", ErrBadRequest, req.ID)
	}
	d, wait, err := r.attemptLocked(req, s, &p, now, !req.QueryOnly)
	var w *waiter
	if wait {
		w, err = r.enqueueLocked(req, &p, now, done)
	}
	r.mu.Unlock()

	if err != nil {
		return Decision{}, nil, err
	}
	if kv {
		r.m.ObserveOverhead(t.Done())
	}
	if w != nil {
		return Decision{}, w, nil
	}
	if !req.QueryOnly && r.approx != nil {
		r.approx.store(d.Worker, p.locals, p.seqHashes, now)
	}
	return d, nil, nil
}

// check rejects a request the wire decoder should have rejected; it
// guards in-process callers.
func (r *Router) check(req *Request) error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: "+format, append([]any{ErrBadRequest}, args...)...)
	}
	switch {
	case req.Tokens != nil && req.BlockHashes != nil:
		return bad("token_ids and block_hashes are exclusive")
	case len(req.Tokens) > MaxTokens:
		return bad("token_ids: %d tokens (allowed ≤ %d)", len(req.Tokens), MaxTokens)
	case len(req.BlockHashes) > MaxTokens/r.cfg.BlockSize:
		return bad("block_hashes: %d blocks of %d tokens (allowed ≤ %d tokens)", len(req.BlockHashes), r.cfg.BlockSize, MaxTokens)
	case req.ISL < 0 || req.ISL > MaxTokens:
		return bad("isl: %d is out of range (allowed 0..%d)", req.ISL, MaxTokens)
	case !(req.PriorityJump >= 0 && req.PriorityJump <= MaxPriorityJump):
		return bad("priority_jump: %v is out of range (allowed 0..%d seconds)", req.PriorityJump, MaxPriorityJump)
	case req.Type > WorkerTypeDisaggregated:
		return bad("worker_type: %v is unknown", req.Type)
	}
	if o := req.Override; o != nil {
		for _, f := range []struct {
			name   string
			v      *float64
			lo, hi float64
		}{
			{"overlap_score_weight", o.OverlapScoreWeight, 0, maxWeight},
			{"overlap_score_credit", o.OverlapScoreCredit, 0, 1},
			{"prefill_load_scale", o.PrefillLoadScale, 0, maxWeight},
			{"router_temperature", o.Temperature, 0, maxWeight},
		} {
			if f.v != nil && !(*f.v >= f.lo && *f.v <= f.hi) {
				return bad("router_config_override.%s: %v is out of range (allowed %v..%v)", f.name, *f.v, f.lo, f.hi)
			}
		}
	}
	return nil
}

// prepare measures the prompt and, when lookup is set, hashes it and looks
// it up in the index, marking the timer's phases. The prompt's slices are
// s's.
func (r *Router) prepare(req *Request, s *scratch, t *overhead.Timer, lookup bool) prompt {
	bs := r.cfg.BlockSize
	p := prompt{isl: req.ISL}
	if req.BlockHashes != nil {
		p.numBlocks = len(req.BlockHashes)
		if p.isl == 0 {
			p.isl = p.numBlocks * bs
		}
	} else {
		p.numBlocks = len(req.Tokens) / bs
		if p.isl == 0 {
			p.isl = len(req.Tokens)
		}
	}
	if !lookup {
		return p
	}
	s.locals = s.locals[:0]
	if req.BlockHashes != nil {
		for _, h := range req.BlockHashes {
			s.locals = append(s.locals, uint64(h))
		}
	} else {
		s.locals = localHashes(s.locals, req.Tokens, bs, req.LoRAName)
	}
	t.BlockHashed()
	s.seqHashes = sequenceHashes(s.seqHashes[:0], s.locals)
	t.SeqHashed()
	r.match(s, s.locals)
	t.Matched()
	p.locals, p.seqHashes, p.matches = s.locals, s.seqHashes, s.matches
	return p
}

// match looks locals up in the index into s.matches.
func (r *Router) match(s *scratch, locals []uint64) {
	s.query = s.query[:0]
	for _, l := range locals {
		s.query = append(s.query, indexer.LocalHash(l))
	}
	s.matches = r.idx.FindMatches(s.query, false, s.matches)
}

// sortedIDs copies ids into dst, sorted, or returns nil for nil ids.
func sortedIDs(dst, ids []indexer.WorkerID) []indexer.WorkerID {
	if ids == nil {
		return nil
	}
	dst = append(dst[:0], ids...)
	slices.Sort(dst)
	if dst == nil {
		dst = []indexer.WorkerID{} // an empty, non-nil filter allows nobody
	}
	return dst
}

// plan is how a request's worker type resolves against the fleet.
type plan struct {
	typ WorkerType
	// kind is the kind of the first (or only) choice, the one the queue
	// waits for; byLoad says it is chosen by load only.
	kind   Kind
	byLoad bool
	disagg bool
}

// resolve decides what a worker type means with the current fleet.
func (r *Router) resolve(t WorkerType) plan {
	switch t {
	case WorkerTypeAuto, WorkerTypeDisaggregated:
		if len(r.fleet.Candidates(KindPrefill)) > 0 {
			return plan{typ: WorkerTypeDisaggregated, kind: KindPrefill, disagg: true}
		}
		return plan{typ: WorkerTypeAggregated, kind: KindDecode}
	case WorkerTypePrefill:
		return plan{typ: t, kind: KindPrefill}
	case WorkerTypeDecode:
		return plan{typ: t, kind: KindDecode, byLoad: true}
	}
	return plan{typ: WorkerTypeAggregated, kind: KindDecode}
}

// attemptLocked tries to decide req now. It books the decision unless the
// request is query-only, and reports wait when every eligible rank is busy
// and the request may wait. mu is held.
func (r *Router) attemptLocked(req *Request, s *scratch, p *prompt, now time.Time, canWait bool) (Decision, bool, error) {
	cp := r.cfg.params(req.Override)
	pl := r.resolve(req.Type)
	first, busy, err := r.chooseLocked(s, p, pl.kind, pl.byLoad, cp, false)
	if err != nil {
		return Decision{}, false, err
	}
	if busy {
		if canWait {
			return Decision{}, true, nil
		}
		// A query-only request never waits: it gets the best rank as if
		// none were busy.
		if first, _, err = r.chooseLocked(s, p, pl.kind, pl.byLoad, cp, true); err != nil {
			return Decision{}, false, err
		}
	}
	d := Decision{Choice: first, NumBlocks: p.numBlocks, Type: pl.typ}
	places := [2]Placement{{
		Worker: first.Worker, Kind: pl.kind, SeqHashes: p.seqHashes, NumBlocks: p.numBlocks,
	}}
	if !pl.byLoad {
		places[0].PrefillTokens = prefillTokens(p.isl, first.OverlapBlocks, r.cfg.BlockSize)
	}
	n := 1
	if pl.disagg {
		// The decode rank: by load only, and the queue does not gate it
		// (its prefill tokens are always 0).
		second, _, err := r.chooseLocked(s, p, KindDecode, true, cp, true)
		if err != nil {
			return Decision{}, false, err
		}
		d.Prefill, d.Decode = first, second
		places[1] = Placement{Worker: second.Worker, Kind: KindDecode, SeqHashes: p.seqHashes, NumBlocks: p.numBlocks}
		n = 2
	}
	if req.QueryOnly {
		d.RequestID = req.ID
		return d, false, nil
	}
	id := req.ID
	if id == "" {
		id = r.idPrefix + strconv.FormatUint(r.idSeq.Add(1), 10)
	}
	if err := r.seqs.Add(id, now, p.isl, true, places[:n]...); err != nil {
		return Decision{}, false, err
	}
	d.RequestID = id
	for i := range n {
		pc := &places[i]
		r.publishLocked(SyncEvent{
			Kind: SyncAdd, RequestID: id, Worker: pc.Worker, SeqHashes: pc.SeqHashes,
			ISL: p.isl, Overlap: d.overlapOf(i), TrackPrefill: !pl.byLoad && i == 0,
		})
	}
	r.seqs.Expire(now, r.cfg.StaleTimeout)
	r.syncLocked()
	r.m.RequestsTotal.Inc()
	r.m.InputSequenceTokens.Observe(float64(p.isl))
	if r.cfg.Mode == ModeKV {
		rate := 0.0
		if p.numBlocks > 0 {
			rate = float64(first.OverlapBlocks) / float64(p.numBlocks)
		}
		r.m.KVHitRate.Observe(rate)
	}
	return d, false, nil
}

// overlapOf returns the overlap of a decision's i-th placement.
func (d *Decision) overlapOf(i int) int {
	if i == 0 {
		return d.OverlapBlocks
	}
	return d.Decode.OverlapBlocks
}

// syncLocked copies the load of every rank changed since the last call
// into the views and the per-worker gauges. Every change of the
// bookkeeping is followed by it before mu is released, so views and gauges
// never lag. Running under mu also orders the gauges with RemoveWorker: a
// removed worker's series, once deleted by the registry, are never written
// again.
func (r *Router) syncLocked() {
	r.seqs.drainTouched(func(ri int32) {
		rk := &r.seqs.ranks[ri]
		for _, v := range r.views {
			if v != nil && int(ri) < len(v.posOf) && v.posOf[ri] >= 0 {
				v.set(v.posOf[ri], rk)
			}
		}
		g := r.gaugesLocked(ri, rk.kind)
		g.blocks.Set(float64(rk.blocks))
		g.prefill.Set(float64(rk.prefillTokens))
	})
}

// rankGauges are a rank's two load gauges
// (dynamo_frontend_worker_active_decode_blocks and
// ..._active_prefill_tokens), looked up once: metrics.Router.SetWorkerLoad
// formats and hashes the labels at every call, a microsecond and two
// allocations twice per request.
type rankGauges struct {
	kind            Kind
	blocks, prefill prometheus.Gauge
}

// gaugesLocked returns rank ri's gauges, looking them up on first use or
// when the rank's kind (a label) changed. The cache is dropped whenever the
// fleet changes (see viewLocked), because the worker registry deletes a
// changed worker's series. mu is held.
func (r *Router) gaugesLocked(ri int32, kind Kind) *rankGauges {
	if int(ri) >= len(r.gauges) {
		r.gauges = append(r.gauges, make([]rankGauges, int(ri)+1-len(r.gauges))...)
	}
	g := &r.gauges[ri]
	if g.blocks == nil || g.kind != kind {
		w := r.seqs.workers[ri]
		labels := prometheus.Labels{
			metrics.LabelWorkerID:   strconv.FormatUint(uint64(w.ID), 10),
			metrics.LabelDPRank:     strconv.FormatUint(uint64(w.DPRank), 10),
			metrics.LabelWorkerType: kind.String(),
		}
		*g = rankGauges{kind: kind, blocks: r.m.WorkerActiveDecodeBlocks.With(labels), prefill: r.m.WorkerActivePrefillTokens.With(labels)}
	}
	return g
}

// RemoveWorker forgets every rank of worker id: its bookkeeping and, in
// approximate mode, its entries. The worker registry calls it (through the
// index remover it is given) when a worker leaves; the worker is never
// chosen or booked again.
func (r *Router) RemoveWorker(id indexer.WorkerID) {
	r.mu.Lock()
	r.seqs.RemoveWorker(id)
	r.seqs.drainTouched(func(int32) {}) // the registry deletes the series
	r.views = [numKinds]*view{}         // rebuilt without the worker's ranks
	r.mu.Unlock()
	if r.approx != nil {
		r.approx.removeWorker(id)
	}
}

// Load returns a rank's predicted load, and false for a rank the router
// never booked or that was removed.
func (r *Router) Load(w indexer.Worker) (RankLoad, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.seqs.Load(w)
}

// Loads returns the predicted load of every rank the router knows (every
// candidate it has scored, and every rank it booked), in no order.
func (r *Router) Loads() []RankLoad {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.seqs.Loads()
}

// Active returns the number of requests booked and not freed.
func (r *Router) Active() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.seqs.Len()
}

// Disaggregated reports whether prefill workers are registered, which is
// when worker_type auto means disaggregated.
func (r *Router) Disaggregated() bool { return len(r.fleet.Candidates(KindPrefill)) > 0 }
