package scheduler

import (
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/kvrouter/router/blockhash"
)

func TestLocalHashesVectors(t *testing.T) {
	// docs/compat.md §2.
	got := localHashes(nil, []uint32{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13}, 4, "")
	want := []uint64{14643705804678351452, 16777012769546811212, 483935686894639516}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("localHashes (-want +got):\n%s", diff)
	}
	seq := sequenceHashes(nil, got)
	if seq[1] != 4945711292740353085 || seq[2] != 12583592247330656132 {
		t.Errorf("sequence hashes = %v, want [_ 4945711292740353085 12583592247330656132]", seq)
	}
	lora := localHashes(nil, []uint32{0, 1, 2, 3, 4, 5, 6, 7}, 4, "adapter-a")
	if diff := cmp.Diff([]uint64{6665157333201000639, 11721812545976571723}, lora); diff != "" {
		t.Errorf("lora localHashes (-want +got):\n%s", diff)
	}
}

func TestLocalHashesMatchBlockhash(t *testing.T) {
	for _, bs := range []int{1, 3, 4, 16, 63, 64, 65, 128, 257} {
		for _, lora := range []string{"", "adapter-a"} {
			toks := tokens(11, 5, bs)
			toks = append(toks, 1, 2) // a partial block, ignored
			assertSameHashes(t, toks, bs, lora)
		}
	}
}

func assertSameHashes(t *testing.T, toks []uint32, bs int, lora string) {
	t.Helper()
	h, err := blockhash.NewHasher(bs, blockhash.Options{LoRAName: lora})
	if err != nil {
		t.Fatal(err)
	}
	want := h.LocalHashes(nil, toks)
	got := localHashes(nil, toks, bs, lora)
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("block size %d, lora %q (-blockhash +fast):\n%s", bs, lora, diff)
	}
}

func FuzzLocalHashes(f *testing.F) {
	f.Add([]byte{1, 2, 3, 4, 5, 6, 7, 8}, uint8(4), "")
	f.Add(make([]byte, 1024), uint8(128), "adapter-a")
	f.Fuzz(func(t *testing.T, raw []byte, bs uint8, lora string) {
		if bs == 0 {
			return
		}
		toks := make([]uint32, len(raw)/2)
		for i := range toks {
			toks[i] = uint32(raw[2*i])<<24 | uint32(raw[2*i+1])
		}
		assertSameHashes(t, toks, int(bs), lora)
	})
}

func BenchmarkLocalHashes(b *testing.B) {
	toks := tokens(0, 30, 128)
	dst := make([]uint64, 0, 30)
	b.ReportAllocs()
	for b.Loop() {
		dst = localHashes(dst[:0], toks, 128, "")
	}
}
