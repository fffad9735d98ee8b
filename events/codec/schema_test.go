package codec

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/kvrouter/router/indexer"
)

// TestSchemaAgreement decodes the same RouterEvents, written as JSON and as
// MessagePack, and checks that both encodings read the one schema alike:
// the same event, or a rejection for the same reason and field.
func TestSchemaAgreement(t *testing.T) {
	block := func(h, tok int64) map[string]any {
		return map[string]any{"block_hash": h, "tokens_hash": tok, "mm_extra_info": nil}
	}
	event := func(body map[string]any) map[string]any {
		return map[string]any{"worker_id": 7, "storage_tier": "device", "event": body}
	}
	stored := func(blocks ...any) map[string]any {
		return event(map[string]any{"event_id": 3, "dp_rank": 1, "data": map[string]any{"stored": map[string]any{"parent_hash": nil, "blocks": blocks}}})
	}
	tests := []struct {
		name   string
		in     map[string]any
		reason string // empty: accepted
		field  string
	}{
		{name: "stored", in: stored(block(1, 2), block(-1, 3))},
		{name: "removed", in: event(map[string]any{"event_id": 3, "data": map[string]any{"removed": map[string]any{"block_hashes": []int64{5, -5}}}})},
		{name: "cleared", in: event(map[string]any{"event_id": 3, "data": "cleared"})},
		{name: "cleared tagged", in: event(map[string]any{"event_id": 3, "data": map[string]any{"cleared": nil}})},
		{name: "cache owner on disk", in: map[string]any{"worker_id": 7, "storage_tier": "disk", "residency_domain": "cache_owner",
			"event": map[string]any{"event_id": 3, "data": "cleared"}}},
		{name: "unknown fields skipped", in: map[string]any{"worker_id": 7, "state_source": map[string]any{"x": []any{1, "a"}},
			"event": map[string]any{"event_id": 3, "data": "cleared", "later": true}}},

		{name: "missing tokens_hash", in: stored(block(1, 2), map[string]any{"block_hash": 5}), reason: "schema", field: "event.data.stored.blocks[1].tokens_hash"},
		{name: "block not a map", in: stored(block(1, 2), 7), reason: "schema", field: "event.data.stored.blocks[1]"},
		{name: "block hash a string", in: stored(map[string]any{"block_hash": "1", "tokens_hash": 2}), reason: "schema", field: "event.data.stored.blocks[0].block_hash"},
		{name: "missing blocks", in: event(map[string]any{"event_id": 3, "data": map[string]any{"stored": map[string]any{}}}), reason: "schema", field: "event.data.stored.blocks"},
		{name: "missing worker_id", in: map[string]any{"event": map[string]any{"event_id": 3, "data": "cleared"}}, reason: "schema", field: "worker_id"},
		{name: "missing event_id", in: event(map[string]any{"data": "cleared"}), reason: "schema", field: "event.event_id"},
		{name: "dp_rank over u32", in: event(map[string]any{"event_id": 3, "dp_rank": uint64(1) << 32, "data": "cleared"}), reason: "schema", field: "event.dp_rank"},
		{name: "start_position over u32", in: event(map[string]any{"event_id": 3, "data": map[string]any{"stored": map[string]any{"start_position": uint64(1) << 32, "blocks": []any{}}}}), reason: "schema", field: "event.data.stored.start_position"},
		{name: "negative event_id", in: event(map[string]any{"event_id": -1, "data": "cleared"}), reason: "schema", field: "event.event_id"},
		{name: "unknown variant", in: event(map[string]any{"event_id": 3, "data": map[string]any{"evicted": nil}}), reason: "schema", field: "event.data"},
		{name: "bare stored", in: event(map[string]any{"event_id": 3, "data": "stored"}), reason: "schema", field: "event.data"},
		{name: "unknown tier", in: map[string]any{"worker_id": 7, "storage_tier": "gpu", "event": map[string]any{"event_id": 3, "data": "cleared"}}, reason: "schema", field: "storage_tier"},
		{name: "residency null", in: map[string]any{"worker_id": 7, "residency_domain": nil, "event": map[string]any{"event_id": 3, "data": "cleared"}}, reason: "schema", field: "residency_domain"},
		{name: "cleared with a value", in: event(map[string]any{"event_id": 3, "data": map[string]any{"cleared": 1}}), reason: "schema", field: "event.data.cleared"},
		{name: "too deep", in: map[string]any{"worker_id": 7, "x": nest(70), "event": map[string]any{"event_id": 3, "data": "cleared"}}, reason: reasonTooLarge, field: "x"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			js, err := json.Marshal(tt.in)
			if err != nil {
				t.Fatal(err)
			}
			var mp bytes.Buffer
			enc := msgpack.NewEncoder(&mp)
			enc.SetSortMapKeys(true)
			enc.UseCompactInts(true)
			if err := enc.Encode(tt.in); err != nil {
				t.Fatal(err)
			}
			jev, jmeta, jerr := DecodeJSON(js)
			mev, mmeta, merr := DecodeMsgpack(mp.Bytes())
			if tt.reason == "" {
				if jerr != nil || merr != nil {
					t.Fatalf("rejected: json %v, msgpack %v", jerr, merr)
				}
				if diff := cmp.Diff(jev, mev); diff != "" {
					t.Errorf("events differ (-json +msgpack):\n%s", diff)
				}
				jmeta.Encoding = EncodingMsgpack
				if jmeta != mmeta {
					t.Errorf("metas differ: json %+v, msgpack %+v", jmeta, mmeta)
				}
				return
			}
			for enc, err := range map[string]error{"json": jerr, "msgpack": merr} {
				var de *DecodeError
				if !errors.As(err, &de) {
					t.Fatalf("%s: accepted, want %s at %s", enc, tt.reason, tt.field)
				}
				if reasonOf(err) != tt.reason || de.Field != tt.field {
					t.Errorf("%s: %v; want reason %s at %s", enc, err, tt.reason, tt.field)
				}
			}
		})
	}
}

// TestDecodeJSONList reads a snapshot-shaped list and its failures.
func TestDecodeJSONList(t *testing.T) {
	evs := []indexer.Event{
		{Worker: indexer.Worker{ID: 1}, Kind: indexer.KindCleared},
		{Worker: indexer.Worker{ID: 2, DPRank: 1}, Kind: indexer.KindStored, Blocks: []indexer.Block{{Hash: 1, Tokens: 2}}, Tier: indexer.TierDisk},
	}
	metas := []Meta{{EventID: 4, Encoding: EncodingJSON}, {EventID: 9, StorageTier: TierDisk, Encoding: EncodingJSON}}
	list := []byte("[")
	for i := range evs {
		if i > 0 {
			list = append(list, ",\n"...)
		}
		list = AppendJSON(list, evs[i], metas[i])
	}
	list = append(list, "] "...)
	gotEvs, gotMetas, err := DecodeJSONList(list)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(evs, gotEvs); diff != "" {
		t.Errorf("events (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(metas, gotMetas); diff != "" {
		t.Errorf("metas (-want +got):\n%s", diff)
	}
	if evs, _, err := DecodeJSONList([]byte(" [ ] ")); err != nil || len(evs) != 0 {
		t.Errorf("empty list: %v, %v", evs, err)
	}
	for in, want := range map[string]string{
		`{}`:                 "expected a list of RouterEvents, found an object",
		`[{"worker_id":1}]`:  "event 0 of the list: decode kv event: schema violation: event at byte 16: missing field",
		`[] x`:               "data after the list",
		`[{"worker_id":1},]`: "event 0 of the list",
	} {
		_, _, err := DecodeJSONList([]byte(in))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("DecodeJSONList(%s) = %v, want an error containing %q", in, err, want)
		}
	}
}
