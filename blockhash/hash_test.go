package blockhash

import (
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/zeebo/xxh3"
)

func seq(from, to uint32) []uint32 {
	var out []uint32
	for t := from; t <= to; t++ {
		out = append(out, t)
	}
	return out
}

func ptr(v uint64) *uint64 { return &v }

// The vectors of docs/compat.md §2, each one a case.
func TestVectors(t *testing.T) {
	if got, want := xxh3.HashStringSeed("test data", 1337), uint64(13226331709069118873); got != want {
		t.Fatalf("XXH3(test data, 1337) = %d, want %d", got, want)
	}
	tests := []struct {
		name       string
		blockSize  int
		opts       Options
		tokens     []uint32
		wantSeed   uint64
		wantLocals []uint64
		wantSeqs   []uint64 // nil: not checked
	}{
		{
			name: "tokens 1..12 block 4", blockSize: 4, tokens: seq(1, 12), wantSeed: 1337,
			wantLocals: []uint64{14643705804678351452, 16777012769546811212, 483935686894639516},
			wantSeqs:   []uint64{14643705804678351452, 4945711292740353085, 12583592247330656132},
		},
		{
			name: "tokens 0..7 chain seed 1337", blockSize: 4, tokens: seq(0, 7), wantSeed: 1337,
			wantLocals: []uint64{9143094415614847814, 12124091508212882195},
			wantSeqs:   []uint64{9143094415614847814, 9510318385840434533},
		},
		{
			name: "tokens 0..7 chain seed 0", blockSize: 4, tokens: seq(0, 7), wantSeed: 1337,
			opts:       Options{ChainSeed: ptr(0)},
			wantLocals: []uint64{9143094415614847814, 12124091508212882195},
			wantSeqs:   []uint64{9143094415614847814, 1545165097461304815},
		},
		{
			name: "lora adapter-a", blockSize: 4, tokens: seq(0, 7), wantSeed: 8842669519798868182,
			opts:       Options{LoRAName: "adapter-a"},
			wantLocals: []uint64{6665157333201000639, 11721812545976571723},
		},
		{
			name: "cache namespace tenant-a", blockSize: 4, tokens: seq(0, 7), wantSeed: 1948188790972764086,
			opts:       Options{CacheNamespace: "tenant-a"},
			wantLocals: []uint64{17009624042690211646, 10000672136415158886},
		},
		{
			name: "partial last block ignored", blockSize: 4, tokens: seq(1, 11), wantSeed: 1337,
			wantLocals: []uint64{14643705804678351452, 16777012769546811212},
		},
		{
			name: "fewer tokens than a block", blockSize: 4, tokens: seq(1, 3), wantSeed: 1337,
			wantLocals: nil,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h, err := NewHasher(tc.blockSize, tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			if h.seed != tc.wantSeed {
				t.Errorf("seed = %d, want %d", h.seed, tc.wantSeed)
			}
			locals := h.LocalHashes(nil, tc.tokens)
			if diff := cmp.Diff(tc.wantLocals, locals); diff != "" {
				t.Errorf("locals (-want +got):\n%s", diff)
			}
			if tc.wantSeqs != nil {
				if diff := cmp.Diff(tc.wantSeqs, h.SequenceHashes(nil, locals)); diff != "" {
					t.Errorf("sequence hashes (-want +got):\n%s", diff)
				}
			}
		})
	}
}

func TestBlockCounts(t *testing.T) {
	h, err := NewHasher(11, Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ tokens, blocks int }{{10, 0}, {11, 1}, {12, 1}, {22, 2}, {23, 2}} {
		got := len(h.LocalHashes(nil, make([]uint32, tc.tokens)))
		if got != tc.blocks || h.NumBlocks(tc.tokens) != tc.blocks {
			t.Errorf("%d tokens: %d blocks (NumBlocks %d), want %d", tc.tokens, got, h.NumBlocks(tc.tokens), tc.blocks)
		}
	}
}

// A block larger than the stack buffer streams through the digest and must
// equal the one-shot hash.
func TestLargeBlockStreams(t *testing.T) {
	h, err := NewHasher(1000, Options{})
	if err != nil {
		t.Fatal(err)
	}
	tokens := seq(7, 1006)
	buf := make([]byte, 0, 4000)
	for _, tok := range tokens {
		buf = append(buf, byte(tok), byte(tok>>8), byte(tok>>16), byte(tok>>24))
	}
	want := xxh3.HashSeed(buf, 1337)
	var scratch [256]byte
	if got := hashBlock(&scratch, tokens, 1337); got != want {
		t.Fatalf("hashBlock = %d, want %d", got, want)
	}
	if got := h.LocalHashes(nil, tokens); len(got) != 1 || got[0] != want {
		t.Fatalf("LocalHashes = %v, want [%d]", got, want)
	}
}

func TestNewHasherRejectsBlockSize(t *testing.T) {
	for _, bs := range []int{0, -1, MaxBlockSize + 1} {
		if _, err := NewHasher(bs, Options{}); !errors.Is(err, ErrBlockSize) {
			t.Errorf("NewHasher(%d) error = %v, want ErrBlockSize", bs, err)
		}
	}
}

func TestHashingAllocatesNothingWithCapacity(t *testing.T) {
	h, _ := NewHasher(16, Options{})
	tokens := make([]uint32, 16*30)
	locals := make([]uint64, 0, 30)
	seqs := make([]uint64, 0, 30)
	allocs := testing.AllocsPerRun(100, func() {
		locals = h.LocalHashes(locals[:0], tokens)
		seqs = h.SequenceHashes(seqs[:0], locals)
	})
	if allocs != 0 {
		t.Fatalf("allocs = %v, want 0", allocs)
	}
}

func BenchmarkLocalHashes(b *testing.B) {
	h, _ := NewHasher(16, Options{})
	tokens := make([]uint32, 16*30)
	for i := range tokens {
		tokens[i] = uint32(i)
	}
	dst := make([]uint64, 0, 30)
	b.ReportAllocs()
	b.SetBytes(int64(len(tokens) * 4))
	for b.Loop() {
		dst = h.LocalHashes(dst[:0], tokens)
	}
}

func BenchmarkSequenceHashes(b *testing.B) {
	h, _ := NewHasher(16, Options{})
	locals := make([]uint64, 30)
	dst := make([]uint64, 0, 30)
	b.ReportAllocs()
	for b.Loop() {
		dst = h.SequenceHashes(dst[:0], locals)
	}
}

// The portable path (copying tokens into little-endian order) and the
// in-place fast path agree, for small blocks and for blocks larger than the
// copy buffer.
func TestPortablePathMatchesFastPath(t *testing.T) {
	for _, bs := range []int{1, 4, 16, 64, 65, 128, 1000} {
		tokens := make([]uint32, bs*3+bs-1) // three full blocks and a partial one
		for i := range tokens {
			tokens[i] = uint32(i*2654435761) ^ 0xdeadbeef
		}
		fast := LocalHashesSeed(nil, tokens, bs, 42)
		var buf [256]byte
		for i, got := range fast {
			if want := hashBlock(&buf, tokens[i*bs:(i+1)*bs], 42); got != want {
				t.Fatalf("block size %d, block %d: fast %d, portable %d", bs, i, got, want)
			}
		}
		if len(fast) != 3 {
			t.Fatalf("block size %d: %d blocks, want 3", bs, len(fast))
		}
	}
}

func BenchmarkLocalHashes128(b *testing.B) {
	h, _ := NewHasher(128, Options{})
	tokens := make([]uint32, 128*30)
	dst := make([]uint64, 0, 30)
	b.ReportAllocs()
	b.SetBytes(int64(len(tokens) * 4))
	for b.Loop() {
		dst = h.LocalHashes(dst[:0], tokens)
	}
}
