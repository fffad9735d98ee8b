package sim

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/kvrouter/router/events/codec"
	"github.com/kvrouter/router/indexer"
)

var update = flag.Bool("update", false, "rewrite the golden files")

// golden compares got with testdata/sim/name, or rewrites it with -update.
func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("..", "testdata", "sim", name)
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(string(want), string(got)); diff != "" {
		t.Fatalf("%s differs (-want +got); rerun with -update if intended:\n%s", name, diff)
	}
}

// TestRouterEventWire pins the KV event JSON a worker publishes, and checks
// that the router's own decoder reads it back as the same event.
func TestRouterEventWire(t *testing.T) {
	evs := []Event{
		{Kind: EventStored, Blocks: []Block{{Hash: 100, TokensHash: 9143094415614847814}}},
		{Kind: EventStored, HasParent: true, Parent: 100, Blocks: []Block{{Hash: 1<<64 - 1, TokensHash: 1}, {Hash: 7, TokensHash: 2}}},
		{Kind: EventRemoved, Removed: []uint64{7, 1<<64 - 1}},
	}
	var all []byte
	for i, ev := range evs {
		msg := AppendRouterEvent(nil, 7587888160958628000, uint64(i), ev)
		all = append(append(all, msg...), '\n')
		got, meta, err := codec.DecodeJSON(msg)
		if err != nil {
			t.Fatalf("router decoder rejects %s: %v", msg, err)
		}
		if meta.EventID != uint64(i) || !meta.Device() {
			t.Fatalf("meta %+v: want event_id %d on the device tier", meta, i)
		}
		want := toIndexer(7587888160958628000, ev)
		if diff := cmp.Diff(want, got); diff != "" {
			t.Fatalf("decoded event (-want +got):\n%s", diff)
		}
	}
	golden(t, "router_events.jsonl", all)
}

// toIndexer converts a cache event into the index's form, as the router
// decodes it.
func toIndexer(worker uint64, ev Event) indexer.Event {
	ie := indexer.Event{Worker: indexer.Worker{ID: indexer.WorkerID(worker)}, HasParent: ev.HasParent, Parent: indexer.BlockHash(ev.Parent)}
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
	return ie
}

func TestLoadMessageWire(t *testing.T) {
	st := EngineStats{Running: 3, Waiting: 2, PromptBlocks: 10, CachedBlocks: 4,
		Cache: CacheStats{Capacity: 100, Referenced: 20, Reserved: 5}}
	golden(t, "load.json", append(marshalLoad(42, st, 256), '\n'))
}

func TestDecodeGenerateRequest(t *testing.T) {
	tests := []struct {
		name, body string
		want       GenerateRequest
		err        string
	}{
		{name: "valid", body: `{"request_id":"r","token_ids":[1,2,4294967295],"max_tokens":3,"extra":true}`,
			want: GenerateRequest{RequestID: "r", TokenIDs: []uint32{1, 2, 4294967295}, MaxTokens: 3}},
		{name: "not an object", body: `[1]`, err: "not a JSON object"},
		{name: "no id", body: `{"token_ids":[1],"max_tokens":1}`, err: "request_id"},
		{name: "no max_tokens", body: `{"request_id":"r","token_ids":[1]}`, err: "max_tokens"},
		{name: "zero max_tokens", body: `{"request_id":"r","token_ids":[1],"max_tokens":0}`, err: "max_tokens"},
		{name: "negative token", body: `{"request_id":"r","token_ids":[-1],"max_tokens":1}`, err: "token_ids"},
		{name: "token past u32", body: `{"request_id":"r","token_ids":[4294967296],"max_tokens":1}`, err: "token_ids"},
		{name: "empty prompt", body: `{"request_id":"r","token_ids":[],"max_tokens":1}`, err: "token_ids"},
		{name: "null prompt", body: `{"request_id":"r","token_ids":null,"max_tokens":1}`, err: "token_ids"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := DecodeGenerateRequest([]byte(tt.body))
			if tt.err != "" {
				if !errors.Is(err, ErrInvalidRequest) || !bytes.Contains([]byte(err.Error()), []byte(tt.err)) {
					t.Fatalf("err = %v, want ErrInvalidRequest naming %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Fatalf("(-want +got):\n%s", diff)
			}
		})
	}
}

// FuzzDecodeGenerateRequest feeds the decoder of outside input anything:
// it must not panic, and what it accepts must be within the limits and
// survive a round trip.
func FuzzDecodeGenerateRequest(f *testing.F) {
	f.Add([]byte(`{"request_id":"r","token_ids":[1,2,3],"max_tokens":3}`))
	f.Add([]byte(`{"request_id":"","token_ids":[1],"max_tokens":1}`))
	f.Add([]byte(`{"request_id":"r","token_ids":[1e3],"max_tokens":1.5}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := DecodeGenerateRequest(data)
		if err != nil {
			if !errors.Is(err, ErrInvalidRequest) {
				t.Fatalf("error %v does not wrap ErrInvalidRequest", err)
			}
			return
		}
		if r.RequestID == "" || len(r.RequestID) > MaxRequestIDLen || len(r.TokenIDs) == 0 ||
			len(r.TokenIDs) > MaxPromptTokens || r.MaxTokens < 1 || r.MaxTokens > MaxOutputTokens {
			t.Fatalf("accepted out of limits: %+v", r)
		}
		b, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		again, err := DecodeGenerateRequest(b)
		if err != nil {
			t.Fatalf("round trip of %s: %v", b, err)
		}
		if diff := cmp.Diff(r, again); diff != "" {
			t.Fatalf("round trip (-first +second):\n%s", diff)
		}
	})
}
