package codec

import (
	"encoding/binary"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/kvrouter/router/blockhash"
	"github.com/kvrouter/router/indexer"
	"github.com/kvrouter/router/internal/testutil"
	"github.com/kvrouter/router/metrics"
)

// FuzzDecodeEngineBatch: the engine batch decoder never panics; a rejected
// batch is a typed error and leaves nothing behind; an accepted one is within
// the limits, decodes the same into a used batch, and converts without panic
// under the rules of Convert for several router block sizes.
func FuzzDecodeEngineBatch(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join(engineDir, "*.hex"))
	for _, file := range files {
		f.Add(readHex(f, file))
	}
	for _, v := range []any{
		mpArr{0, mpArr{mpMap{"type": "BlockStored", "block_hashes": mpArr{1, 2}, "token_ids": mpArr{1, 2, 3, 4}, "block_size": 1,
			"lora_name": "x", "extra_keys": mpArr{mpArr{"x"}, mpArr{mpMap{"type": "mm", "hash": "h"}}}}}},
		mpArr{0, mpArr{mpArr{"BlockStored", mpArr{1}, nil, mpArr{mpArr{1, 2}}, 1}}},
		mpMap{"events": mpArr{mpArr{"BlockRemoved", mpArr{[]byte{1}}, "host", 0}}, "attn_dp_rank": 1},
	} {
		f.Add(encodeFixture(f, v))
	}
	used := readHex(f, filepath.Join(engineDir, "vllm_mm.hex"))
	var convs []*EngineConverter
	for _, bs := range []int{1, 4, 16} {
		convs = append(convs, mustConverter(f, bs))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var b EngineBatch
		err := DecodeEngineBatch(data, &b)
		if err != nil {
			checkEngineRejection(t, &b, err)
			return
		}
		checkEngineBatch(t, &b)
		var again EngineBatch
		if err := DecodeEngineBatch(used, &again); err != nil {
			t.Fatal(err)
		}
		if err := DecodeEngineBatch(data, &again); err != nil || !cmp.Equal(b, again, batchOpts) {
			t.Fatalf("decoding into a used batch gave %+v (%v), into a new one %+v", again, err, b)
		}
		var out indexer.Event
		for _, c := range convs {
			for i := range b.Events {
				checkConvert(t, c, &b.Events[i], &out)
			}
		}
	})
}

// checkEngineRejection fails unless err is a *DecodeError with a reason the
// engine decoder may give and b is empty.
func checkEngineRejection(t *testing.T, b *EngineBatch, err error) {
	t.Helper()
	var de *DecodeError
	if !errors.As(err, &de) {
		t.Fatalf("error is not a *DecodeError: %T %v", err, err)
	}
	switch reasonOf(de) {
	case metrics.DecodeMsgpack, metrics.DecodeSchema, reasonTooLarge:
	default:
		t.Fatalf("reason %q for %v", reasonOf(de), err)
	}
	if !cmp.Equal(*b, EngineBatch{}, batchOpts) {
		t.Fatalf("a rejected batch left data: %+v", *b)
	}
}

// checkEngineBatch fails unless an accepted batch is within the limits and
// its skipped events carry nothing.
func checkEngineBatch(t *testing.T, b *EngineBatch) {
	t.Helper()
	if len(b.Events) > MaxEventsPerBatch {
		t.Fatalf("%d events", len(b.Events))
	}
	for i := range b.Events {
		ev := &b.Events[i]
		switch {
		case ev.Skip == OutcomeUnknownTag && ev.Kind != 0,
			ev.Skip == OutcomeOK && (ev.Kind < indexer.KindStored || ev.Kind > indexer.KindCleared),
			ev.Skip != OutcomeOK && ev.Skip != OutcomeUnknownTag && ev.Skip != OutcomeEagle:
			t.Fatalf("events[%d]: kind %v, skip %v", i, ev.Kind, ev.Skip)
		case ev.Skip != OutcomeOK && (len(ev.Hashes) > 0 || len(ev.TokenIDs) > 0 || ev.HasParent || ev.Opaque):
			t.Fatalf("events[%d]: a skipped event carries data: %+v", i, ev)
		case len(ev.Hashes) > MaxBlocksPerEvent, len(ev.TokenIDs) > MaxBlocksPerEvent*max(1, ev.BlockSize),
			ev.BlockSize < 0 || ev.BlockSize > blockhash.MaxBlockSize, ev.OpaqueFrom < 0, !ev.Opaque && ev.OpaqueFrom != 0:
			t.Fatalf("events[%d]: out of range: %+v", i, ev)
		}
	}
}

// checkConvert converts ev and fails unless the result obeys Convert's
// rules.
func checkConvert(t *testing.T, c *EngineConverter, ev *EngineEvent, out *indexer.Event) {
	t.Helper()
	rank := indexer.Worker{ID: 1, DPRank: 2}
	apply, o := c.Convert(ev, rank, out)
	partial := o == OutcomePartialBlock || o == OutcomeExtraKeys
	if strings.HasPrefix(o.String(), "outcome(") || !apply && o == OutcomeOK || apply && o != OutcomeOK && !partial {
		t.Fatalf("Convert = %v, %v", apply, o)
	}
	if !apply {
		return
	}
	if out.Worker != rank || out.Tier >= indexer.NumTiers {
		t.Fatalf("converted %+v", out)
	}
	switch out.Kind {
	case indexer.KindCleared:
		if len(out.Blocks)+len(out.Removed) > 0 {
			t.Fatalf("cleared with data: %+v", out)
		}
	case indexer.KindRemoved:
		if len(out.Removed) != len(ev.Hashes) || len(out.Blocks) > 0 {
			t.Fatalf("removed %d of %d hashes: %+v", len(out.Removed), len(ev.Hashes), out)
		}
	case indexer.KindStored:
		n := len(out.Blocks)
		if n == 0 || n > len(ev.Hashes) || len(out.Removed) > 0 || (o == OutcomeOK) != (n == len(ev.Hashes)) {
			t.Fatalf("stored %d blocks of %d hashes, %v: %+v", n, len(ev.Hashes), o, out)
		}
		bs := c.BlockSize()
		seed := blockhash.Seed(ev.LoraName, "")
		for i, blk := range out.Blocks {
			if uint64(blk.Hash) != ev.Hashes[i] {
				t.Fatalf("block %d has hash %d, the engine's is %d", i, blk.Hash, ev.Hashes[i])
			}
			if out.ByHash {
				continue
			}
			if want := blockhash.LocalHashesSeed(nil, ev.TokenIDs[i*bs:(i+1)*bs], bs, seed)[0]; uint64(blk.Tokens) != want {
				t.Fatalf("block %d tokens hash %d, want %d", i, blk.Tokens, want)
			}
		}
		if out.ByHash != (len(ev.TokenIDs) == 0) || (!out.ByHash && (ev.BlockSize != bs || ev.Opaque && ev.OpaqueFrom < n)) {
			t.Fatalf("stored %+v from %+v", out, ev)
		}
	default:
		t.Fatalf("converted to kind %v", out.Kind)
	}
}

// FuzzDecodeEventPlaneFrame: the event-plane frame reader never panics,
// rejects with a typed error, and returns exactly the bytes its header
// announces, which Decode reads without panicking.
func FuzzDecodeEventPlaneFrame(f *testing.F) {
	for _, s := range seedEvents {
		env := testutil.AppendMsgpackEnvelope(nil, s.ev, s.meta.EventID)
		frame := binary.BigEndian.AppendUint32([]byte{EventPlaneVersion}, uint32(len(env)))
		f.Add(append(frame, env...))
	}
	f.Add([]byte{1, 0, 0, 0, 0})
	f.Add([]byte{2, 0, 0, 0, 1, 0x80})
	f.Fuzz(func(t *testing.T, frame []byte) {
		env, err := DecodeEventPlaneFrame(frame)
		if err != nil {
			var de *DecodeError
			if !errors.As(err, &de) || !(errors.Is(err, ErrFrame) || errors.Is(err, ErrTooLarge)) || env != nil {
				t.Fatalf("DecodeEventPlaneFrame = %x, %v", env, err)
			}
			return
		}
		if frame[0] != EventPlaneVersion || int(binary.BigEndian.Uint32(frame[1:5])) != len(env) || len(env) != len(frame)-5 {
			t.Fatalf("accepted % x as %x", frame, env)
		}
		if ev, meta, err := Decode(env); err != nil {
			checkRejection(t, ev, meta, err)
		} else {
			checkEvent(t, ev)
		}
	})
}
