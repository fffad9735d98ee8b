package codec

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/kvrouter/router/indexer"
)

// engineDir holds the engine batches: the worked examples of
// docs/compat.md §11.8 (vllm_spec_*, written from the documented bytes) and
// the batches of engineFixtures (encoded from Go values), each with the
// .golden file of what DecodeEngineBatch and Convert make of it.
const engineDir = "../../testdata/engine"

// goldenBlockSize is the router's block size for the golden files.
const goldenBlockSize = 4

type (
	mpMap = map[string]any
	mpArr = []any
)

// fixtureTS is the batches' timestamp, 2026-01-01T00:00:00.5Z.
const fixtureTS = 1767225600.5

// engineFixtures are the batches of testdata/engine that are not the
// documented examples, as the Go values they encode: MessagePack with the
// smallest integer forms, float64 floats and map keys sorted (so that
// "type" often comes last). TestEngineFixtures checks the files against
// them; -update rewrites the files.
func engineFixtures() map[string]any {
	const (
		h1 = int64(-3541243587134297958) // SGLang's hashes are signed
		h2 = int64(6121001409856932931)
	)
	const lora = "sql-lora"
	const mm = "0f5e4b4fd3a8d2a64e1a6a48d1b3f6ab2f7fb0c4b2d41c8bd1a1a2a3a4a5a6a7"
	digest := make([]byte, 32) // a raw sha256 digest, VLLM_KV_EVENTS_USE_INT_BLOCK_HASHES=0
	for i := range digest {
		digest[i] = byte(i + 1)
	}
	return map[string]any{
		// SGLang: positional events, one page per event, signed hashes,
		// attn_dp_rank; a partial last page.
		"sglang_stored": mpArr{fixtureTS, mpArr{
			mpArr{"BlockStored", mpArr{h1}, nil, mpArr{1, 2, 3, 4}, 4, nil, "GPU"},
			mpArr{"BlockStored", mpArr{h2}, h1, mpArr{5, 6, 7, 8}, 4, nil, "GPU"},
			mpArr{"BlockStored", mpArr{int64(-1)}, h2, mpArr{9, 10}, 4, nil, "GPU"},
		}, 1},
		"sglang_removed_cpu": mpArr{fixtureTS, mpArr{
			mpArr{"BlockStored", mpArr{h1}, nil, mpArr{}, 4, nil, "CPU_PINNED"},
			mpArr{"BlockRemoved", mpArr{h1}, "CPU_PINNED"},
			mpArr{"BlockRemoved", mpArr{h2}, nil},
			mpArr{"AllBlocksCleared"},
		}, 2},
		// BlockStoredWithMetadata: tagged BlockStored, metadata where vLLM
		// has lora_name.
		"sglang_salted": mpArr{fixtureTS, mpArr{
			mpArr{"BlockStored", mpArr{h1}, nil, mpArr{1, 2, 3, 4}, 4, nil, "GPU", mpMap{"cache_salt": "tenant-a"}},
			mpArr{"BlockStored", mpArr{h2}, nil, mpArr{1, 2, 3, 4}, 4, nil, "GPU", mpMap{"cache_salt": nil}},
		}, nil},
		// The first SGLang (and vLLM) shapes: no medium, a two-element batch.
		"sglang_early": mpArr{fixtureTS, mpArr{
			mpArr{"BlockStored", mpArr{h1}, nil, mpArr{1, 2, 3, 4}, 4, nil},
			mpArr{"BlockRemoved", mpArr{h1}},
		}},
		"sglang_map_batch": mpMap{"ts": fixtureTS, "attn_dp_rank": 3, "events": mpArr{
			mpArr{"BlockStored", mpArr{h1}, nil, mpArr{1, 2, 3, 4}, 4, nil, "GPU"},
		}},
		// The LoRA check of §11.8: block 1..4 under sql-lora.
		"vllm_lora": mpArr{fixtureTS, mpArr{
			mpMap{"type": "BlockStored", "block_hashes": mpArr{uint64(3238220789867815757)}, "parent_block_hash": nil, "token_ids": mpArr{1, 2, 3, 4},
				"block_size": 4, "lora_id": 1, "medium": "GPU", "lora_name": lora, "extra_keys": mpArr{mpArr{lora}}, "group_idx": 0, "kv_cache_spec_kind": "full_attention"},
		}, 0},
		// A multimodal prompt: the second block's hash covers an image.
		"vllm_mm": mpArr{fixtureTS, mpArr{
			mpMap{"type": "BlockStored", "block_hashes": mpArr{uint64(11), uint64(12), uint64(13)}, "parent_block_hash": uint64(10),
				"token_ids": mpArr{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}, "block_size": 4, "lora_id": nil, "medium": "GPU", "lora_name": nil,
				"extra_keys": mpArr{nil, mpArr{mm}, mpArr{mpArr{mm, 0}}}},
		}, 0},
		// An offloading connector's copies, and a medium nobody sends.
		"vllm_offload": mpArr{fixtureTS, mpArr{
			mpMap{"type": "BlockStored", "block_hashes": mpArr{uint64(1882140585328457242), uint64(15284023028817948126)}, "parent_block_hash": nil,
				"token_ids": mpArr{}, "block_size": 0, "lora_id": nil, "medium": "CPU", "lora_name": nil},
			mpMap{"type": "BlockRemoved", "block_hashes": mpArr{uint64(1882140585328457242), uint64(15284023028817948126)}, "medium": "cpu"},
			mpMap{"type": "BlockStored", "block_hashes": mpArr{uint64(1)}, "parent_block_hash": nil,
				"token_ids": mpArr{}, "block_size": 16, "lora_id": nil, "medium": "TAPE", "lora_name": nil},
		}, 0},
		// Hybrid models: a sliding-window group, a removal in group 2, and
		// an MLA group that is the main one.
		"vllm_hma": mpArr{fixtureTS, mpArr{
			mpMap{"type": "BlockStored", "block_hashes": mpArr{uint64(21)}, "parent_block_hash": nil, "token_ids": mpArr{1, 2, 3, 4},
				"block_size": 4, "lora_id": nil, "medium": "GPU", "lora_name": nil, "group_idx": 1, "kv_cache_spec_kind": "sliding_window", "kv_cache_spec_sliding_window": 128},
			mpMap{"type": "BlockRemoved", "block_hashes": mpArr{uint64(22)}, "medium": "GPU", "group_idx": 2},
			mpMap{"type": "BlockStored", "block_hashes": mpArr{uint64(23)}, "parent_block_hash": nil, "token_ids": mpArr{1, 2, 3, 4},
				"block_size": 4, "lora_id": nil, "medium": "GPU", "lora_name": nil, "group_idx": 1, "kv_cache_spec_kind": "MLA_ATTENTION"},
		}, 0},
		"vllm_bin_hash": mpArr{fixtureTS, mpArr{
			mpArr{"BlockStored", mpArr{digest, []byte{0x01, 0x02}}, digest, mpArr{1, 2, 3, 4, 5, 6, 7, 8}, 4, nil, "GPU"},
		}, 0},
		// EAGLE pairs, two unknown tags, and a block size the router does
		// not use.
		"vllm_eagle_unknown": mpArr{fixtureTS, mpArr{
			mpMap{"type": "BlockStored", "block_hashes": mpArr{uint64(31)}, "parent_block_hash": nil, "token_ids": mpArr{mpArr{1, 2}, mpArr{2, 3}},
				"block_size": 2, "lora_id": nil, "medium": "GPU", "lora_name": nil},
			mpMap{"type": "BlockPinned", "block_hashes": mpArr{uint64(31)}, "reason": mpMap{"deep": mpArr{1, 2}}},
			mpArr{"BlockMoved", 1, 2, 3},
			mpMap{"type": "BlockStored", "block_hashes": mpArr{uint64(32)}, "parent_block_hash": nil, "token_ids": mpArr{1, 2, 3, 4, 5, 6, 7, 8},
				"block_size": 8, "lora_id": nil, "medium": "GPU", "lora_name": nil},
		}, 0},
		"vllm_map_batch": mpMap{"ts": 1767225600, "data_parallel_rank": 1, "events": mpArr{mpMap{"type": "AllBlocksCleared"}}, "future": mpArr{1}},

		"bad_token_negative":  mpArr{fixtureTS, mpArr{mpMap{"type": "AllBlocksCleared"}, mpArr{"BlockStored", mpArr{1, 2}, nil, mpArr{1, 2, 3, 4, 5, -6, 7, 8}, 4}}, 0},
		"bad_token_over_u32":  mpArr{fixtureTS, mpArr{mpArr{"BlockStored", mpArr{1}, nil, mpArr{1, 2, 3, uint64(1) << 32}, 4}}, 0},
		"bad_hash_float":      mpArr{fixtureTS, mpArr{mpArr{"BlockRemoved", mpArr{1.5}}}, 0},
		"bad_hash_empty_bin":  mpArr{fixtureTS, mpArr{mpArr{"BlockRemoved", mpArr{[]byte{}}}}, 0},
		"bad_medium_int":      mpArr{fixtureTS, mpArr{mpMap{"type": "BlockRemoved", "block_hashes": mpArr{1}, "medium": 7}}, 0},
		"bad_batch_short":     mpArr{fixtureTS},
		"bad_dp_rank":         mpArr{fixtureTS, mpArr{}, -1},
		"bad_dp_rank_u32":     mpMap{"ts": fixtureTS, "events": mpArr{}, "attn_dp_rank": uint64(1) << 32},
		"bad_missing_type":    mpArr{fixtureTS, mpArr{mpMap{"block_hashes": mpArr{1}}}, 0},
		"bad_event_string":    mpArr{fixtureTS, mpArr{"BlockStored"}, 0},
		"bad_tag_int":         mpArr{fixtureTS, mpArr{mpArr{3, mpArr{1}}}, 0},
		"bad_block_size":      mpArr{fixtureTS, mpArr{mpArr{"BlockStored", mpArr{1}, nil, mpArr{1}, 1 << 20}}, 0},
		"bad_group_negative":  mpArr{fixtureTS, mpArr{mpMap{"type": "BlockRemoved", "block_hashes": mpArr{1}, "group_idx": -1}}, 0},
		"bad_extra_keys_type": mpArr{fixtureTS, mpArr{mpMap{"type": "BlockStored", "block_hashes": mpArr{1}, "extra_keys": "x"}}, 0},
		"bad_metadata_salt":   mpArr{fixtureTS, mpArr{mpArr{"BlockStored", mpArr{1}, nil, mpArr{1}, 1, nil, "GPU", mpMap{"cache_salt": 5}}}, 0},
		"bad_lora_map":        mpArr{fixtureTS, mpArr{mpMap{"type": "BlockStored", "block_hashes": mpArr{1}, "lora_name": mpMap{}}}, 0},
		"bad_batch_no_events": mpMap{"ts": fixtureTS},
		"bad_ts_string":       mpArr{"now", mpArr{}, 0},
	}
}

// encodeFixture encodes a fixture value as engineFixtures says.
func encodeFixture(t testing.TB, v any) []byte {
	t.Helper()
	var b bytes.Buffer
	enc := msgpack.NewEncoder(&b)
	enc.UseCompactInts(true)
	enc.SetSortMapKeys(true)
	if err := enc.Encode(v); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// readHex reads a .hex file: the bytes in hex, white space ignored.
func readHex(t testing.TB, path string) []byte {
	t.Helper()
	text, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b, err := hex.DecodeString(strings.Join(strings.Fields(string(text)), ""))
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return b
}

// TestEngineFixtures checks that the fixture files are the encodings of
// engineFixtures (-update writes them).
func TestEngineFixtures(t *testing.T) {
	for name, v := range engineFixtures() {
		path := filepath.Join(engineDir, name+".hex")
		want := encodeFixture(t, v)
		if *update {
			if err := os.WriteFile(path, []byte(hex.EncodeToString(want)+"\n"), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		if got := readHex(t, path); !bytes.Equal(got, want) {
			t.Errorf("%s is not the encoding of its fixture (go test ./events/codec/ -run TestEngineFixtures -update rewrites it)", path)
		}
	}
}

// renderEngine prints what DecodeEngineBatch and Convert (with the
// router's block size goldenBlockSize) make of a batch, for golden files.
func renderEngine(t testing.TB, batch *EngineBatch, err error) string {
	if err != nil {
		var de *DecodeError
		if !errors.As(err, &de) {
			return "error (not a *DecodeError): " + err.Error() + "\n"
		}
		return fmt.Sprintf("reject reason=%s field=%q\n%v\n", reasonOf(de), de.Field, err)
	}
	conv, cerr := NewEngineConverter(goldenBlockSize)
	if cerr != nil {
		t.Fatal(cerr)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "batch ts=%v dp_rank=%d has_dp_rank=%v events=%d\n", batch.TS, batch.DPRank, batch.HasDPRank, len(batch.Events))
	for i := range batch.Events {
		ev := &batch.Events[i]
		fmt.Fprintf(&b, "events[%d] kind=%v skip=%v hashes=%v has_parent=%v parent=%d tokens=%v block_size=%d lora=%q medium=%q has_group=%v group=%d spec_kind=%q opaque=%v opaque_from=%d\n",
			i, ev.Kind, ev.Skip, ev.Hashes, ev.HasParent, ev.Parent, ev.TokenIDs, ev.BlockSize, ev.LoraName, ev.Medium, ev.HasGroup, ev.GroupIdx, ev.SpecKind, ev.Opaque, ev.OpaqueFrom)
		var out indexer.Event
		apply, o := conv.Convert(ev, indexer.Worker{ID: 7, DPRank: batch.DPRank}, &out)
		fmt.Fprintf(&b, "  convert: apply=%v outcome=%v", apply, o)
		if apply {
			fmt.Fprintf(&b, " kind=%v tier=%v by_hash=%v has_parent=%v parent=%d blocks=%v removed=%v", out.Kind, out.Tier, out.ByHash, out.HasParent, out.Parent, out.Blocks, out.Removed)
		}
		b.WriteByte('\n')
	}
	return b.String()
}

// TestEngineGolden decodes and converts every testdata/engine/*.hex and
// compares the outcome with the .golden file beside it (-update rewrites
// them). bad_* files must be rejected, the others accepted.
func TestEngineGolden(t *testing.T) {
	inputs, err := filepath.Glob(filepath.Join(engineDir, "*.hex"))
	if err != nil || len(inputs) == 0 {
		t.Fatalf("no inputs in %s: %v", engineDir, err)
	}
	sort.Strings(inputs)
	for _, in := range inputs {
		name := strings.TrimSuffix(filepath.Base(in), ".hex")
		t.Run(name, func(t *testing.T) {
			var batch EngineBatch
			derr := DecodeEngineBatch(readHex(t, in), &batch)
			got := renderEngine(t, &batch, derr)
			if strings.HasPrefix(name, "bad_") != (derr != nil) {
				t.Errorf("bad_ files must be rejected and others accepted; got\n%s", got)
			}
			golden := strings.TrimSuffix(in, ".hex") + ".golden"
			if *update {
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("read golden (go test ./events/codec/ -run TestEngineGolden -update writes it): %v", err)
			}
			if diff := cmp.Diff(string(want), got); diff != "" {
				t.Errorf("outcome differs from %s (-want +got):\n%s", golden, diff)
			}
		})
	}
}
