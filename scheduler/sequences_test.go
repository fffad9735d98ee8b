package scheduler

import (
	"errors"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/kvrouter/router/indexer"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func TestSequencesLoad(t *testing.T) {
	type op struct {
		do    func(s *Sequences) error
		loads []RankLoad // expected live loads after the op, sorted by worker
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
	dec := func(id uint64, prefill, blocks, reqs int) RankLoad {
		return RankLoad{Worker: w(id), Kind: KindDecode, PrefillTokens: prefill, DecodeBlocks: blocks, Requests: reqs}
	}
	pre := func(id uint64, prefill, blocks, reqs int) RankLoad {
		return RankLoad{Worker: w(id), Kind: KindPrefill, PrefillTokens: prefill, DecodeBlocks: blocks, Requests: reqs}
	}
	tests := []struct {
		name               string
		trackBlocks, reuse bool
		ops                []op
	}{
		{
			name: "shared blocks count once", trackBlocks: true, reuse: true,
			ops: []op{
				{add("r1", Placement{Worker: w(1), Kind: KindDecode, PrefillTokens: 40, SeqHashes: []uint64{1, 2, 3}, NumBlocks: 3}), []RankLoad{dec(1, 40, 3, 1)}},
				{add("r2", Placement{Worker: w(1), Kind: KindDecode, PrefillTokens: 20, SeqHashes: []uint64{1, 2, 4}, NumBlocks: 3}), []RankLoad{dec(1, 60, 4, 2)}},
				{mark("r1"), []RankLoad{dec(1, 20, 4, 2)}},
				{mark("r1"), []RankLoad{dec(1, 20, 4, 2)}},
				{free("r2"), []RankLoad{dec(1, 0, 3, 1)}},
				{free("r1"), []RankLoad{dec(1, 0, 0, 0)}},
			},
		},
		{
			name: "without reuse every request counts its blocks", trackBlocks: true, reuse: false,
			ops: []op{
				{add("r1", Placement{Worker: w(1), Kind: KindDecode, PrefillTokens: 40, SeqHashes: []uint64{1, 2, 3}, NumBlocks: 3}), []RankLoad{dec(1, 40, 3, 1)}},
				{add("r2", Placement{Worker: w(1), Kind: KindDecode, PrefillTokens: 20, SeqHashes: []uint64{1, 2, 4}, NumBlocks: 3}), []RankLoad{dec(1, 60, 6, 2)}},
				{free("r1"), []RankLoad{dec(1, 20, 3, 1)}},
			},
		},
		{
			name: "blocks not tracked", trackBlocks: false, reuse: true,
			ops: []op{
				{add("r1", Placement{Worker: w(1), Kind: KindDecode, PrefillTokens: 40, SeqHashes: []uint64{1, 2, 3}, NumBlocks: 3}), []RankLoad{dec(1, 40, 0, 1)}},
			},
		},
		{
			name: "disaggregated: the prefill rank lets go at the first token", trackBlocks: true, reuse: true,
			ops: []op{
				{add("r1",
					Placement{Worker: w(10), Kind: KindPrefill, PrefillTokens: 40, SeqHashes: []uint64{1, 2}, NumBlocks: 2},
					Placement{Worker: w(1), Kind: KindDecode, SeqHashes: []uint64{1, 2}, NumBlocks: 2}),
					[]RankLoad{dec(1, 0, 2, 1), pre(10, 40, 2, 1)}},
				{mark("r1"), []RankLoad{dec(1, 0, 2, 1), pre(10, 0, 0, 0)}},
				{free("r1"), []RankLoad{dec(1, 0, 0, 0), pre(10, 0, 0, 0)}},
			},
		},
		{
			name: "a request on two decode ranks keeps both at the first token", trackBlocks: true, reuse: true,
			ops: []op{
				{add("r1",
					Placement{Worker: w(1), Kind: KindDecode, PrefillTokens: 8, SeqHashes: []uint64{1}, NumBlocks: 1},
					Placement{Worker: w(2), Kind: KindDecode, SeqHashes: []uint64{1}, NumBlocks: 1}),
					[]RankLoad{dec(1, 8, 1, 1), dec(2, 0, 1, 1)}},
				{mark("r1"), []RankLoad{dec(1, 0, 1, 1), dec(2, 0, 1, 1)}},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := NewSequences(tt.trackBlocks, tt.reuse)
			for i, o := range tt.ops {
				if err := o.do(s); err != nil {
					t.Fatalf("op %d: %v", i, err)
				}
				got := s.Loads()
				slices.SortFunc(got, func(a, b RankLoad) int { return int(a.Worker.ID) - int(b.Worker.ID) })
				if diff := cmp.Diff(o.loads, got); diff != "" {
					t.Fatalf("after op %d (-want +got):\n%s", i, diff)
				}
			}
		})
	}
}

func TestSequencesErrors(t *testing.T) {
	s := NewSequences(true, true)
	p := Placement{Worker: w(1), Kind: KindDecode, PrefillTokens: 4, SeqHashes: []uint64{9}, NumBlocks: 1}
	if err := s.Add("r1", t0, 4, true, p); err != nil {
		t.Fatal(err)
	}
	if err := s.Add("r1", t0, 4, true, p); !errors.Is(err, ErrBadRequest) {
		t.Errorf("duplicate Add = %v, want ErrBadRequest", err)
	}
	if _, ok := s.MarkPrefill("nope", t0); ok {
		t.Error("MarkPrefill of an unknown id succeeded")
	}
	if _, ok := s.Free("nope"); ok {
		t.Error("Free of an unknown id succeeded")
	}
	s.RemoveWorker(1)
	if s.Has("r1") {
		t.Error("request on a removed worker still active")
	}
	if _, ok := s.Load(w(1)); ok {
		t.Error("removed worker still has a load")
	}
	if err := s.Add("r2", t0, 4, true, p); !errors.Is(err, ErrNoWorkers) {
		t.Errorf("Add on a removed worker = %v, want ErrNoWorkers", err)
	}
	if s.tree.len() != 0 || s.tree.children.len() != 0 {
		t.Errorf("tree left with %d nodes and %d edges after removal", s.tree.len(), s.tree.children.len())
	}
}

func TestSequencesAddPlacementKeepsPrefillFirst(t *testing.T) {
	s := NewSequences(true, true)
	if err := s.Add("r1", t0, 8, false, Placement{Worker: w(1), Kind: KindDecode, NumBlocks: 2, SeqHashes: []uint64{1, 2}}); err != nil {
		t.Fatal(err)
	}
	if err := s.AddPlacement("r1", Placement{Worker: w(10), Kind: KindPrefill, PrefillTokens: 8, NumBlocks: 2, SeqHashes: []uint64{1, 2}}); err != nil {
		t.Fatal(err)
	}
	if err := s.AddPlacement("r1", Placement{Worker: w(11), Kind: KindPrefill}); !errors.Is(err, ErrBadRequest) {
		t.Errorf("third placement = %v, want ErrBadRequest", err)
	}
	s.MarkPrefill("r1", t0)
	if l, _ := s.Load(w(10)); l.Requests != 0 || l.PrefillTokens != 0 {
		t.Errorf("prefill rank after the first token: %+v, want empty", l)
	}
	if l, _ := s.Load(w(1)); l.Requests != 1 || l.DecodeBlocks != 2 {
		t.Errorf("decode rank after the first token: %+v, want 1 request, 2 blocks", l)
	}
}

func TestSequencesExpire(t *testing.T) {
	s := NewSequences(true, true)
	p := func(h uint64) Placement {
		return Placement{Worker: w(1), Kind: KindDecode, PrefillTokens: 4, SeqHashes: []uint64{h}, NumBlocks: 1}
	}
	for i, id := range []string{"a", "b", "c"} {
		if err := s.Add(id, t0.Add(time.Duration(i)*time.Second), 4, true, p(uint64(i))); err != nil {
			t.Fatal(err)
		}
	}
	s.Free("b")
	if n := s.Expire(t0.Add(10*time.Second), 10*time.Second); n != 1 || s.Has("a") || !s.Has("c") {
		t.Errorf("Expire at 10s = %d (a active %v, c active %v), want 1 freed: a", n, s.Has("a"), s.Has("c"))
	}
	if n := s.Expire(t0.Add(12*time.Second), 10*time.Second); n != 1 || s.Len() != 0 {
		t.Errorf("Expire at 12s = %d, %d left, want c freed and none left", n, s.Len())
	}
}

func TestSequencesOrderStaysBounded(t *testing.T) {
	s := NewSequences(true, true)
	for i := range 100000 {
		id := string(rune('a'+i%26)) + string(rune(i))
		if err := s.Add(id, t0, 4, true, Placement{Worker: w(1), Kind: KindDecode, NumBlocks: 1}); err != nil {
			t.Fatal(err)
		}
		s.Free(id)
	}
	if live := len(s.order) - s.orderHead; live > 3000 {
		t.Errorf("order holds %d entries with no request active, want compaction", live)
	}
}

// TestActivePrefixMatchesBruteForce checks the one-walk active prefix
// against counting, per rank, the leading hashes it has active.
func TestActivePrefixMatchesBruteForce(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	s := NewSequences(true, true)
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
			if err := s.Add(id, t0, 4, true, Placement{Worker: w(uint64(rng.IntN(ranks))), Kind: KindDecode, SeqHashes: c, NumBlocks: len(c)}); err != nil {
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
		s.activePrefix(q, posOf, got, nil)
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
	s := NewSequences(true, true)
	s.Add("r1", t0, 8, true, Placement{Worker: w(1), Kind: KindDecode, PrefillTokens: 8, NumBlocks: 2})
	s.Add("r2", t0, 8, true, Placement{Worker: w(2), Kind: KindPrefill, PrefillTokens: 8, NumBlocks: 2})
	var got []indexer.Worker
	s.drainTouched(func(r int32) { got = append(got, s.workers[r]) })
	if diff := cmp.Diff([]indexer.Worker{w(1), w(2)}, got); diff != "" {
		t.Errorf("touched (-want +got):\n%s", diff)
	}
	got = nil
	s.drainTouched(func(r int32) { got = append(got, s.workers[r]) })
	if len(got) != 0 {
		t.Errorf("touched twice: %v", got)
	}
}
