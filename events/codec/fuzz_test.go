package codec

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/kvrouter/router/indexer"
	"github.com/kvrouter/router/metrics"
)

// seedEvents are events of every kind and shape for fuzz seeds.
var seedEvents = []struct {
	ev   indexer.Event
	meta Meta
}{
	{indexer.Event{Worker: indexer.Worker{ID: 7, DPRank: 1}, Kind: indexer.KindStored, Blocks: []indexer.Block{{Hash: 1, Tokens: 2}}}, Meta{EventID: 1}},
	{indexer.Event{Worker: indexer.Worker{ID: 1<<64 - 1}, Kind: indexer.KindStored, HasParent: true, Parent: 1 << 63,
		Blocks: []indexer.Block{{Hash: 3, Tokens: 4}, {Hash: 5, Tokens: 6}}, Tier: indexer.TierHost}, Meta{EventID: 1 << 40, StorageTier: TierHostPinned}},
	{indexer.Event{Worker: indexer.Worker{ID: 7}, Kind: indexer.KindRemoved, Removed: []indexer.BlockHash{1, 1<<64 - 1}}, Meta{EventID: 2}},
	{indexer.Event{Worker: indexer.Worker{ID: 7}, Kind: indexer.KindCleared, Tier: indexer.TierDisk}, Meta{EventID: 3, CacheOwner: true, StorageTier: TierDisk}},
}

// checkRejection fails unless err is a *DecodeError with a known reason.
func checkRejection(t *testing.T, ev indexer.Event, meta Meta, err error) {
	t.Helper()
	var de *DecodeError
	if !errors.As(err, &de) {
		t.Fatalf("error is not a *DecodeError: %T %v", err, err)
	}
	switch reasonOf(de) {
	case metrics.DecodeJSON, metrics.DecodeMsgpack, metrics.DecodeSchema, reasonTooLarge:
	default:
		t.Fatalf("unknown reason %q", reasonOf(de))
	}
	if !cmp.Equal(ev, indexer.Event{}) || meta != (Meta{}) {
		t.Fatalf("a rejected message returned data: %+v %+v", ev, meta)
	}
}

// checkEvent fails unless a decoded event is within the limits.
func checkEvent(t *testing.T, ev indexer.Event) {
	t.Helper()
	if ev.Kind < indexer.KindStored || ev.Kind > indexer.KindCleared {
		t.Fatalf("decoded an event of kind %v", ev.Kind)
	}
	if len(ev.Blocks) > MaxBlocksPerEvent || len(ev.Removed) > MaxBlocksPerEvent {
		t.Fatalf("decoded %d blocks and %d removals, over the limit", len(ev.Blocks), len(ev.Removed))
	}
	if (ev.Kind != indexer.KindStored && (len(ev.Blocks) > 0 || ev.HasParent)) || (ev.Kind != indexer.KindRemoved && len(ev.Removed) > 0) {
		t.Fatalf("decoded fields of another kind: %+v", ev)
	}
}

// FuzzDecodeJSON: the JSON decoder never panics, rejects with a typed error,
// and what it accepts survives AppendJSON and decoding again unchanged.
func FuzzDecodeJSON(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join(goldenDir, "*.json"))
	for _, file := range files {
		b, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	for _, s := range seedEvents {
		f.Add(AppendJSON(nil, s.ev, s.meta))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		ev, meta, err := DecodeJSON(data)
		if err != nil {
			checkRejection(t, ev, meta, err)
			return
		}
		checkEvent(t, ev)
		if meta.Encoding != EncodingJSON {
			t.Fatalf("encoding %v", meta.Encoding)
		}
		if ev2, meta2, err := Decode(data); err != nil || !cmp.Equal(ev, ev2) || meta != meta2 {
			t.Fatalf("Decode disagrees with DecodeJSON: %+v %+v %v", ev2, meta2, err)
		}
		again := AppendJSON(nil, ev, meta)
		ev2, meta2, err := DecodeJSON(again)
		if err != nil {
			t.Fatalf("re-encoded event %s does not decode: %v", again, err)
		}
		if !cmp.Equal(ev, ev2) || meta != meta2 {
			t.Fatalf("round trip changed the event:\n%+v %+v\n%+v %+v", ev, meta, ev2, meta2)
		}
	})
}

// FuzzDecodeMsgpack: the MessagePack decoder never panics, rejects with a
// typed error, and what it accepts survives re-encoding (as rmp_serde would,
// with a MessagePack library) and decoding again unchanged.
func FuzzDecodeMsgpack(f *testing.F) {
	for _, s := range seedEvents {
		for _, compact := range []bool{true, false} {
			p := mpPayload(f, s.ev, s.meta, compact)
			f.Add(mpEnvelopeOf(f, p, 1, compact))
			f.Add(p)
		}
		f.Add(mpEnvelopeOf(f, AppendJSON(nil, s.ev, s.meta), 1, true))
	}
	variants := []any{map[int]any{1: map[string]any{"block_hashes": []int64{-1}}}, 2, map[string]any{"cleared": nil}}
	for _, v := range variants {
		b, err := msgpack.Marshal(map[string]any{"worker_id": 7, "event": map[string]any{"event_id": 3, "dp_rank": nil, "data": v}})
		if err != nil {
			f.Fatal(err)
		}
		f.Add(mpEnvelopeOf(f, b, 1, true))
	}
	f.Add([]byte{0xdf, 0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, data []byte) {
		ev, meta, err := DecodeMsgpack(data)
		if err != nil {
			checkRejection(t, ev, meta, err)
			return
		}
		checkEvent(t, ev)
		if meta.Encoding != EncodingMsgpack {
			t.Fatalf("encoding %v", meta.Encoding)
		}
		again := mpEnvelopeOf(t, mpPayload(t, ev, meta, true), meta.Sequence, true)
		ev2, meta2, err := DecodeMsgpack(again)
		if err != nil {
			t.Fatalf("re-encoded event % x does not decode: %v", again, err)
		}
		if !cmp.Equal(ev, ev2) || meta.EventID != meta2.EventID || meta.StorageTier != meta2.StorageTier || meta.CacheOwner != meta2.CacheOwner {
			t.Fatalf("round trip changed the event:\n%+v %+v\n%+v %+v", ev, meta, ev2, meta2)
		}
	})
}
