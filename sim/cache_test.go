package sim

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/kvrouter/router/blockhash"
	"github.com/kvrouter/router/indexer"
)

// chain returns the blocks of a prompt whose blocks have the given local
// hashes: sequence hashes chained as the router chains them.
func chain(locals ...uint64) []Block {
	seqs := blockhash.ChainHashes(nil, locals, blockhash.DefaultSeed)
	out := make([]Block, len(locals))
	for i := range locals {
		out[i] = Block{Hash: seqs[i], TokensHash: locals[i]}
	}
	return out
}

func hashesOf(bs []Block) []uint64 {
	out := make([]uint64, len(bs))
	for i, b := range bs {
		out[i] = b.Hash
	}
	return out
}

// run admits a sequence for blocks (reusing its cached prefix, reserving
// the rest plus extra), commits every block and returns its held hashes.
func run(t *testing.T, c *Cache, blocks []Block, extra int) []uint64 {
	t.Helper()
	hs := hashesOf(blocks)
	hits := c.Match(hs)
	if err := c.Admit(hs[:hits], len(blocks)-hits+extra); err != nil {
		t.Fatalf("admit: %v", err)
	}
	if hits < len(blocks) {
		var parent uint64
		if hits > 0 {
			parent = hs[hits-1]
		}
		c.Commit(hits > 0, parent, blocks[hits:])
	}
	return hs
}

func TestCachePrefixReuse(t *testing.T) {
	c := NewCache(16)
	a := chain(1, 2, 3, 4)
	hs := run(t, c, a, 1)
	c.Release(hs, 1)

	b := chain(1, 2, 3, 9, 10) // shares three blocks with a
	if got := c.Match(hashesOf(b)); got != 3 {
		t.Fatalf("Match = %d, want 3", got)
	}
	c.TakeEvents(nil) // the first prompt's events, checked elsewhere
	hb := run(t, c, b, 0)
	evs := c.TakeEvents(nil)
	want := []Event{{Kind: EventStored, HasParent: true, Parent: a[2].Hash, Blocks: b[3:]}}
	if diff := cmp.Diff(want, evs); diff != "" {
		t.Fatalf("events of the second prompt (-want +got):\n%s", diff)
	}
	st := c.Stats()
	if st.Cached != 6 || st.Referenced != 5 || st.Evictable != 1 || st.Reserved != 0 {
		t.Fatalf("stats = %+v, want 6 cached, 5 referenced (b), 1 evictable (a's last), 0 reserved", st)
	}
	c.Release(hb, 0)
	if st := c.Stats(); st.Referenced != 0 || st.Evictable != 6 {
		t.Fatalf("after release: %+v", st)
	}
}

func TestCacheEvictionOrder(t *testing.T) {
	c := NewCache(6)
	a := chain(1, 2)
	b := chain(3, 4)
	ha := run(t, c, a, 0)
	hb := run(t, c, b, 0)
	c.Release(ha, 0) // a2 then a1 join the LRU list
	c.Release(hb, 0) // then b2, b1
	_ = c.TakeEvents(nil)
	want := []uint64{a[1].Hash, a[0].Hash, b[1].Hash, b[0].Hash}
	if diff := cmp.Diff(want, c.EvictionOrder()); diff != "" {
		t.Fatalf("eviction order (-want +got):\n%s", diff)
	}
	// Reusing b1 takes it off the list; the other end is still evicted
	// first, leaves before parents.
	if err := c.Admit([]uint64{b[0].Hash}, 4); err != nil {
		t.Fatal(err)
	}
	evs := c.TakeEvents(nil)
	wantEv := []Event{{Kind: EventRemoved, Removed: []uint64{a[1].Hash, a[0].Hash}}}
	if diff := cmp.Diff(wantEv, evs); diff != "" {
		t.Fatalf("events (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]uint64{b[1].Hash}, c.EvictionOrder()); diff != "" {
		t.Fatalf("left to evict (-want +got):\n%s", diff)
	}
}

func TestCacheNeverEvictsReferenced(t *testing.T) {
	c := NewCache(4)
	a := chain(1, 2, 3)
	run(t, c, a, 0) // holds 3 of 4
	err := c.Admit(nil, 2)
	if !errors.Is(err, ErrCacheFull) {
		t.Fatalf("Admit(2) with 1 free = %v, want ErrCacheFull", err)
	}
	if st := c.Stats(); st.Cached != 3 || st.Referenced != 3 || st.Reserved != 0 {
		t.Fatalf("a failed Admit changed the cache: %+v", st)
	}
	// A hit that is unreferenced cannot count as room for the rest.
	b := chain(7, 8)
	c2 := NewCache(3)
	hb := run(t, c2, b, 0)
	c2.Release(hb, 0)
	if err := c2.Admit(hashesOf(b), 2); !errors.Is(err, ErrCacheFull) {
		t.Fatalf("Admit(hits 2, need 2) in 3 blocks = %v, want ErrCacheFull", err)
	}
	if err := c2.Admit(hashesOf(b), 1); err != nil {
		t.Fatalf("Admit(hits 2, need 1) in 3 blocks = %v", err)
	}
}

func TestCacheSharesConcurrentDuplicates(t *testing.T) {
	c := NewCache(8)
	a := chain(1, 2)
	// Two sequences with the same prompt, both admitted before either
	// computed it: both reserve, the second commit shares.
	if err := c.Admit(nil, 2); err != nil {
		t.Fatal(err)
	}
	if err := c.Admit(nil, 2); err != nil {
		t.Fatal(err)
	}
	if used := c.Commit(false, 0, a); used != 2 {
		t.Fatalf("first commit used %d, want 2", used)
	}
	if used := c.Commit(false, 0, a); used != 0 {
		t.Fatalf("second commit used %d, want 0 (shared)", used)
	}
	if st := c.Stats(); st.Cached != 2 || st.Reserved != 0 || st.Referenced != 2 {
		t.Fatalf("stats = %+v", st)
	}
	if evs := c.TakeEvents(nil); len(evs) != 1 {
		t.Fatalf("%d events, want one stored event", len(evs))
	}
	c.Release(hashesOf(a), 0)
	c.Release(hashesOf(a), 0)
	if st := c.Stats(); st.Evictable != 2 || st.Referenced != 0 {
		t.Fatalf("after both released: %+v", st)
	}
}

// ops drives a cache as an engine does, from a stream of choices: admit a
// prompt drawn from a small tree of shared prefixes (so that prompts share
// and evict each other's blocks), commit part of a running sequence, or
// finish one. Every event is applied to an index, and afterwards the index
// must hold exactly the cache's blocks.
type ops struct {
	t     *testing.T
	c     *Cache
	idx   *indexer.Tree
	next  func(n int) int
	seqs  []*opSeq
	evbuf []Event
}

type opSeq struct {
	blocks   []Block
	held     int
	reserved int
}

const opWorker = 1

func newOps(t *testing.T, capacity int, next func(n int) int) *ops {
	return &ops{t: t, c: NewCache(capacity), idx: indexer.New(indexer.Config{}), next: next}
}

func (o *ops) prompt() []Block {
	// A prompt is a path in a tree of fan-out 3 and depth up to 6: local
	// hash of a block = 10×parent's + choice + 1.
	n := 1 + o.next(6)
	locals := make([]uint64, n)
	var h uint64
	for i := range locals {
		h = h*10 + uint64(o.next(3)) + 1
		locals[i] = h
	}
	return chain(locals...)
}

func (o *ops) step() {
	switch op := o.next(4); {
	case op == 0 || len(o.seqs) == 0:
		blocks := o.prompt()
		hs := hashesOf(blocks)
		hits := o.c.Match(hs)
		need := len(blocks) - hits + o.next(2)
		if err := o.c.Admit(hs[:hits], need); err != nil {
			if !errors.Is(err, ErrCacheFull) {
				o.t.Fatalf("admit: %v", err)
			}
			return
		}
		o.seqs = append(o.seqs, &opSeq{blocks: blocks, held: hits, reserved: need})
	case op <= 2:
		s := o.seqs[o.next(len(o.seqs))]
		if s.held == len(s.blocks) {
			return
		}
		n := 1 + o.next(len(s.blocks)-s.held)
		var parent uint64
		if s.held > 0 {
			parent = s.blocks[s.held-1].Hash
		}
		o.c.Commit(s.held > 0, parent, s.blocks[s.held:s.held+n])
		s.held += n
		s.reserved -= n
	default:
		i := o.next(len(o.seqs))
		s := o.seqs[i]
		o.c.Release(hashesOf(s.blocks[:s.held]), s.reserved)
		o.seqs = append(o.seqs[:i], o.seqs[i+1:]...)
	}
	o.apply()
}

func (o *ops) apply() {
	o.evbuf = o.c.TakeEvents(o.evbuf[:0])
	for _, ev := range o.evbuf {
		ie := indexer.Event{Worker: indexer.Worker{ID: opWorker}, HasParent: ev.HasParent, Parent: indexer.BlockHash(ev.Parent)}
		switch ev.Kind {
		case EventStored:
			ie.Kind = indexer.KindStored
			for _, b := range ev.Blocks {
				ie.Blocks = append(ie.Blocks, indexer.Block{Hash: indexer.BlockHash(b.Hash), Tokens: indexer.LocalHash(b.TokensHash)})
			}
		case EventRemoved:
			ie.Kind = indexer.KindRemoved
			for _, h := range ev.Removed {
				ie.Removed = append(ie.Removed, indexer.BlockHash(h))
			}
		}
		if r := o.idx.Apply(ie); r.Status != indexer.StatusOK {
			o.t.Fatalf("index rejected %+v: %v", ev, r.Status)
		}
	}
}

// check compares the cache with the index built from its events alone, and
// the cache's own accounting.
func (o *ops) check() {
	o.t.Helper()
	type entry struct {
		Hash, Tokens, Parent uint64
		HasParent            bool
	}
	var want, got []entry
	refs := 0
	for _, b := range o.c.Contents() {
		want = append(want, entry{b.Hash, b.TokensHash, b.Parent, b.HasParent})
		if b.Refs > 0 {
			refs++
		}
	}
	dump := o.idx.Dump()
	for _, ev := range dump {
		for _, b := range ev.Blocks {
			got = append(got, entry{uint64(b.Hash), uint64(b.Tokens), uint64(ev.Parent), ev.HasParent})
		}
	}
	sortEntries := func(es []entry) {
		for i := 1; i < len(es); i++ {
			for j := i; j > 0 && es[j].Hash < es[j-1].Hash; j-- {
				es[j], es[j-1] = es[j-1], es[j]
			}
		}
	}
	sortEntries(got)
	if diff := cmp.Diff(want, got); diff != "" {
		o.t.Fatalf("index fed by the events differs from the cache (-cache +index):\n%s", diff)
	}
	st := o.c.Stats()
	reserved := 0
	for _, s := range o.seqs {
		reserved += s.reserved
	}
	if st.Reserved != reserved || st.Referenced != refs || st.Cached+st.Reserved > st.Capacity ||
		st.Evictable != st.Cached-st.Referenced {
		o.t.Fatalf("accounting: %+v, sequences reserve %d, %d blocks referenced", st, reserved, refs)
	}
}

func TestCacheEventsMatchContents(t *testing.T) {
	for seed := range uint64(20) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, 7))
			o := newOps(t, 8+int(seed), rng.IntN)
			for range 2000 {
				o.step()
			}
			o.check()
			// Finishing everything leaves every block evictable.
			for len(o.seqs) > 0 {
				s := o.seqs[0]
				o.c.Release(hashesOf(s.blocks[:s.held]), s.reserved)
				o.seqs = o.seqs[1:]
			}
			o.apply()
			o.check()
		})
	}
}

// FuzzCacheEvents drives the cache with arbitrary operation streams and
// checks that an index fed only its events agrees with its contents.
func FuzzCacheEvents(f *testing.F) {
	f.Add([]byte{0, 1, 2, 3, 4, 5, 6, 7, 8, 9})
	f.Add([]byte{0, 0, 0, 0, 1, 1, 1, 3, 3, 3, 0, 2, 2, 2, 1, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		i := 0
		next := func(n int) int {
			if i >= len(data) {
				return 0
			}
			v := int(data[i]) % n
			i++
			return v
		}
		o := newOps(t, 6, next)
		for i < len(data) {
			o.step()
			o.check()
		}
	})
}
