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
	"github.com/kvrouter/router/scheduler/active"
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
	// Publisher, with replica sync, receives every change of the
	// bookkeeping, in order, under the Router's lock (the service's
	// SyncPublisher carries them to the other replicas); nil shares
	// nothing.
	Publisher Publisher
}

// Router routes requests: for each it hashes the prompt, asks the index
// which ranks hold its leading blocks, scores the eligible ranks, chooses
// one, and books the request in its bookkeeping (active.Sequences), or
// parks the request in the threshold queue while every eligible rank is
// busy. It also serves MarkPrefill and Free, the read-only OverlapScores
// and PotentialLoads, and the replica-sync events of its peers. The ranks
// it may choose are pushed to it (SetCandidates).
//
// All methods are safe for concurrent use. See the package documentation
// for its lock and goroutines.
type Router struct {
	cfg    Config
	idx    Index
	m      *Metrics
	log    *slog.Logger
	approx *approx
	pool   sync.Pool // *scratch

	idPrefix string
	idSeq    atomic.Uint64
	pub      Publisher // nil: nothing shared
	// tiers are the credits of cached blocks below the device.
	tiers tierWeights
	// thresholds says a busy threshold is configured.
	thresholds bool
	// disagg says there are prefill candidates (Disaggregated), for
	// readers that do not take mu.
	disagg atomic.Bool

	// mu guards everything below. Lock order (docs/locks.md): the
	// caller's of SetCandidates, then mu, then the index's read lock
	// (FindMatches while releasing the queue), then a Publisher's.
	mu    sync.Mutex
	seqs  *active.Sequences
	queue *Queue // nil when the queue is off
	// cands are the candidates of each kind, as last pushed; views their
	// derived data (nil for a kind without candidates).
	cands [numKinds][]Candidate
	views [numKinds]*view
	// kinds and gauges are indexed by rank slot (active.Sequences).
	kinds  []Kind
	gauges []rankGauges
	rng    *rand.Rand
	rr     uint64
	closed bool // Close was called: nothing waits any more
	marks  pendingMarks
}

// scratch holds one decision's buffers; pooled so that a decision
// allocates nothing once the pool is warm.
type scratch struct {
	locals, seqHashes []uint64
	query             []indexer.LocalHash
	matches           []indexer.Match
	overlap, prefix   []uint32
	shares            []tierShare
	byPos             []indexer.Match
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

// New returns a Router with no candidates (see SetCandidates), counting in
// its families (Metrics), which it builds from m. idx and m are required;
// w is required in approximate mode (cfg.UseKVEvents false with a mode that
// reads the index: kv, llmd-precise-prefix, dynamo-current),
// where the router indexes its own decisions through it, and unused
// otherwise (it may be nil). It starts nothing: Run runs its maintenance.
func New(cfg Config, idx Index, w IndexWriter, m *metrics.Router, opts Options) (*Router, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("scheduler: %w", err)
	}
	if idx == nil || m == nil {
		return nil, errors.New("scheduler: nil index or metrics")
	}
	approximate := !cfg.UseKVEvents && cfg.Mode.usesIndex()
	if approximate && w == nil {
		return nil, errors.New("scheduler: approximate mode (--no-router-kv-events) needs an index writer, and none was given")
	}
	rng := opts.Rand
	if rng == nil {
		rng = rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))
	}
	log := opts.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	sm, err := NewMetrics(m)
	if err != nil {
		return nil, fmt.Errorf("scheduler: %w", err)
	}
	r := &Router{
		cfg: cfg, idx: idx, m: sm, log: log, rng: rng, pub: opts.Publisher,
		seqs:     active.New(cfg.TrackActiveBlocks, cfg.AssumeKVReuse),
		idPrefix: strconv.FormatUint(rng.Uint64()>>16, 36) + "-",
		marks:    newPendingMarks(),
	}
	r.pool.New = func() any { return &scratch{} }
	r.tiers = tierWeights{host: cfg.HostCacheHitWeight, disk: cfg.DiskCacheHitWeight}
	r.thresholds = cfg.ActiveDecodeBlocksThreshold != nil || cfg.ActivePrefillTokensThreshold != nil ||
		cfg.ActivePrefillTokensThresholdFrac != nil
	if cfg.QueueThreshold != nil {
		r.queue = NewQueue(cfg.QueuePolicy, cfg.QueueCapacity, cfg.QueueAgingLimit, time.Now())
	}
	if approximate {
		r.approx = newApprox(w, cfg.TTL, cfg.ApproxMaxEntries)
	}
	return r, nil
}

// Config returns the router's configuration.
func (r *Router) Config() Config { return r.cfg }

// publishLocked shares one change, if a publisher is set; mu is held.
func (r *Router) publishLocked(ev SyncEvent) {
	if r.pub != nil {
		r.pub.Publish(ev)
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
	lookup := r.cfg.Mode.usesIndex()
	var t overhead.Timer
	if lookup {
		t = overhead.Start()
	}
	p := r.prepare(req, s, &t, lookup)
	s.allowed = sortedIDs(s.allowed, req.AllowedWorkerIDs)
	now := time.Now()

	r.mu.Lock()
	// A closed router queues nothing (Close): a request that finds every
	// rank busy goes to the best one at once.
	d, wait, err := r.attemptLocked(req, s, &p, now, !req.QueryOnly && !r.closed)
	var w *waiter
	if wait {
		w, err = r.enqueueLocked(req, &p, now, done)
	}
	r.mu.Unlock()

	if err != nil {
		return Decision{}, nil, err
	}
	if lookup {
		r.m.Route.Observe(t.Done())
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
			{"overlap_score_credit", o.OverlapScoreCredit, 0, r.cfg.Mode.maxCredit()},
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
		if len(r.cands[KindPrefill]) > 0 {
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
	if r.activeLocked(req) {
		d, err := r.bookedLocked(req, p)
		return d, false, err
	}
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
	d := Decision{Choice: first.Choice, NumBlocks: p.numBlocks, Type: pl.typ}
	places := [2]active.Placement{{
		Worker: first.Worker, Prefill: pl.kind == KindPrefill, SeqHashes: p.seqHashes, NumBlocks: p.numBlocks,
		Overlap: first.OverlapBlocks,
	}}
	if !pl.byLoad {
		places[0].PrefillTokens = creditedPrefillTokens(p.isl, first.cached, r.cfg.BlockSize)
	}
	n := 1
	if pl.disagg {
		// The decode rank: by load only, and the queue does not gate it
		// (its prefill tokens are always 0).
		second, _, err := r.chooseLocked(s, p, KindDecode, true, cp, true)
		if err != nil {
			return Decision{}, false, err
		}
		d.Prefill, d.Decode = first.Choice, second.Choice
		places[1] = active.Placement{Worker: second.Worker, SeqHashes: p.seqHashes, NumBlocks: p.numBlocks, Overlap: second.OverlapBlocks}
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
		// Cannot happen: the choices are candidates, and every candidate
		// has a rank.
		return Decision{}, false, fmt.Errorf("%w: %w", ErrNoWorkers, err)
	}
	d.RequestID = id
	for i := range n {
		pc := &places[i]
		r.publishLocked(SyncEvent{
			Kind: SyncAdd, RequestID: id, Worker: pc.Worker, SeqHashes: pc.SeqHashes,
			ISL: p.isl, Overlap: d.overlapOf(i), TrackPrefill: !pl.byLoad && i == 0,
		})
	}
	r.expireLocked(now)
	r.syncLocked()
	r.m.RequestsTotal.Inc()
	r.m.InputSequenceTokens.Observe(float64(p.isl))
	if r.cfg.Mode.usesIndex() {
		rate := 0.0
		if p.numBlocks > 0 {
			rate = float64(first.OverlapBlocks) / float64(p.numBlocks)
		}
		r.m.KVHitRate.Observe(rate)
	}
	return d, false, nil
}

// bookedLocked answers a request whose id is active already. A retry
// (Request.Retry) gets the decision of the booking it finds, which books
// nothing: request_id, the booked rank as the worker, with the overlap it
// had when booked, num_blocks of the retry's prompt, and, for a booking
// on two ranks, both halves as a disaggregated decision. The booking does
// not record the decision's serving mode: a booking on one rank is a
// prefill decision on a prefill rank, a decode decision when the retry
// asks for decode, and aggregated otherwise, which is also what a
// disaggregated booking already marked prefilled (its prefill rank let go)
// is answered as. Anything else is a bad request. mu is held.
func (r *Router) bookedLocked(req *Request, p *prompt) (Decision, error) {
	if !req.Retry {
		return Decision{}, fmt.Errorf("%w: request_id %q is already active", ErrBadRequest, req.ID)
	}
	places, n := r.seqs.Booking(req.ID)
	first := Choice{Worker: places[0].Worker, OverlapBlocks: places[0].Overlap}
	d := Decision{RequestID: req.ID, Choice: first, NumBlocks: p.numBlocks, Type: WorkerTypeAggregated}
	switch {
	case n == 2:
		d.Type, d.Prefill = WorkerTypeDisaggregated, first
		d.Decode = Choice{Worker: places[1].Worker, OverlapBlocks: places[1].Overlap}
	case places[0].Prefill:
		d.Type = WorkerTypePrefill
	case req.Type == WorkerTypeDecode:
		d.Type = WorkerTypeDecode
	}
	r.log.Debug("route retry answered from its booking", "request_id", req.ID, "worker_id", first.Worker.ID, "dp_rank", first.Worker.DPRank)
	return d, nil
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
// never lag. Running under mu also orders the gauges with SetCandidates,
// which deletes a departed rank's series under mu: they are never written
// again.
func (r *Router) syncLocked() {
	r.seqs.DrainTouched(func(ri int32) {
		l := r.seqs.Load(ri)
		for _, v := range r.views {
			if v != nil && int(ri) < len(v.posOf) && v.posOf[ri] >= 0 {
				v.setLoad(v.posOf[ri], l.PrefillTokens, l.Blocks)
			}
		}
		g := r.gaugesLocked(ri)
		g.blocks.Set(float64(l.Blocks))
		g.prefill.Set(float64(l.PrefillTokens))
	})
}

// expireLocked frees the requests past the prefill or the stale timeout,
// and counts them. mu is held.
func (r *Router) expireLocked(now time.Time) active.Expired {
	e := r.seqs.Expire(now, r.cfg.PrefillTimeout, r.cfg.StaleTimeout)
	if e.NoPrefill > 0 {
		r.m.BookingsExpired.WithLabelValues(metrics.ExpiredNoPrefill).Add(float64(e.NoPrefill))
	}
	if e.Stale > 0 {
		r.m.BookingsExpired.WithLabelValues(metrics.ExpiredStale).Add(float64(e.Stale))
	}
	return e
}

// rankGauges are a rank's per-worker gauges (dynamo_frontend_worker_*),
// looked up once: a lookup formats and hashes the labels, a microsecond and
// two allocations, too much for every request. The load gauges are looked
// up with the rank's first load; the last-request gauges with their first
// value (lastGauge), so that each series appears when it has one, as in
// Dynamo.
type rankGauges struct {
	values          []string // worker_id, dp_rank, worker_type
	blocks, prefill prometheus.Gauge
	ttft, isl, itl  prometheus.Gauge
}

// lastGauge returns *g, looking it up in vec first if it is nil.
func (rg *rankGauges) lastGauge(g *prometheus.Gauge, vec *prometheus.GaugeVec) prometheus.Gauge {
	if *g == nil {
		*g = vec.WithLabelValues(rg.values...)
	}
	return *g
}

// gaugesLocked returns the gauges of the rank in slot ri, looking them up
// on first use; dropGaugesLocked deletes them. Every write of a per-worker
// series goes through here, under mu, so a series deleted by
// dropGaugesLocked is never re-created for a rank that left. mu is held.
func (r *Router) gaugesLocked(ri int32) *rankGauges {
	if int(ri) >= len(r.gauges) {
		r.gauges = append(r.gauges, make([]rankGauges, int(ri)+1-len(r.gauges))...)
	}
	g := &r.gauges[ri]
	if g.values == nil {
		v := r.rankSeriesLocked(ri).Values()
		*g = rankGauges{
			values:  v,
			blocks:  r.m.WorkerActiveDecodeBlocks.WithLabelValues(v...),
			prefill: r.m.WorkerActivePrefillTokens.WithLabelValues(v...),
		}
	}
	return g
}

// rankSeriesLocked names the per-worker series of the rank in slot ri.
// mu is held.
func (r *Router) rankSeriesLocked(ri int32) metrics.Worker {
	w := r.seqs.Worker(ri)
	return metrics.Worker{ID: uint64(w.ID), DPRank: uint32(w.DPRank), Type: r.kinds[ri].String()}
}

// dropGaugesLocked deletes the per-worker series of the rank in slot ri,
// before the rank leaves the slot or changes type, and forgets its cached
// gauges. mu is held.
func (r *Router) dropGaugesLocked(ri int32) {
	if int(ri) < len(r.kinds) {
		r.m.DeleteRank(r.rankSeriesLocked(ri))
	}
	if int(ri) < len(r.gauges) {
		r.gauges[ri] = rankGauges{}
	}
}

// SetCandidates replaces the workers the router may choose and book: the
// decode (and aggregated) ranks and the prefill ranks, each in the order
// the router considers them (ties are broken by position, so a stable
// order keeps decisions reproducible). The worker registry, the one owner
// of worker lifecycle, calls it, in order, every time its set of workers
// changes; it may hold its own lock meanwhile (SetCandidates takes only the
// Router's, briefly, and never calls back). The slices are the Router's
// afterwards: the caller must not modify them.
//
// A rank absent from the new set is forgotten at once: its bookings are
// released (a request left with no placement is forgotten, not shared
// with replicas: each replica's registry removes the rank from its own
// router), its memory freed, its slot reused by the next new rank. Nothing
// is remembered of it: a rank that returns starts with zero load and is
// routable at once; a late replica event naming a departed rank is
// ignored. Its dynamo_frontend_worker_* series, which the Router owns, are
// deleted here, under the Router's lock, and so are those of a rank whose
// kind changed: the Router writes no series of a rank that is not a
// candidate, so none is re-created.
//
// Approximate-mode entries of a departed rank are not dropped: they
// expire with their TTL like any other, which also removes from the index
// any store of the rank that raced with its departure.
//
// Until the first call there are no candidates (ErrNoWorkers).
func (r *Router) SetCandidates(decode, prefill []Candidate) {
	next := make(map[indexer.Worker]struct{}, len(decode)+len(prefill))
	for _, c := range decode {
		next[c.Worker] = struct{}{}
	}
	for _, c := range prefill {
		next[c.Worker] = struct{}{}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	var gone []int32
	r.seqs.EachRank(func(slot int32, w indexer.Worker) {
		if _, ok := next[w]; !ok {
			gone = append(gone, slot)
		}
	})
	// The Router owns its per-worker series: a departed rank's go with
	// it, under mu, so nothing writes them again.
	for _, slot := range gone {
		r.dropGaugesLocked(slot)
	}
	if n := r.seqs.RemoveRanks(gone); n > 0 {
		r.log.Info("requests forgotten with their workers", "requests", n, "ranks", len(gone))
	}
	// Ranks in candidate order, decode first, so that slots are assigned
	// reproducibly.
	for k, cands := range [numKinds][]Candidate{KindDecode: decode, KindPrefill: prefill} {
		for _, c := range cands {
			if slot, ok := r.seqs.Rank(c.Worker); ok && r.kinds[slot] != Kind(k) {
				r.dropGaugesLocked(slot) // its worker_type label changes
			}
			slot := r.seqs.AddRank(c.Worker)
			if int(slot) >= len(r.kinds) {
				r.kinds = append(r.kinds, make([]Kind, int(slot)+1-len(r.kinds))...)
			}
			r.kinds[slot] = Kind(k)
		}
	}
	r.cands = [numKinds][]Candidate{KindDecode: decode, KindPrefill: prefill}
	cp := r.cfg.params(nil)
	vs := viewScales{perToken: cp.scale / float64(r.cfg.BlockSize), satPerToken: cp.sat.scale / float64(r.cfg.BlockSize),
		saturated: cp.sat.on(), minPrefill: cp.sat.prefillTokens > 0}
	for k, cands := range r.cands {
		r.views[k] = nil
		if len(cands) > 0 {
			r.views[k] = newView(r.seqs, cands, vs)
		}
	}
	r.disagg.Store(len(prefill) > 0)
	// Export every candidate's load afresh at the next change: new ranks
	// and ranks whose type changed have no series yet.
	r.seqs.EachRank(func(slot int32, _ indexer.Worker) { r.seqs.Touch(slot) })
}

// RankLoad is one rank's predicted load.
type RankLoad struct {
	Worker        indexer.Worker
	Kind          Kind
	PrefillTokens int
	DecodeBlocks  int
	Requests      int
}

// rankLoadLocked returns the load of the rank in slot ri. mu is held.
func (r *Router) rankLoadLocked(ri int32) RankLoad {
	l := r.seqs.Load(ri)
	return RankLoad{Worker: r.seqs.Worker(ri), Kind: r.kinds[ri], PrefillTokens: l.PrefillTokens, DecodeBlocks: l.Blocks, Requests: l.Requests}
}

// Load returns a rank's predicted load, and false for a rank that is not
// a candidate.
func (r *Router) Load(w indexer.Worker) (RankLoad, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	ri, ok := r.seqs.Rank(w)
	if !ok {
		return RankLoad{}, false
	}
	return r.rankLoadLocked(ri), true
}

// Loads returns the predicted load of every candidate rank, in no order.
func (r *Router) Loads() []RankLoad {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]RankLoad, 0, r.seqs.Ranks())
	r.seqs.EachRank(func(slot int32, _ indexer.Worker) { out = append(out, r.rankLoadLocked(slot)) })
	return out
}

// Active returns the number of requests booked and not freed.
func (r *Router) Active() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.seqs.Len()
}

// Disaggregated reports whether prefill workers are candidates, which is
// when worker_type auto means disaggregated.
func (r *Router) Disaggregated() bool { return r.disagg.Load() }
