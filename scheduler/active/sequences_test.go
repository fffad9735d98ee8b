package active

import (
	"errors"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/kvrouter/router/blockhash"
	"github.com/kvrouter/router/indexer"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func w(id uint64) indexer.Worker { return indexer.Worker{ID: indexer.WorkerID(id)} }

// testRanks is how many ranks newSequences adds.
const testRanks = 16

// newSequences returns bookkeeping with the ranks of workers 0 to
// testRanks−1, in that order, so that worker i is in slot i.
func newSequences(trackBlocks, reuse bool) *Sequences {
	s := New(trackBlocks, reuse)
	for i := range uint64(testRanks) {
		s.AddRank(w(i))
	}
	return s
}

// sequenceHashes chains locals as the router does.
func sequenceHashes(dst, locals []uint64) []uint64 {
	return blockhash.ChainHashes(dst, locals, blockhash.DefaultSeed)
}

// rankLoad is a rank's load with its name, for comparisons.
type rankLoad struct {
	Worker indexer.Worker
	Load
}

// loadsOf returns the loads of the ranks of ids, in that order.
func loadsOf(s *Sequences, ids ...uint64) []rankLoad {
	var out []rankLoad
	for _, id := range ids {
		r, ok := s.Rank(w(id))
		if !ok {
			continue
		}
		out = append(out, rankLoad{Worker: w(id), Load: s.Load(r)})
	}
	return out
}

func TestSequencesLoad(t *testing.T) {
	type op struct {
		do    func(s *Sequences) error
		loads []rankLoad // expected loads of workers 1, 2 and 10 after the op
	}
	add := func(id string, places ...Placement) func(*Sequences) error {
		return func(s *Sequences) error { return s.Add(id, t0, 40, true, places...) }
	}
	mark := func(id string) func(*Sequences) error {
		return func(s *Sequences) error {
			if _, ok := s.MarkPrefill(id, t0); !ok {
				return errors.New("unknown")
			}
			return nil
		}
	}
	free := func(id string) func(*Sequences) error {
		return func(s *Sequences) error {
			if _, ok := s.Free(id); !ok {
				return errors.New("unknown")
			}
			return nil
		}
	}
	dec := func(id uint64, prefill, blocks, reqs int) rankLoad {
		return rankLoad{Worker: w(id), Load: Load{PrefillTokens: prefill, Blocks: blocks, Requests: reqs}}
	}
	pre := dec
	idle := func(ids ...uint64) []rankLoad {
		var out []rankLoad
		for _, id := range ids {
			out = append(out, dec(id, 0, 0, 0))
		}
		return out
	}
	tests := []struct {
		name               string
		trackBlocks, reuse bool
		ops                []op
	}{
		{
			name: "shared blocks count once", trackBlocks: true, reuse: true,
			ops: []op{
				{add("r1", Placement{Worker: w(1), PrefillTokens: 40, SeqHashes: []uint64{1, 2, 3}, NumBlocks: 3}), []rankLoad{dec(1, 40, 3, 1)}},
				{add("r2", Placement{Worker: w(1), PrefillTokens: 20, SeqHashes: []uint64{1, 2, 4}, NumBlocks: 3}), []rankLoad{dec(1, 60, 4, 2)}},
				{mark("r1"), []rankLoad{dec(1, 20, 4, 2)}},
				{mark("r1"), []rankLoad{dec(1, 20, 4, 2)}},
				{free("r2"), []rankLoad{dec(1, 0, 3, 1)}},
				{free("r1"), []rankLoad{dec(1, 0, 0, 0)}},
			},
		},
		{
			name: "without reuse every request counts its blocks", trackBlocks: true, reuse: false,
			ops: []op{
				{add("r1", Placement{Worker: w(1), PrefillTokens: 40, SeqHashes: []uint64{1, 2, 3}, NumBlocks: 3}), []rankLoad{dec(1, 40, 3, 1)}},
				{add("r2", Placement{Worker: w(1), PrefillTokens: 20, SeqHashes: []uint64{1, 2, 4}, NumBlocks: 3}), []rankLoad{dec(1, 60, 6, 2)}},
				{free("r1"), []rankLoad{dec(1, 20, 3, 1)}},
			},
		},
		{
			name: "blocks not tracked", trackBlocks: false, reuse: true,
			ops: []op{
				{add("r1", Placement{Worker: w(1), PrefillTokens: 40, SeqHashes: []uint64{1, 2, 3}, NumBlocks: 3}), []rankLoad{dec(1, 40, 0, 1)}},
			},
		},
		{
			name: "disaggregated: the prefill rank lets go at the first token", trackBlocks: true, reuse: true,
			ops: []op{
				{add("r1",
					Placement{Worker: w(10), Prefill: true, PrefillTokens: 40, SeqHashes: []uint64{1, 2}, NumBlocks: 2},
					Placement{Worker: w(1), SeqHashes: []uint64{1, 2}, NumBlocks: 2}),
					[]rankLoad{dec(1, 0, 2, 1), pre(10, 40, 2, 1)}},
				{mark("r1"), []rankLoad{dec(1, 0, 2, 1), pre(10, 0, 0, 0)}},
				{free("r1"), []rankLoad{dec(1, 0, 0, 0), pre(10, 0, 0, 0)}},
			},
		},
		{
			name: "a request on two decode ranks keeps both at the first token", trackBlocks: true, reuse: true,
			ops: []op{
				{add("r1",
					Placement{Worker: w(1), PrefillTokens: 8, SeqHashes: []uint64{1}, NumBlocks: 1},
					Placement{Worker: w(2), SeqHashes: []uint64{1}, NumBlocks: 1}),
					[]rankLoad{dec(1, 8, 1, 1), dec(2, 0, 1, 1)}},
				{mark("r1"), []rankLoad{dec(1, 0, 1, 1), dec(2, 0, 1, 1)}},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newSequences(tt.trackBlocks, tt.reuse)
			for i, o := range tt.ops {
				if err := o.do(s); err != nil {
					t.Fatalf("op %d: %v", i, err)
				}
				got := loadsOf(s, 1, 2, 10)
				want := merge(o.loads, idle(1, 2, 10))
				if diff := cmp.Diff(want, got); diff != "" {
					t.Fatalf("after op %d (-want +got):\n%s", i, diff)
				}
			}
		})
	}
}

func TestSequencesErrors(t *testing.T) {
	s := newSequences(true, true)
	p := Placement{Worker: w(1), PrefillTokens: 4, SeqHashes: []uint64{9}, NumBlocks: 1}
	if err := s.Add("r1", t0, 4, true, p); err != nil {
		t.Fatal(err)
	}
	if err := s.Add("r1", t0, 4, true, p); !errors.Is(err, ErrExists) {
		t.Errorf("duplicate Add = %v, want ErrExists", err)
	}
	if _, ok := s.MarkPrefill("nope", t0); ok {
		t.Error("MarkPrefill of an unknown id succeeded")
	}
	if _, ok := s.Free("nope"); ok {
		t.Error("Free of an unknown id succeeded")
	}
	r1, _ := s.Rank(w(1))
	if n := s.RemoveRanks([]int32{r1}); n != 1 {
		t.Errorf("RemoveRanks forgot %d requests, want 1", n)
	}
	if s.Has("r1") {
		t.Error("request on a removed rank still active")
	}
	if _, ok := s.Rank(w(1)); ok {
		t.Error("removed rank still has a slot")
	}
	if err := s.Add("r2", t0, 4, true, p); !errors.Is(err, ErrUnknownRank) {
		t.Errorf("Add on a removed rank = %v, want ErrUnknownRank", err)
	}
	if s.tree.len() != 0 || s.tree.children.len() != 0 {
		t.Errorf("tree left with %d nodes and %d edges after removal", s.tree.len(), s.tree.children.len())
	}
}

func TestSequencesAddPlacementKeepsPrefillFirst(t *testing.T) {
	s := newSequences(true, true)
	if err := s.Add("r1", t0, 8, false, Placement{Worker: w(1), NumBlocks: 2, SeqHashes: []uint64{1, 2}}); err != nil {
		t.Fatal(err)
	}
	if err := s.AddPlacement("r1", Placement{Worker: w(10), Prefill: true, PrefillTokens: 8, NumBlocks: 2, SeqHashes: []uint64{1, 2}}); err != nil {
		t.Fatal(err)
	}
	if err := s.AddPlacement("r1", Placement{Worker: w(11), Prefill: true}); !errors.Is(err, ErrPlacements) {
		t.Errorf("third placement = %v, want ErrPlacements", err)
	}
	s.MarkPrefill("r1", t0)
	if l := s.Load(10); l.Requests != 0 || l.PrefillTokens != 0 {
		t.Errorf("prefill rank after the first token: %+v, want empty", l)
	}
	if l := s.Load(1); l.Requests != 1 || l.Blocks != 2 {
		t.Errorf("decode rank after the first token: %+v, want 1 request, 2 blocks", l)
	}
}

func TestSequencesExpire(t *testing.T) {
	s := newSequences(true, true)
	p := func(h uint64) Placement {
		return Placement{Worker: w(1), PrefillTokens: 4, SeqHashes: []uint64{h}, NumBlocks: 1}
	}
	for i, id := range []string{"a", "b", "c"} {
		if err := s.Add(id, t0.Add(time.Duration(i)*time.Second), 4, true, p(uint64(i))); err != nil {
			t.Fatal(err)
		}
	}
	s.Free("b")
	if n := s.Expire(t0.Add(10*time.Second), 0, 10*time.Second); n != (Expired{Stale: 1}) || s.Has("a") || !s.Has("c") {
		t.Errorf("Expire at 10s = %+v (a active %v, c active %v), want 1 stale: a", n, s.Has("a"), s.Has("c"))
	}
	if n := s.Expire(t0.Add(12*time.Second), 0, 10*time.Second); n != (Expired{Stale: 1}) || s.Len() != 0 {
		t.Errorf("Expire at 12s = %+v, %d left, want c stale and none left", n, s.Len())
	}
}

func TestSequencesOrderStaysBounded(t *testing.T) {
	s := newSequences(true, true)
	for i := range 100000 {
		id := string(rune('a'+i%26)) + string(rune(i))
		if err := s.Add(id, t0, 4, true, Placement{Worker: w(1), NumBlocks: 1}); err != nil {
			t.Fatal(err)
		}
		s.Free(id)
	}
	if q := s.Sizes().Queued; q > 6000 {
		t.Errorf("the order lists hold %d entries with no request active, want compaction", q)
	}
}

// TestActivePrefixMatchesBruteForce checks the one-walk active prefix
// against counting, per rank, the leading hashes it has active.
func TestActivePrefixMatchesBruteForce(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	s := newSequences(true, true)
	// Prompts share prefixes: chains over a small alphabet of blocks.
	chain := func() []uint64 {
		n := 1 + rng.IntN(6)
		locals := make([]uint64, n)
		for i := range locals {
			locals[i] = uint64(rng.IntN(3))
		}
		return sequenceHashes(nil, locals)
	}
	const ranks = 5
	var live []string
	for i := range 3000 {
		if len(live) > 0 && rng.IntN(3) == 0 {
			j := rng.IntN(len(live))
			s.Free(live[j])
			live = slices.Delete(live, j, j+1)
		} else {
			id := string(rune(i)) + "x"
			c := chain()
			if err := s.Add(id, t0, 4, true, Placement{Worker: w(uint64(rng.IntN(ranks))), SeqHashes: c, NumBlocks: len(c)}); err != nil {
				t.Fatal(err)
			}
			live = append(live, id)
		}
		q := chain()
		posOf := make([]int32, len(s.ranks))
		for r := range posOf {
			posOf[r] = int32(r)
		}
		got := make([]uint32, len(s.ranks))
		s.ActivePrefix(q, posOf, got, nil)
		for r := range s.ranks {
			var want uint32
			for _, h := range q {
				if !s.rankHas(int32(r), h) {
					break
				}
				want++
			}
			if got[r] != want {
				t.Fatalf("step %d rank %d: activePrefix = %d, brute force = %d", i, r, got[r], want)
			}
		}
	}
}

// rankHas reports whether rank r has hash h active, from the requests.
func (s *Sequences) rankHas(r int32, h uint64) bool {
	for _, a := range s.requests {
		for i := 0; i < a.n; i++ {
			if a.places[i].rank == r && slices.Contains(s.tree.path(a.places[i].node), h) {
				return true
			}
		}
	}
	return false
}

// path returns the hashes from the root to the end of node n.
func (t *activeTree) path(n int32) []uint64 {
	var p []uint64
	for ; n != 0; n = t.nodes[n].parent {
		p = append(slices.Clone(t.nodes[n].hashes), p...)
	}
	return p
}

func TestSequencesDrainTouched(t *testing.T) {
	s := newSequences(true, true)
	s.Add("r1", t0, 8, true, Placement{Worker: w(1), PrefillTokens: 8, NumBlocks: 2})
	s.Add("r2", t0, 8, true, Placement{Worker: w(2), Prefill: true, PrefillTokens: 8, NumBlocks: 2})
	var got []indexer.Worker
	s.DrainTouched(func(r int32) { got = append(got, s.Worker(r)) })
	if diff := cmp.Diff([]indexer.Worker{w(1), w(2)}, got); diff != "" {
		t.Errorf("touched (-want +got):\n%s", diff)
	}
	got = nil
	s.DrainTouched(func(r int32) { got = append(got, s.Worker(r)) })
	if len(got) != 0 {
		t.Errorf("touched twice: %v", got)
	}
}

// merge returns want with the loads of idle ranks not in it, by worker.
func merge(want, idle []rankLoad) []rankLoad {
	out := slices.Clone(want)
	for _, l := range idle {
		if !slices.ContainsFunc(want, func(x rankLoad) bool { return x.Worker == l.Worker }) {
			out = append(out, l)
		}
	}
	slices.SortFunc(out, func(a, b rankLoad) int { return int(a.Worker.ID) - int(b.Worker.ID) })
	return out
}

func TestSequencesExpirePrefill(t *testing.T) {
	s := newSequences(true, true)
	add := func(id string, at time.Duration) {
		t.Helper()
		if err := s.Add(id, t0.Add(at), 4, true, Placement{Worker: w(1), PrefillTokens: 4, SeqHashes: []uint64{uint64(at)}, NumBlocks: 1}); err != nil {
			t.Fatal(err)
		}
	}
	add("never-marked", 0)
	add("marked", time.Second)
	add("later", 2*time.Second)
	s.MarkPrefill("marked", t0.Add(time.Second))
	const prefill, stale = 5 * time.Second, time.Minute
	if e := s.Expire(t0.Add(5*time.Second), prefill, stale); e != (Expired{NoPrefill: 1}) || s.Has("never-marked") {
		t.Errorf("at 5s: %+v, never-marked active %v; want it expired for no prefill", e, s.Has("never-marked"))
	}
	if e := s.Expire(t0.Add(6*time.Second), prefill, stale); e != (Expired{}) || !s.Has("marked") || !s.Has("later") {
		t.Errorf("at 6s: %+v; want nothing expired", e)
	}
	if e := s.Expire(t0.Add(7*time.Second), prefill, stale); e != (Expired{NoPrefill: 1}) || !s.Has("marked") {
		t.Errorf("at 7s: %+v; want later expired, marked kept", e)
	}
	if e := s.Expire(t0.Add(time.Minute+time.Second), prefill, stale); e != (Expired{Stale: 1}) || s.Len() != 0 {
		t.Errorf("at 61s: %+v, %d active; want marked stale, none left", e, s.Len())
	}
	if l := s.Load(1); l != (Load{}) {
		t.Errorf("load after every expiry: %+v, want none", l)
	}
	if z := s.Sizes(); z.Queued != 0 || z.Nodes != 0 {
		t.Errorf("sizes after every expiry: %+v, want empty lists and tree", z)
	}
}

// TestRemoveRanksReusesSlots removes a rank holding bookings and adds it
// back, a thousand times: it comes back empty, in a reused slot, and the
// bookkeeping does not grow.
func TestRemoveRanksReusesSlots(t *testing.T) {
	s := New(true, true)
	s.AddRank(w(1))
	for i := range 1000 {
		r := s.AddRank(w(2))
		if l := s.Load(r); l != (Load{}) {
			t.Fatalf("cycle %d: rank back with load %+v", i, l)
		}
		id := string(rune('a' + i%26))
		if err := s.Add(id, t0, 8, true,
			Placement{Worker: w(2), Prefill: true, PrefillTokens: 8, SeqHashes: []uint64{1, 2, uint64(i)}, NumBlocks: 3},
			Placement{Worker: w(1), SeqHashes: []uint64{1, 2, uint64(i)}, NumBlocks: 3}); err != nil {
			t.Fatal(err)
		}
		if err := s.Add(id+"-only", t0, 8, true, Placement{Worker: w(2), SeqHashes: []uint64{7}, NumBlocks: 1}); err != nil {
			t.Fatal(err)
		}
		if n := s.RemoveRanks([]int32{r}); n != 1 {
			t.Fatalf("cycle %d: %d requests forgotten, want 1 (the one only on the rank)", i, n)
		}
		if l := s.Load(0); l.Requests != 1 || l.Blocks != 3 || l.PrefillTokens != 0 {
			t.Fatalf("cycle %d: the other rank holds %+v, want its own placement only", i, l)
		}
		s.Free(id)
	}
	// The order lists drop dead entries lazily, in batches of a thousand.
	if z := s.Sizes(); z.Slots != 2 || z.Free != 1 || z.Requests != 0 || z.Nodes != 0 || z.Edges != 0 || z.Queued > 4096 {
		t.Errorf("after 1000 cycles: %+v; want 2 slots (1 free), nothing booked, order lists compacted", z)
	}
}
