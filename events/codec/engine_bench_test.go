package codec

import (
	"bytes"
	"testing"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/kvrouter/router/indexer"
)

// engineBenchBatches are the engine batches the benchmarks decode: the
// documented two-block store in both encodings, a 1,024-token prefill in
// 16-token blocks (64 blocks), SGLang's one-page events (16 of them) and a
// batch of 16 single-block evictions, vLLM's shape; map events with "type"
// first, as msgspec writes them.
func engineBenchBatches(b *testing.B) []struct {
	name string
	msg  []byte
} {
	tokens := make(mpArr, 1024)
	for i := range tokens {
		tokens[i] = 1000 + i*37
	}
	hashes := make(mpArr, 64)
	extra := make(mpArr, 64)
	for i := range hashes {
		hashes[i] = uint64(12124091508212882195 - uint64(i)*7919)
	}
	prefill := mpArr{fixtureTS, mpArr{mpOrdered(b, "type", "BlockStored", "block_hashes", hashes, "parent_block_hash", uint64(9143094415614847814),
		"token_ids", tokens, "block_size", 16, "lora_id", nil, "medium", "GPU", "lora_name", nil, "extra_keys", extra,
		"group_idx", 0, "kv_cache_spec_kind", "full_attention")}, 0}
	var pages, evictions mpArr
	for i := range 16 {
		pages = append(pages, mpArr{"BlockStored", mpArr{-int64(i) * 7919}, int64(i), tokens[i*16 : (i+1)*16], 16, nil, "GPU"})
		evictions = append(evictions, mpOrdered(b, "type", "BlockRemoved", "block_hashes", mpArr{uint64(1<<63) + uint64(i)}, "medium", "GPU", "group_idx", 0))
	}
	return []struct {
		name string
		msg  []byte
	}{
		{"vllm_stored2", specFile(b, "vllm_spec_stored")},
		{"vllm_legacy_stored2", specFile(b, "vllm_spec_legacy_stored")},
		{"vllm_stored64", encodeFixture(b, prefill)},
		{"sglang_pages16", encodeFixture(b, mpArr{fixtureTS, pages, 1})},
		{"vllm_removed16", encodeFixture(b, mpArr{fixtureTS, evictions, 0})},
	}
}

// mpOrdered encodes a map with its keys in the order given, "type" first,
// as msgspec writes a tagged struct.
func mpOrdered(tb testing.TB, kv ...any) msgpack.RawMessage {
	tb.Helper()
	var buf bytes.Buffer
	enc := msgpack.NewEncoder(&buf)
	enc.UseCompactInts(true)
	err := enc.EncodeMapLen(len(kv) / 2)
	for i := 0; err == nil && i < len(kv); i += 2 {
		if err = enc.EncodeString(kv[i].(string)); err == nil {
			err = enc.Encode(kv[i+1])
		}
	}
	if err != nil {
		tb.Fatal(err)
	}
	return buf.Bytes()
}

// BenchmarkDecodeEngineBatch times decoding one engine batch into a reused
// EngineBatch, the transport's steady state.
//
//	go test ./events/codec/ -run '^$' -bench EngineBatch
func BenchmarkDecodeEngineBatch(b *testing.B) {
	for _, bb := range engineBenchBatches(b) {
		b.Run(bb.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(bb.msg)))
			var batch EngineBatch
			for b.Loop() {
				if err := DecodeEngineBatch(bb.msg, &batch); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkEngineConvert times converting a decoded batch's events into a
// reused index event (16-token blocks: hashing the tokens is most of it).
//
//	go test ./events/codec/ -run '^$' -bench EngineConvert
func BenchmarkEngineConvert(b *testing.B) {
	conv := mustConverter(b, 16)
	for _, bb := range engineBenchBatches(b)[2:] {
		b.Run(bb.name, func(b *testing.B) {
			var (
				batch EngineBatch
				out   indexer.Event
			)
			if err := DecodeEngineBatch(bb.msg, &batch); err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			for b.Loop() {
				for i := range batch.Events {
					if apply, o := conv.Convert(&batch.Events[i], indexer.Worker{ID: 1}, &out); !apply || o != OutcomeOK {
						b.Fatalf("Convert = %v, %v", apply, o)
					}
				}
			}
		})
	}
}
