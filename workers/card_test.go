package workers

import (
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/kvrouter/router/indexer"
)

func TestParseKey(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want key
		err  bool
	}{
		{name: "instance", in: "v1/instances/dynamo/backend/generate/694d9a5c8f3b2a10",
			want: key{bucket: bucketInstances, namespace: "dynamo", component: "backend", endpoint: "generate", id: 0x694d9a5c8f3b2a10}},
		{name: "zero padded id", in: "v1/instances/dynamo/backend/generate/000000000000002a",
			want: key{bucket: bucketInstances, namespace: "dynamo", component: "backend", endpoint: "generate", id: 42}},
		{name: "upper case id", in: "v1/instances/dynamo/backend/generate/2A",
			want: key{bucket: bucketInstances, namespace: "dynamo", component: "backend", endpoint: "generate", id: 42}},
		{name: "max id", in: "v1/mdc/ns/prefill/generate/ffffffffffffffff",
			want: key{bucket: bucketCards, namespace: "ns", component: "prefill", endpoint: "generate", id: 1<<64 - 1}},
		{name: "card with lora suffix", in: "v1/mdc/dynamo/backend/generate/2a/lora/adapter-a",
			want: key{bucket: bucketCards, namespace: "dynamo", component: "backend", endpoint: "generate", id: 42, suffix: "lora/adapter-a"}},
		{name: "other bucket", in: "v1/event_channels/dynamo/backend/kv/2a", err: true},
		{name: "missing id", in: "v1/instances/dynamo/backend/generate", err: true},
		{name: "trailing slash", in: "v1/instances/dynamo/backend/generate/", err: true},
		{name: "empty component", in: "v1/instances/dynamo//generate/2a", err: true},
		{name: "not hex", in: "v1/instances/dynamo/backend/generate/zz", err: true},
		{name: "0x prefix", in: "v1/instances/dynamo/backend/generate/0x2a", err: true},
		{name: "signed", in: "v1/instances/dynamo/backend/generate/-2a", err: true},
		{name: "over 64 bits", in: "v1/instances/dynamo/backend/generate/1ffffffffffffffff", err: true},
		{name: "suffix on an instance", in: "v1/instances/dynamo/backend/generate/2a/x", err: true},
		{name: "empty suffix", in: "v1/mdc/dynamo/backend/generate/2a/", err: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseKey(tt.in)
			if tt.err {
				if !errors.Is(err, errMalformed) {
					t.Fatalf("parseKey(%q) = %+v, %v; want an error wrapping errMalformed", tt.in, got, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("parseKey(%q): %v", tt.in, err)
			}
			if diff := cmp.Diff(tt.want, got, cmp.AllowUnexported(key{})); diff != "" {
				t.Errorf("parseKey(%q) (-want +got):\n%s", tt.in, diff)
			}
		})
	}
}

func TestDecodeInstance(t *testing.T) {
	k, err := parseKey(instanceKey("dynamo", "backend", 42))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		in   string
		err  bool
	}{
		{name: "dynamo's value", in: instanceValue("dynamo", "backend", 42)},
		{name: "minimal", in: `{}`},
		{name: "unknown fields", in: `{"type":"Endpoint","instance_id":42,"extra":[1,2]}`},
		{name: "not json", in: `hello`, err: true},
		{name: "null", in: `null`, err: true},
		{name: "array", in: `[]`, err: true},
		{name: "truncated", in: `{"type":"Endpoint"`, err: true},
		{name: "wrong type", in: `{"type":"Model"}`, err: true},
		{name: "id differs from the key", in: `{"instance_id":43}`, err: true},
		{name: "component differs from the key", in: `{"component":"prefill"}`, err: true},
		{name: "negative id", in: `{"instance_id":-1}`, err: true},
		{name: "id as string", in: `{"instance_id":"42"}`, err: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := decodeInstance(k, []byte(tt.in))
			switch {
			case tt.err && !errors.Is(err, errMalformed):
				t.Fatalf("decodeInstance(%s) = %v; want an error wrapping errMalformed", tt.in, err)
			case !tt.err && err != nil:
				t.Fatalf("decodeInstance(%s): %v", tt.in, err)
			}
		})
	}
}

func TestDecodeCard(t *testing.T) {
	k, err := parseKey(cardKey("dynamo", "backend", 42))
	if err != nil {
		t.Fatal(err)
	}
	full := card{model: "Qwen/Qwen3-0.6B", blockSize: 16, totalKVBlocks: 1000, maxNumSeqs: 256, maxNumBatchedTokens: 8192, dpStart: 2, dpSize: 4}
	tests := []struct {
		name string
		in   string
		want card
		err  bool
	}{
		{name: "dynamo's value", in: cardValue("dynamo", "backend", 42, cardSpec{blockSize: 16, totalKVBlocks: 1000, maxNumSeqs: 256, maxNumBatchedTokens: 8192, dpStart: 2, dpSize: 4}), want: full},
		{name: "nulls and defaults", in: `{"type":"Model","card_json":{"display_name":"m","kv_cache_block_size":64,"runtime_config":{"total_kv_blocks":null,"max_num_seqs":null}}}`,
			want: card{model: "m", blockSize: 64, dpSize: 1}},
		{name: "no runtime config", in: `{"card_json":{"kv_cache_block_size":64}}`, want: card{blockSize: 64, dpSize: 1}},
		{name: "card_json as a string", in: `{"card_json":"{\"kv_cache_block_size\":32}"}`, want: card{blockSize: 32, dpSize: 1}},
		{name: "bare card of older versions", in: `{"display_name":"m","kv_cache_block_size":16,"runtime_config":{"total_kv_blocks":5}}`,
			want: card{model: "m", blockSize: 16, totalKVBlocks: 5, dpSize: 1}},
		{name: "no card", in: `{"type":"Model","instance_id":42}`, err: true},
		{name: "null card", in: `{"card_json":null}`, err: true},
		{name: "wrong type", in: `{"type":"Endpoint","card_json":{}}`, err: true},
		{name: "id differs from the key", in: `{"instance_id":7,"card_json":{}}`, err: true},
		{name: "negative block size", in: `{"card_json":{"kv_cache_block_size":-16}}`, err: true},
		{name: "huge block size", in: `{"card_json":{"kv_cache_block_size":99999999999}}`, err: true},
		{name: "block size as string", in: `{"card_json":{"kv_cache_block_size":"16"}}`, err: true},
		{name: "dp size 0", in: `{"card_json":{"runtime_config":{"data_parallel_size":0}}}`, err: true},
		{name: "dp size huge", in: `{"card_json":{"runtime_config":{"data_parallel_size":100000}}}`, err: true},
		{name: "dp ranks past 2^32", in: `{"card_json":{"runtime_config":{"data_parallel_start_rank":4294967295,"data_parallel_size":2}}}`, err: true},
		{name: "negative blocks", in: `{"card_json":{"runtime_config":{"total_kv_blocks":-1}}}`, err: true},
		{name: "absurd blocks", in: `{"card_json":{"runtime_config":{"total_kv_blocks":18446744073709551615}}}`, err: true},
		{name: "not json", in: `{"card_json":`, err: true},
		{name: "card_json string of garbage", in: `{"card_json":"nope"}`, err: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := decodeCard(k, []byte(tt.in))
			if tt.err {
				if !errors.Is(err, errMalformed) {
					t.Fatalf("decodeCard(%s) = %+v, %v; want an error wrapping errMalformed", tt.in, got, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("decodeCard(%s): %v", tt.in, err)
			}
			if diff := cmp.Diff(tt.want, got, cmp.AllowUnexported(card{})); diff != "" {
				t.Errorf("decodeCard(%s) (-want +got):\n%s", tt.in, diff)
			}
		})
	}
}

func FuzzParseKey(f *testing.F) {
	for _, s := range []string{
		"v1/instances/dynamo/backend/generate/694d9a5c8f3b2a10",
		"v1/mdc/dynamo/prefill/generate/2a/lora",
		"v1/instances/dynamo/backend/generate/000000000000002A",
		"v1/mdc//x/y/z", "v1/instances/a/b/c/", "v1/mdc/a/b/c/d/e/f",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		k, err := parseKey(s)
		if err != nil {
			if !errors.Is(err, errMalformed) {
				t.Fatalf("parseKey(%q): error %v does not wrap errMalformed", s, err)
			}
			return
		}
		// A parsed key renders to a canonical key that parses back to it.
		again, err := parseKey(k.String())
		if err != nil {
			t.Fatalf("parseKey(%q) = %+v whose String %q does not parse: %v", s, k, k.String(), err)
		}
		if again != k {
			t.Fatalf("parseKey(%q) = %+v, but its String %q parses to %+v", s, k, k.String(), again)
		}
		if k.namespace == "" || k.component == "" || k.endpoint == "" {
			t.Fatalf("parseKey(%q) = %+v with an empty segment", s, k)
		}
	})
}

func FuzzDecodeCard(f *testing.F) {
	f.Add(cardValue("dynamo", "backend", 42, cardSpec{blockSize: 16, totalKVBlocks: 1000, dpStart: 1, dpSize: 2}))
	f.Add(`{"card_json":"{\"kv_cache_block_size\":32}"}`)
	f.Add(`{"display_name":"m","kv_cache_block_size":16}`)
	f.Add(`{"card_json":{"runtime_config":{"data_parallel_size":0}}}`)
	f.Add(instanceValue("dynamo", "backend", 42))
	k := key{bucket: bucketCards, namespace: "dynamo", component: "backend", endpoint: "generate", id: 42}
	f.Fuzz(func(t *testing.T, s string) {
		c, err := decodeCard(k, []byte(s))
		if err != nil {
			if !errors.Is(err, errMalformed) {
				t.Fatalf("decodeCard(%q): error %v does not wrap errMalformed", s, err)
			}
		} else {
			if c.dpSize < 1 || c.dpSize > MaxDPSize || uint64(c.dpStart)+uint64(c.dpSize) > 1<<32 {
				t.Fatalf("decodeCard(%q): ranks [%d, +%d) out of range", s, c.dpStart, c.dpSize)
			}
			if c.blockSize < 0 || c.blockSize > MaxBlockSize || c.totalKVBlocks < 0 || c.maxNumSeqs < 0 || c.maxNumBatchedTokens < 0 {
				t.Fatalf("decodeCard(%q) = %+v: a number out of range", s, c)
			}
			// A decoded card makes a worker with consistent candidates.
			w := Worker{ID: indexer.WorkerID(k.id), Type: TypeDecode, DPStart: c.dpStart, DPSize: c.dpSize}
			ranks := w.Ranks()
			if len(ranks) != int(c.dpSize) || !w.HasRank(ranks[0].DPRank) || !w.HasRank(ranks[len(ranks)-1].DPRank) {
				t.Fatalf("decodeCard(%q): ranks %v of %+v", s, ranks, w)
			}
		}
		if err := decodeInstance(key{bucket: bucketInstances, namespace: "dynamo", component: "backend", endpoint: "generate", id: 42}, []byte(s)); err != nil && !errors.Is(err, errMalformed) {
			t.Fatalf("decodeInstance(%q): error %v does not wrap errMalformed", s, err)
		}
	})
}

// What InstanceKey and InstanceValue write, the discovery decoders read
// back as the same instance.
func TestInstanceValueRoundTrip(t *testing.T) {
	const id = 0x694d98147d54c0a0
	k, err := parseKey(InstanceKey("dynamo", "router", "route", id))
	if err != nil {
		t.Fatal(err)
	}
	if uint64(k.id) != id {
		t.Fatalf("key id %x, want %x", k.id, uint64(id))
	}
	if err := decodeInstance(k, InstanceValue("dynamo", "router", "route", id, "namespace.dynamo.component.router.route")); err != nil {
		t.Fatalf("decodeInstance: %v", err)
	}
}
