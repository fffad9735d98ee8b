package active

import (
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/kvrouter/router/indexer"
)

// Errors of Add and AddPlacement.
var (
	// ErrExists means the request id is already active.
	ErrExists = errors.New("request already active")
	// ErrNotActive means the request id is not active.
	ErrNotActive = errors.New("request not active")
	// ErrUnknownRank means a placement names a rank that is not in the
	// bookkeeping (never added, or removed).
	ErrUnknownRank = errors.New("unknown rank")
	// ErrPlacements means a request was given other than one or two
	// placements.
	ErrPlacements = errors.New("bad placements")
)

// Sequences is the router's prediction of each rank's load: the requests
// active on it, their prefill tokens not yet computed, and the KV blocks
// they hold (docs/compat.md §5 "active sequences").
//
// Ranks are added and removed by their owner (AddRank, RemoveRanks); each
// lives in a slot, a small integer that indexes the owner's own per-rank
// arrays, and a removed rank's slot is reused by the next rank added. A
// request is added when it is routed, with one placement per rank it uses
// (two for disaggregated serving); its prefill tokens leave the count when
// its first token is out (MarkPrefill); everything it holds goes when it
// ends (Free), when its ranks are removed, or when it expires (Expire).
// Blocks are counted by sequence hash: two requests on one rank sharing a
// prefix hold its blocks once (when reuse is on).
//
// A Sequences is not safe for concurrent use: its owner locks around every
// call.
type Sequences struct {
	trackBlocks, reuse bool

	// ranks and workers are indexed by slot: the hot counters apart from
	// the rank's name, so that reading a thousand loads reads 24 bytes a
	// rank, not 48.
	ranks    []rank
	workers  []indexer.Worker
	byWorker map[indexer.Worker]int32
	// free holds the slots of removed ranks, for reuse.
	free []int32
	// tree holds the ranks' active blocks (reuse on).
	tree     activeTree
	requests map[string]*request
	// order holds every request by add time, for the stale timeout;
	// unprefilled those not marked prefilled when added, for the prefill
	// timeout. Both drop their dead entries lazily (see fifo).
	order, unprefilled fifo
	// touched collects the slots whose load changed since DrainTouched.
	touched []int32
}

// rank is the bookkeeping of one (worker, dp_rank); its name is in
// Sequences.workers at the same slot.
type rank struct {
	prefillTokens int
	blocks        int
	requests      int32
	// live is false for a free slot (and, during RemoveRanks, for a rank
	// being removed).
	live    bool
	touched bool
}

// request is one request being served.
type request struct {
	id          string
	added       time.Time
	prefilledAt time.Time
	isl         int
	// local says this router routed it (not a replica).
	local     bool
	prefilled bool
	freed     bool
	// inUnprefilled says its entry in Sequences.unprefilled was not popped.
	inUnprefilled bool
	places        [2]placement
	n             int
}

// placement is a request's booking on one rank.
type placement struct {
	rank    int32
	prefill bool // on a prefill worker of disaggregated serving
	// tokens are the prefill tokens still counted in the rank's load.
	tokens int
	// node is its terminal node in the tree of active blocks (reuse on;
	// 0 if none); blocks the blocks it counts without the tree.
	node   int32
	blocks int
	// overlap is Placement.Overlap, kept for Booking.
	overlap int32
}

// Placement describes one booking of a request, for Add.
type Placement struct {
	Worker indexer.Worker
	// Prefill says the rank is the prefill worker of a disaggregated
	// request: it is done with the request at its first token.
	Prefill bool
	// PrefillTokens are the tokens the rank must still compute.
	PrefillTokens int
	// SeqHashes are the sequence hashes of the prompt's blocks; with
	// reuse off, or when nil, NumBlocks blocks are counted instead.
	SeqHashes []uint64
	NumBlocks int
	// Overlap is the number of the prompt's leading blocks the rank held
	// when the request was booked. It is not counted in any load: it is
	// kept so that Booking can describe the placement.
	Overlap int
}

// Booked describes one placement of an active request (Booking).
type Booked struct {
	Worker indexer.Worker
	// Prefill and Overlap are the placement's, as given to Add.
	Prefill bool
	Overlap int
}

// Load is one rank's predicted load.
type Load struct {
	PrefillTokens int
	Blocks        int
	Requests      int
}

// New returns empty bookkeeping. trackBlocks counts active blocks into the
// load; reuse counts a block shared by requests of one rank once.
func New(trackBlocks, reuse bool) *Sequences {
	return &Sequences{
		trackBlocks: trackBlocks,
		reuse:       reuse,
		byWorker:    map[indexer.Worker]int32{},
		requests:    map[string]*request{},
		tree:        newActiveTree(),
	}
}

// TracksBlocks reports whether active blocks count into the load.
func (s *Sequences) TracksBlocks() bool { return s.trackBlocks }

// AddRank adds w's rank, with no load, and returns its slot; an existing
// rank keeps its slot and load.
func (s *Sequences) AddRank(w indexer.Worker) int32 {
	if i, ok := s.byWorker[w]; ok {
		return i
	}
	var i int32
	if n := len(s.free); n > 0 {
		i, s.free = s.free[n-1], s.free[:n-1]
		s.workers[i] = w
	} else {
		i = int32(len(s.ranks))
		s.ranks = append(s.ranks, rank{})
		s.workers = append(s.workers, w)
	}
	s.ranks[i].live = true
	s.byWorker[w] = i
	return i
}

// Rank returns w's slot, and false if w has no rank.
func (s *Sequences) Rank(w indexer.Worker) (int32, bool) {
	i, ok := s.byWorker[w]
	return i, ok
}

// Worker returns the rank in slot i.
func (s *Sequences) Worker(i int32) indexer.Worker { return s.workers[i] }

// Slots returns one more than the highest slot ever used: the length of
// arrays indexed by slot.
func (s *Sequences) Slots() int { return len(s.ranks) }

// Ranks returns the number of ranks.
func (s *Sequences) Ranks() int { return len(s.byWorker) }

// EachRank calls fn with the slot and name of every rank.
func (s *Sequences) EachRank(fn func(slot int32, w indexer.Worker)) {
	for i := range s.ranks {
		if s.ranks[i].live {
			fn(int32(i), s.workers[i])
		}
	}
}

// RemoveRanks removes the ranks in slots: their placements are released
// (a request left with none is forgotten), their slots freed for reuse.
// It returns the number of requests forgotten. It scans the active
// requests once, however many ranks go.
func (s *Sequences) RemoveRanks(slots []int32) int {
	if len(slots) == 0 {
		return 0
	}
	for _, i := range slots {
		s.ranks[i].live = false
	}
	n := 0
	for _, a := range s.requests {
		kept := 0
		for i := 0; i < a.n; i++ {
			if !s.ranks[a.places[i].rank].live {
				s.release(&a.places[i])
				continue
			}
			a.places[kept] = a.places[i]
			kept++
		}
		for i := kept; i < a.n; i++ {
			a.places[i] = placement{}
		}
		a.n = kept
		if kept == 0 {
			s.forget(a)
			n++
		}
	}
	for _, i := range slots {
		delete(s.byWorker, s.workers[i])
		s.workers[i] = indexer.Worker{}
		// touched stays: the slot may still be in s.touched, which
		// DrainTouched skips while the slot is free.
		s.ranks[i] = rank{touched: s.ranks[i].touched}
		s.free = append(s.free, i)
	}
	s.tidy()
	return n
}

// Has reports whether a request is active.
func (s *Sequences) Has(id string) bool {
	_, ok := s.requests[id]
	return ok
}

// Booking returns the placements of active request id, the prefill rank
// of a disaggregated request first, and n, how many there are (1 or 2); n
// is 0 for a request that is not active. A disaggregated request marked
// prefilled has only its decode placement left.
func (s *Sequences) Booking(id string) (places [2]Booked, n int) {
	a, ok := s.requests[id]
	if !ok {
		return places, 0
	}
	for i := 0; i < a.n; i++ {
		pl := &a.places[i]
		places[i] = Booked{Worker: s.workers[pl.rank], Prefill: pl.prefill, Overlap: int(pl.overlap)}
	}
	return places, a.n
}

// clampOverlap fits an overlap in a placement's int32; a prompt has at
// most a few million blocks.
func clampOverlap(n int) int32 { return int32(min(max(n, 0), math.MaxInt32)) }

// Len returns the number of active requests.
func (s *Sequences) Len() int { return len(s.requests) }

// Add books request id with one or two placements at now. local marks a
// request this router routed. It fails, booking nothing, if id is active
// (ErrExists) or a placement's rank is unknown (ErrUnknownRank).
func (s *Sequences) Add(id string, now time.Time, isl int, local bool, places ...Placement) error {
	if _, ok := s.requests[id]; ok {
		return fmt.Errorf("%w: request_id %q", ErrExists, id)
	}
	if len(places) == 0 || len(places) > 2 {
		return fmt.Errorf("%w: %d placements (want 1 or 2)", ErrPlacements, len(places))
	}
	a := &request{id: id, added: now, isl: isl, local: local, inUnprefilled: true}
	for _, p := range places {
		r, ok := s.byWorker[p.Worker]
		if !ok {
			return fmt.Errorf("%w: worker %d dp_rank %d", ErrUnknownRank, p.Worker.ID, p.Worker.DPRank)
		}
		a.places[a.n] = placement{rank: r, prefill: p.Prefill, overlap: clampOverlap(p.Overlap)}
		a.n++
	}
	for i, p := range places {
		s.book(&a.places[i], p)
	}
	s.requests[id] = a
	s.order.push(a)
	s.unprefilled.push(a)
	return nil
}

// AddPlacement adds a second placement to active request id (a replica's
// disaggregated request arrives as two adds); the prefill placement is
// kept first.
func (s *Sequences) AddPlacement(id string, p Placement) error {
	a, ok := s.requests[id]
	switch {
	case !ok:
		return fmt.Errorf("%w: request_id %q", ErrNotActive, id)
	case a.n != 1:
		return fmt.Errorf("%w: request_id %q already has its placements", ErrPlacements, id)
	case a.prefilled && p.Prefill:
		// The prefill rank would be done with it already.
		return nil
	}
	r, ok := s.byWorker[p.Worker]
	if !ok {
		return fmt.Errorf("%w: worker %d dp_rank %d", ErrUnknownRank, p.Worker.ID, p.Worker.DPRank)
	}
	if a.prefilled {
		p.PrefillTokens = 0
	}
	pl := &a.places[1]
	*pl = placement{rank: r, prefill: p.Prefill, overlap: clampOverlap(p.Overlap)}
	a.n = 2
	s.book(pl, p)
	if p.Prefill && !a.places[0].prefill {
		a.places[0], a.places[1] = a.places[1], a.places[0]
	}
	if a.prefilled && a.places[0].prefill {
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
	pl.tokens = max(p.PrefillTokens, 0)
	rk.prefillTokens += pl.tokens
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
	s.Touch(pl.rank)
}

// Marked tells what MarkPrefill or Free did, for metrics.
type Marked struct {
	// Local says this router routed the request.
	Local bool
	// Added and PrefilledAt are when it was routed and marked prefilled
	// (zero if never).
	Added, PrefilledAt time.Time
	ISL                int
	// Worker and Prefill are the request's first placement: the prefill
	// rank of a disaggregated request.
	Worker  indexer.Worker
	Prefill bool
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
	if a.inUnprefilled {
		s.unprefilled.dead++
	}
	m.PrefilledAt, m.First = now, true
	for i := 0; i < a.n; i++ {
		pl := &a.places[i]
		if pl.tokens != 0 {
			s.ranks[pl.rank].prefillTokens -= pl.tokens
			pl.tokens = 0
			s.Touch(pl.rank)
		}
	}
	if a.n == 2 && a.places[0].prefill {
		// The prefill worker handed the KV blocks to the decode worker.
		s.release(&a.places[0])
		a.places[0] = a.places[1]
		a.places[1] = placement{}
		a.n = 1
	}
	s.tidy()
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
	s.tidy()
	return m, true
}

func (s *Sequences) marked(a *request) Marked {
	p := &a.places[0]
	return Marked{Local: a.local, Added: a.added, PrefilledAt: a.prefilledAt, ISL: a.isl, Worker: s.workers[p.rank], Prefill: p.prefill}
}

// drop frees a request's placements and forgets it.
func (s *Sequences) drop(a *request) {
	for i := 0; i < a.n; i++ {
		s.release(&a.places[i])
	}
	a.n = 0
	s.forget(a)
}

// forget marks a request freed and drops it from the index of requests;
// its entries in the order lists go when popped or compacted.
func (s *Sequences) forget(a *request) {
	a.freed = true
	delete(s.requests, a.id)
	s.order.dead++
	if a.inUnprefilled && !a.prefilled {
		s.unprefilled.dead++
	}
}

// release returns what one placement holds to its rank.
func (s *Sequences) release(pl *placement) {
	rk := &s.ranks[pl.rank]
	rk.prefillTokens -= pl.tokens
	rk.requests--
	if pl.node != 0 {
		rk.blocks -= s.tree.release(pl.node, pl.rank)
	}
	rk.blocks -= pl.blocks
	*pl = placement{rank: pl.rank, prefill: pl.prefill}
	s.Touch(pl.rank)
}

// Expired counts the requests one Expire freed, by reason.
type Expired struct {
	// NoPrefill were never marked prefilled within the prefill timeout.
	NoPrefill int
	// Stale were never freed within the stale timeout.
	Stale int
}

// Expire frees every request added at or before now − prefillTimeout and
// never marked prefilled, unless prefillTimeout is 0, then every request
// added at or before now − staleTimeout, and returns how many it freed.
// It costs a step per request freed, amortised: each timeout pops its
// own list, oldest first, and stops at the first request still in time.
func (s *Sequences) Expire(now time.Time, prefillTimeout, staleTimeout time.Duration) Expired {
	var e Expired
	if prefillTimeout > 0 {
		cutoff := now.Add(-prefillTimeout)
		q := &s.unprefilled
		for q.head < len(q.items) {
			a := q.items[q.head]
			waiting := !a.freed && !a.prefilled
			if waiting && a.added.After(cutoff) {
				break
			}
			q.pop(!waiting)
			a.inUnprefilled = false
			if waiting {
				s.drop(a)
				e.NoPrefill++
			}
		}
	}
	cutoff := now.Add(-staleTimeout)
	q := &s.order
	for q.head < len(q.items) {
		a := q.items[q.head]
		if !a.freed && a.added.After(cutoff) {
			break
		}
		live := !a.freed
		if live {
			s.drop(a) // counts the entry dead
			e.Stale++
		}
		q.pop(true)
	}
	s.tidy()
	return e
}

// tidy compacts the order lists once dead entries are their majority, so
// that each stays within about twice its live entries.
func (s *Sequences) tidy() {
	s.order.tidy(func(a *request) bool { return !a.freed })
	s.unprefilled.tidy(func(a *request) bool { return !a.freed && !a.prefilled })
}

// fifo holds requests in add order. Entries of requests that left it
// (freed, or prefilled for the prefill list) stay until popped at the
// head or compacted away; dead counts them.
type fifo struct {
	items []*request
	head  int
	dead  int
}

func (q *fifo) push(a *request) { q.items = append(q.items, a) }

// pop drops the head entry; dead says it was counted dead.
func (q *fifo) pop(dead bool) {
	q.items[q.head] = nil
	q.head++
	if dead {
		q.dead--
	}
}

// tidy compacts the list when its dead entries (and popped slots) are the
// majority; live tells a live entry.
func (q *fifo) tidy(live func(*request) bool) {
	queued := len(q.items) - q.head
	if q.head > 1024 && q.head*2 > len(q.items) || q.dead > 1024 && q.dead*2 > queued {
		kept := q.items[:0]
		for _, a := range q.items[q.head:] {
			if live(a) {
				kept = append(kept, a)
			}
		}
		clear(q.items[len(kept):])
		q.items, q.head, q.dead = kept, 0, 0
	}
}

// Load returns the load of the rank in slot i.
func (s *Sequences) Load(i int32) Load {
	r := &s.ranks[i]
	return Load{PrefillTokens: r.prefillTokens, Blocks: r.blocks, Requests: int(r.requests)}
}

// ActivePrefix sets prefix[posOf[r]] to the number of leading seqHashes
// active on the rank in slot r, for every slot r that has the first one
// active and a position in posOf (−1 means none), and appends each
// position it sets to touched the first time.
//
// It walks the prompt down the tree of active blocks. Every placement
// through a node passes through its parent, so the ranks holding a node are
// a subset of those holding its parent, and a subset of the same size is
// the same set. So the walk only visits a node's ranks when the next
// node's set is smaller (some ranks stop there) or at the end: a prefix
// active on every rank (a shared system prompt) costs one visit of those
// ranks, not one per node.
func (s *Sequences) ActivePrefix(seqHashes []uint64, posOf []int32, prefix []uint32, touched []int32) []int32 {
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

// NewBlocks returns how many of a prompt's numBlocks blocks would be new on
// a rank that has activePrefix of them active.
func (s *Sequences) NewBlocks(numBlocks int, activePrefix uint32) int {
	if !s.trackBlocks {
		return 0
	}
	return max(numBlocks-int(activePrefix), 0)
}

// Touch records that slot r's load changed (or must be exported again).
func (s *Sequences) Touch(r int32) {
	if rk := &s.ranks[r]; !rk.touched {
		rk.touched = true
		s.touched = append(s.touched, r)
	}
}

// DrainTouched calls fn with every slot of a rank touched since the last
// call, and forgets them.
func (s *Sequences) DrainTouched(fn func(slot int32)) {
	for _, r := range s.touched {
		rk := &s.ranks[r]
		rk.touched = false
		if rk.live {
			fn(r)
		}
	}
	s.touched = s.touched[:0]
}

// Sizes are the bookkeeping's sizes, for tests of its memory.
type Sizes struct {
	// Slots are the rank slots ever used; Free those free for reuse.
	Slots, Free int
	// Requests are active; Queued the entries of the two order lists.
	Requests, Queued int
	// Nodes and Edges are the tree of active blocks'.
	Nodes, Edges int
}

// Sizes returns the bookkeeping's sizes.
func (s *Sequences) Sizes() Sizes {
	return Sizes{
		Slots: len(s.ranks), Free: len(s.free),
		Requests: len(s.requests),
		Queued:   len(s.order.items) - s.order.head + len(s.unprefilled.items) - s.unprefilled.head,
		Nodes:    s.tree.len(), Edges: s.tree.children.len(),
	}
}
