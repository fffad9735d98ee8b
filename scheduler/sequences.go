package scheduler

import (
	"fmt"
	"time"

	"github.com/kvrouter/router/indexer"
)

// Sequences is the router's prediction of each rank's load: the requests
// active on it, their prefill tokens not yet computed, and the KV blocks
// they hold (dynamo-compat.md §5 "active sequences").
//
// A request is added when it is routed, with one placement per rank it
// uses (two for disaggregated serving); its prefill tokens leave the count
// when its first token is out (MarkPrefill); everything it holds goes when
// it ends (Free) or when it was never freed for the stale timeout (Expire).
// Blocks are counted by sequence hash: two requests on one rank sharing a
// prefix hold its blocks once (when assume-reuse is on).
//
// A Sequences is not safe for concurrent use: the Router holds its lock
// around every call.
type Sequences struct {
	trackBlocks, reuse bool

	// ranks and workers are indexed alike: the hot counters apart from the
	// rank's name, so that scoring a thousand candidates reads 24 bytes a
	// candidate, not 48.
	ranks    []rank
	workers  []indexer.Worker
	byWorker map[indexer.Worker]int32
	// tree holds the ranks' active blocks (assume-reuse on).
	tree     activeTree
	requests map[string]*active
	// removed holds the workers that left: worker ids are etcd lease ids,
	// never reused, so a late replica event must not bring one back.
	removed map[indexer.WorkerID]struct{}
	// order holds requests by add time, for expiry. Freed ones are dropped
	// lazily: orderDead counts them, and compact runs once they are the
	// majority, so the slice stays within twice the active requests.
	order     []*active
	orderHead int
	orderDead int
	// touched collects the ranks whose load changed since drainTouched.
	touched []int32
}

// rank is the bookkeeping of one (worker, dp_rank); its name is in
// Sequences.workers at the same index.
type rank struct {
	prefillTokens int
	blocks        int
	requests      int32
	kind          Kind
	// dead marks a rank of a worker that left; it is never scored or booked
	// again (worker ids are etcd lease ids, never reused).
	dead    bool
	touched bool
}

// active is one request being served.
type active struct {
	id          string
	added       time.Time
	prefilledAt time.Time
	isl         int
	// local says this router routed it (not a replica): only those feed the
	// request metrics.
	local     bool
	prefilled bool
	freed     bool
	places    [2]placement
	n         int
}

// placement is a request's booking on one rank.
type placement struct {
	rank int32
	kind Kind
	// prefill are the tokens still counted in the rank's prefill tokens.
	prefill int
	// node is its terminal node in the tree of active blocks (reuse on;
	// 0 if none); blocks the blocks it counts without the tree.
	node   int32
	blocks int
}

// Placement describes one booking of a request, for Add.
type Placement struct {
	Worker indexer.Worker
	Kind   Kind
	// PrefillTokens are the tokens the rank must still compute.
	PrefillTokens int
	// SeqHashes are the sequence hashes of the prompt's blocks; with
	// assume-reuse off, or when nil, NumBlocks blocks are counted instead.
	SeqHashes []uint64
	NumBlocks int
}

// RankLoad is one rank's predicted load.
type RankLoad struct {
	Worker        indexer.Worker
	Kind          Kind
	PrefillTokens int
	DecodeBlocks  int
	Requests      int
}

// NewSequences returns empty bookkeeping. trackBlocks counts active blocks
// into the decode load; reuse counts a block shared by requests of one rank
// once.
func NewSequences(trackBlocks, reuse bool) *Sequences {
	return &Sequences{
		trackBlocks: trackBlocks,
		reuse:       reuse,
		byWorker:    map[indexer.Worker]int32{},
		requests:    map[string]*active{},
		tree:        newActiveTree(),
		removed:     map[indexer.WorkerID]struct{}{},
	}
}

// rankOf returns the index of w's rank, creating it, or -1 if w's worker
// was removed.
func (s *Sequences) rankOf(w indexer.Worker, kind Kind) int32 {
	if _, gone := s.removed[w.ID]; gone {
		return -1
	}
	if i, ok := s.byWorker[w]; ok {
		r := &s.ranks[i]
		if r.dead {
			return -1
		}
		if r.kind != kind && kind != 0 {
			r.kind = kind
		}
		return i
	}
	i := int32(len(s.ranks))
	s.ranks = append(s.ranks, rank{kind: kind})
	s.workers = append(s.workers, w)
	s.byWorker[w] = i
	return i
}

// Has reports whether a request is active.
func (s *Sequences) Has(id string) bool {
	_, ok := s.requests[id]
	return ok
}

// Len returns the number of active requests.
func (s *Sequences) Len() int { return len(s.requests) }

// Add books request id with one or two placements at now. local marks a
// request this router routed. It fails if id is active or a placement's
// worker was removed; nothing is booked then.
func (s *Sequences) Add(id string, now time.Time, isl int, local bool, places ...Placement) error {
	if _, ok := s.requests[id]; ok {
		return fmt.Errorf("%w: request_id %q is already active", ErrBadRequest, id)
	}
	if len(places) == 0 || len(places) > 2 {
		return fmt.Errorf("%w: %d placements (want 1 or 2)", ErrBadRequest, len(places))
	}
	a := &active{id: id, added: now, isl: isl, local: local}
	for _, p := range places {
		r := s.rankOf(p.Worker, p.Kind)
		if r < 0 {
			return fmt.Errorf("%w: worker %d was removed", ErrNoWorkers, p.Worker.ID)
		}
		a.places[a.n] = placement{rank: r, kind: p.Kind}
		a.n++
	}
	for i, p := range places {
		s.book(&a.places[i], p)
	}
	s.requests[id] = a
	s.order = append(s.order, a)
	return nil
}

// AddPlacement adds a second placement to active request id (a replica's
// disaggregated request arrives as two adds); the prefill placement is
// kept first.
func (s *Sequences) AddPlacement(id string, p Placement) error {
	a, ok := s.requests[id]
	switch {
	case !ok:
		return fmt.Errorf("%w: request_id %q is not active", ErrBadRequest, id)
	case a.n != 1:
		return fmt.Errorf("%w: request_id %q already has its placements", ErrBadRequest, id)
	case a.prefilled && p.Kind == KindPrefill:
		// The prefill rank would be done with it already.
		return nil
	}
	r := s.rankOf(p.Worker, p.Kind)
	if r < 0 {
		return fmt.Errorf("%w: worker %d was removed", ErrNoWorkers, p.Worker.ID)
	}
	if a.prefilled {
		p.PrefillTokens = 0
	}
	pl := &a.places[1]
	*pl = placement{rank: r, kind: p.Kind}
	a.n = 2
	s.book(pl, p)
	if p.Kind == KindPrefill && a.places[0].kind != KindPrefill {
		a.places[0], a.places[1] = a.places[1], a.places[0]
	}
	if a.prefilled && a.places[0].kind == KindPrefill {
		// Marked before its decode placement arrived: the prefill rank lets
		// go now, as MarkPrefill would have made it.
		s.release(&a.places[0])
		a.places[0], a.places[1] = a.places[1], placement{}
		a.n = 1
	}
	return nil
}

// book counts placement pl, described by p, into its rank.
func (s *Sequences) book(pl *placement, p Placement) {
	rk := &s.ranks[pl.rank]
	pl.prefill = max(p.PrefillTokens, 0)
	rk.prefillTokens += pl.prefill
	rk.requests++
	if s.trackBlocks {
		if s.reuse && p.SeqHashes != nil {
			var fresh int
			pl.node, fresh = s.tree.add(p.SeqHashes, pl.rank)
			rk.blocks += fresh
		} else {
			pl.blocks = max(p.NumBlocks, 0)
			rk.blocks += pl.blocks
		}
	}
	s.touch(pl.rank)
}

// Marked tells what MarkPrefill or Free did, for metrics.
type Marked struct {
	// Local says this router routed the request.
	Local bool
	// Added and PrefilledAt are when it was routed and marked prefilled
	// (zero if never).
	Added, PrefilledAt time.Time
	ISL                int
	// Worker and Kind are the request's first placement: the prefill rank
	// of a disaggregated request.
	Worker indexer.Worker
	Kind   Kind
	// First says this call marked the request (MarkPrefill): false for a
	// repeated mark.
	First bool
}

// MarkPrefill records that request id produced its first token: its
// prefill tokens leave the count, and the prefill rank of a disaggregated
// request is done with it altogether. It returns false for an unknown id;
// a second call changes nothing.
func (s *Sequences) MarkPrefill(id string, now time.Time) (Marked, bool) {
	a, ok := s.requests[id]
	if !ok {
		return Marked{}, false
	}
	m := s.marked(a)
	if a.prefilled {
		return m, true
	}
	a.prefilled, a.prefilledAt = true, now
	m.PrefilledAt, m.First = now, true
	for i := 0; i < a.n; i++ {
		pl := &a.places[i]
		if pl.prefill != 0 {
			s.ranks[pl.rank].prefillTokens -= pl.prefill
			pl.prefill = 0
			s.touch(pl.rank)
		}
	}
	if a.n == 2 && a.places[0].kind == KindPrefill {
		// The prefill worker handed the KV blocks to the decode worker.
		s.release(&a.places[0])
		a.places[0] = a.places[1]
		a.places[1] = placement{}
		a.n = 1
	}
	return m, true
}

// Free ends request id, dropping everything it holds. It returns false for
// an unknown id.
func (s *Sequences) Free(id string) (Marked, bool) {
	a, ok := s.requests[id]
	if !ok {
		return Marked{}, false
	}
	m := s.marked(a)
	s.drop(a)
	return m, true
}

func (s *Sequences) marked(a *active) Marked {
	r := a.places[0].rank
	return Marked{Local: a.local, Added: a.added, PrefilledAt: a.prefilledAt, ISL: a.isl, Worker: s.workers[r], Kind: a.places[0].kind}
}

// drop frees a request's placements and forgets it.
func (s *Sequences) drop(a *active) {
	for i := 0; i < a.n; i++ {
		s.release(&a.places[i])
	}
	a.n = 0
	s.forget(a)
}

// forget marks a request freed and drops it from the index of requests;
// its entry in order goes at the next compaction or expiry.
func (s *Sequences) forget(a *active) {
	a.freed = true
	delete(s.requests, a.id)
	s.orderDead++
	if live := len(s.order) - s.orderHead; s.orderDead > 1024 && s.orderDead*2 > live {
		s.compact()
	}
}

// compact removes freed requests from order.
func (s *Sequences) compact() {
	kept := s.order[:0]
	for _, a := range s.order[s.orderHead:] {
		if !a.freed {
			kept = append(kept, a)
		}
	}
	clear(s.order[len(kept):])
	s.order, s.orderHead, s.orderDead = kept, 0, 0
}

// release returns what one placement holds to its rank.
func (s *Sequences) release(pl *placement) {
	rk := &s.ranks[pl.rank]
	rk.prefillTokens -= pl.prefill
	rk.requests--
	if pl.node != 0 {
		rk.blocks -= s.tree.release(pl.node, pl.rank)
	}
	rk.blocks -= pl.blocks
	*pl = placement{rank: pl.rank}
	s.touch(pl.rank)
}

// Expire frees every request added at or before now − timeout and not
// freed since, and returns how many it freed.
func (s *Sequences) Expire(now time.Time, timeout time.Duration) int {
	n := 0
	cutoff := now.Add(-timeout)
	for s.orderHead < len(s.order) {
		a := s.order[s.orderHead]
		if !a.freed && a.added.After(cutoff) {
			break
		}
		if !a.freed {
			s.drop(a)
			n++
		}
		if s.orderHead < len(s.order) && s.order[s.orderHead] == a {
			// drop did not compact under us: pop the entry.
			s.order[s.orderHead] = nil
			s.orderHead++
			s.orderDead--
		}
	}
	if s.orderHead > 1024 && s.orderHead*2 > len(s.order) {
		s.compact()
	}
	return n
}

// RemoveWorker forgets every rank of worker id and drops the placements on
// them; the worker is never booked again. Requests left with no placement
// are forgotten. It returns the ranks removed.
func (s *Sequences) RemoveWorker(id indexer.WorkerID) []indexer.Worker {
	var gone []indexer.Worker
	for i := range s.ranks {
		r := &s.ranks[i]
		if s.workers[i].ID == id && !r.dead {
			r.dead = true
			gone = append(gone, s.workers[i])
		}
	}
	s.removed[id] = struct{}{}
	if len(gone) == 0 {
		return nil
	}
	for _, a := range s.requests {
		kept := 0
		for i := 0; i < a.n; i++ {
			if s.ranks[a.places[i].rank].dead {
				s.release(&a.places[i])
				continue
			}
			a.places[kept] = a.places[i]
			kept++
		}
		a.n = kept
		if kept == 0 {
			s.forget(a)
		}
	}
	for _, w := range gone {
		s.ranks[s.byWorker[w]] = rank{dead: true}
	}
	return gone
}

// Load returns the load of w's rank, and false if the rank is unknown or
// removed.
func (s *Sequences) Load(w indexer.Worker) (RankLoad, bool) {
	i, ok := s.byWorker[w]
	if !ok || s.ranks[i].dead {
		return RankLoad{}, false
	}
	return s.load(i), true
}

// load returns the load of rank i.
func (s *Sequences) load(i int32) RankLoad {
	r := &s.ranks[i]
	return RankLoad{Worker: s.workers[i], Kind: r.kind, PrefillTokens: r.prefillTokens, DecodeBlocks: r.blocks, Requests: int(r.requests)}
}

// Loads returns the load of every live rank, in no particular order.
func (s *Sequences) Loads() []RankLoad {
	out := make([]RankLoad, 0, len(s.ranks))
	for i := range s.ranks {
		if !s.ranks[i].dead {
			out = append(out, s.load(int32(i)))
		}
	}
	return out
}

// activePrefix sets prefix[posOf[r]] to the number of leading seqHashes
// active on rank r, for every rank r that has the first one active and a
// position in posOf (−1 means none), and appends each position it sets to
// touched the first time.
//
// It walks the prompt down the tree of active blocks. Every placement
// through a node passes through its parent, so the ranks holding a node are
// a subset of those holding its parent, and a subset of the same size is
// the same set. So the walk only visits a node's ranks when the next
// node's set is smaller (some ranks stop there) or at the end: a prefix
// active on every rank (a shared system prompt) costs one visit of those
// ranks, not one per node.
func (s *Sequences) activePrefix(seqHashes []uint64, posOf []int32, prefix []uint32, touched []int32) []int32 {
	if !s.trackBlocks || !s.reuse {
		return touched
	}
	t := &s.tree
	assign := func(node int32, n uint32) {
		set := func(r int32) {
			if int(r) < len(posOf) && posOf[r] >= 0 {
				p := posOf[r]
				if prefix[p] == 0 {
					touched = append(touched, p)
				}
				prefix[p] = n
			}
		}
		set(t.nodes[node].holders.first.rank)
		for _, ref := range t.others(node) {
			set(ref.rank)
		}
	}
	prev := int32(0) // the last node matched, 0 before the first
	cur, i := int32(0), 0
	for i < len(seqHashes) {
		c := t.children.get(cur, seqHashes[i])
		if c == 0 {
			break
		}
		if prev != 0 && t.size(c) != t.size(prev) {
			assign(prev, uint32(i)) // prev's ranks hold i hashes at least
		}
		m := commonPrefix(t.nodes[c].hashes, seqHashes[i:])
		prev, i = c, i+m
		if m < len(t.nodes[c].hashes) {
			break // the prompt leaves the tree mid-node
		}
		cur = c
	}
	if prev != 0 {
		assign(prev, uint32(i))
	}
	return touched
}

// newBlocks returns how many of a prompt's numBlocks blocks would be new on
// a rank that has activePrefix of them active.
func (s *Sequences) newBlocks(numBlocks int, activePrefix uint32) int {
	if !s.trackBlocks {
		return 0
	}
	return max(numBlocks-int(activePrefix), 0)
}

// touch records that rank r's load changed.
func (s *Sequences) touch(r int32) {
	if rk := &s.ranks[r]; !rk.touched {
		rk.touched = true
		s.touched = append(s.touched, r)
	}
}

// drainTouched calls fn with the index of every live rank changed since
// the last call, and forgets them.
func (s *Sequences) drainTouched(fn func(r int32)) {
	for _, r := range s.touched {
		rk := &s.ranks[r]
		rk.touched = false
		if !rk.dead {
			fn(r)
		}
	}
	s.touched = s.touched[:0]
}
