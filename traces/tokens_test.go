package traces

import (
	"slices"
	"testing"
)

func TestTokens(t *testing.T) {
	tests := []struct {
		name        string
		ids         []uint64
		blockTokens int
		wantLen     int
	}{
		{name: "no ids", ids: nil, blockTokens: 16, wantLen: 0},
		{name: "no tokens per block", ids: []uint64{1, 2}, blockTokens: 0, wantLen: 0},
		{name: "negative tokens per block", ids: []uint64{1, 2}, blockTokens: -3, wantLen: 0},
		{name: "three blocks of 512", ids: []uint64{0, 14, 15}, blockTokens: 512, wantLen: 3 * 512},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			prefix := []uint32{42}
			got := Tokens(tt.ids, tt.blockTokens, prefix)
			if len(got) != 1+tt.wantLen || got[0] != 42 {
				t.Fatalf("Tokens = %d tokens starting %v, want 42 then %d tokens", len(got), got[:1], tt.wantLen)
			}
			again := Tokens(tt.ids, tt.blockTokens, nil)
			if !slices.Equal(got[1:], again) {
				t.Errorf("Tokens is not deterministic: %v, then %v", got[1:], again)
			}
		})
	}
}

func TestTokensFollowPrefixes(t *testing.T) {
	const bt = 32
	a := Tokens([]uint64{0, 14, 15}, bt, nil)
	b := Tokens([]uint64{0, 14, 99}, bt, nil)
	if !slices.Equal(a[:2*bt], b[:2*bt]) {
		t.Errorf("requests sharing two leading ids do not share %d leading tokens", 2*bt)
	}
	if slices.Equal(a[2*bt:], b[2*bt:]) {
		t.Errorf("different third ids give the same third block")
	}
	// A block's tokens depend on its id, not on where it sits.
	c := Tokens([]uint64{15}, bt, nil)
	if !slices.Equal(a[2*bt:], c) {
		t.Errorf("block 15 differs between positions")
	}
}

func TestTokensDistinct(t *testing.T) {
	const (
		blocks = 4096
		bt     = 16
	)
	ids := make([]uint64, blocks)
	for i := range ids {
		ids[i] = uint64(i)
	}
	toks := Tokens(ids, bt, nil)
	seenBlock := make(map[[bt]uint32]uint64, blocks)
	seenTok := make(map[uint32]struct{}, len(toks))
	for i, id := range ids {
		var blk [bt]uint32
		copy(blk[:], toks[i*bt:])
		if other, ok := seenBlock[blk]; ok {
			t.Fatalf("blocks %d and %d have the same tokens", other, id)
		}
		seenBlock[blk] = id
		for _, tok := range blk {
			seenTok[tok] = struct{}{}
		}
	}
	// 65,536 draws from 2^32 values collide about 0.5 times on average.
	if dup := len(toks) - len(seenTok); dup > 4 {
		t.Errorf("%d repeated token ids among %d, want at most 4", dup, len(toks))
	}
}
