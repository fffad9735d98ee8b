package codec

import (
	"bytes"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/kvrouter/router/indexer"
	"github.com/kvrouter/router/internal/testutil"
	"github.com/kvrouter/router/metrics"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/events")

const goldenDir = "../../testdata/events/json"

// render prints a decoding outcome for golden files.
func render(ev indexer.Event, meta Meta, err error) string {
	if err != nil {
		var de *DecodeError
		if !errors.As(err, &de) {
			return "error (not a *DecodeError): " + err.Error() + "\n"
		}
		return fmt.Sprintf("reject reason=%s field=%q\n%v\n", reasonOf(de), de.Field, err)
	}
	return fmt.Sprintf("worker_id=%d dp_rank=%d kind=%v has_parent=%v parent=%d\nblocks=%v\nremoved=%v\nevent_id=%d storage_tier=%v cache_owner=%v device=%v encoding=%v\n",
		ev.Worker.ID, ev.Worker.DPRank, ev.Kind, ev.HasParent, ev.Parent, ev.Blocks, ev.Removed,
		meta.EventID, meta.StorageTier, meta.CacheOwner, meta.Device(), meta.Encoding)
}

// TestDecodeJSONGolden decodes every testdata/events/json/*.json and compares
// the outcome with the .golden file beside it (-update rewrites them).
func TestDecodeJSONGolden(t *testing.T) {
	inputs, err := filepath.Glob(filepath.Join(goldenDir, "*.json"))
	if err != nil || len(inputs) == 0 {
		t.Fatalf("no inputs in %s: %v", goldenDir, err)
	}
	for _, in := range inputs {
		name := strings.TrimSuffix(filepath.Base(in), ".json")
		t.Run(name, func(t *testing.T) {
			msg, err := os.ReadFile(in)
			if err != nil {
				t.Fatal(err)
			}
			ev, meta, derr := DecodeJSON(msg)
			got := render(ev, meta, derr)
			if strings.HasPrefix(name, "bad_") != (derr != nil) {
				t.Errorf("bad_ files must be rejected and others accepted; got\n%s", got)
			}
			golden := strings.TrimSuffix(in, ".json") + ".golden"
			if *update {
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("read golden (go test ./events/codec/ -run TestDecodeJSONGolden -update writes it): %v", err)
			}
			if diff := cmp.Diff(string(want), got); diff != "" {
				t.Errorf("outcome differs from %s (-want +got):\n%s", golden, diff)
			}
		})
	}
}

func TestDecodeJSON(t *testing.T) {
	tests := []struct {
		name     string
		in       string
		want     indexer.Event
		wantMeta Meta
		reason   string // non-empty: rejected with this reason
	}{
		{
			name:     "stored root, dp_rank absent",
			in:       `{"worker_id":1,"event":{"event_id":5,"data":{"stored":{"parent_hash":null,"blocks":[{"block_hash":10,"tokens_hash":11}]}}}}`,
			want:     indexer.Event{Worker: indexer.Worker{ID: 1}, Kind: indexer.KindStored, Blocks: []indexer.Block{{Hash: 10, Tokens: 11}}},
			wantMeta: Meta{EventID: 5, Encoding: EncodingJSON},
		},
		{
			name: "stored under a negative parent",
			in:   `{"worker_id":1,"event":{"event_id":5,"dp_rank":2,"data":{"stored":{"parent_hash":-1,"blocks":[{"block_hash":-2,"tokens_hash":11}]}}}}`,
			want: indexer.Event{Worker: indexer.Worker{ID: 1, DPRank: 2}, Kind: indexer.KindStored, HasParent: true, Parent: 1<<64 - 1,
				Blocks: []indexer.Block{{Hash: 1<<64 - 2, Tokens: 11}}},
			wantMeta: Meta{EventID: 5, Encoding: EncodingJSON},
		},
		{
			name:     "parent_hash absent is no parent",
			in:       `{"worker_id":1,"event":{"event_id":5,"data":{"stored":{"blocks":[]}}}}`,
			want:     indexer.Event{Worker: indexer.Worker{ID: 1}, Kind: indexer.KindStored},
			wantMeta: Meta{EventID: 5, Encoding: EncodingJSON},
		},
		{
			name:     "removed",
			in:       `{"worker_id":3,"event":{"event_id":0,"data":{"removed":{"block_hashes":[1,-1]}}}}`,
			want:     indexer.Event{Worker: indexer.Worker{ID: 3}, Kind: indexer.KindRemoved, Removed: []indexer.BlockHash{1, 1<<64 - 1}},
			wantMeta: Meta{Encoding: EncodingJSON},
		},
		{
			name:     "cleared, bare",
			in:       ` {"event":{"data":"cleared","event_id":18446744073709551615},"worker_id":18446744073709551615}` + "\n",
			want:     indexer.Event{Worker: indexer.Worker{ID: 1<<64 - 1}, Kind: indexer.KindCleared},
			wantMeta: Meta{EventID: 1<<64 - 1, Encoding: EncodingJSON},
		},
		{
			name:     "external tier",
			in:       `{"worker_id":3,"storage_tier":"external","event":{"event_id":1,"data":"cleared"}}`,
			want:     indexer.Event{Worker: indexer.Worker{ID: 3}, Kind: indexer.KindCleared, Tier: indexer.TierExternal},
			wantMeta: Meta{EventID: 1, StorageTier: TierExternal, Encoding: EncodingJSON},
		},
		{name: "empty", in: ``, reason: metrics.DecodeJSON},
		{name: "not json", in: `{worker_id: 1}`, reason: metrics.DecodeJSON},
		{name: "unterminated string", in: `{"worker_id":1,"event":{"event_id":1,"data":"clea`, reason: metrics.DecodeJSON},
		{name: "bad escape", in: `{"worker\x":1}`, reason: metrics.DecodeJSON},
		{name: "control character in string", in: "{\"a\nb\":1}", reason: metrics.DecodeJSON},
		{name: "event not an object", in: `{"worker_id":1,"event":[1]}`, reason: metrics.DecodeSchema},
		{name: "cleared with a value", in: `{"worker_id":1,"event":{"event_id":1,"data":{"cleared":{}}}}`, reason: metrics.DecodeSchema},
		{name: "empty data object", in: `{"worker_id":1,"event":{"event_id":1,"data":{}}}`, reason: metrics.DecodeSchema},
		{name: "blocks null", in: `{"worker_id":1,"event":{"event_id":1,"data":{"stored":{"blocks":null}}}}`, reason: metrics.DecodeSchema},
		{name: "exponent", in: `{"worker_id":1e3,"event":{"event_id":1,"data":"cleared"}}`, reason: metrics.DecodeSchema},
		{name: "negative too small", in: `{"worker_id":-9223372036854775809,"event":{"event_id":1,"data":"cleared"}}`, reason: metrics.DecodeSchema},
		{name: "residency null", in: `{"worker_id":1,"residency_domain":null,"event":{"event_id":1,"data":"cleared"}}`, reason: metrics.DecodeSchema},
		{name: "residency unknown", in: `{"worker_id":1,"residency_domain":"pool","event":{"event_id":1,"data":"cleared"}}`, reason: metrics.DecodeSchema},
		{name: "deep unknown value", in: `{"x":` + strings.Repeat("[", 100) + strings.Repeat("]", 100) + `,"worker_id":1}`, reason: reasonTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ev, meta, err := DecodeJSON([]byte(tt.in))
			checkOutcome(t, ev, meta, err, tt.want, tt.wantMeta, tt.reason)
		})
	}
}

// checkOutcome fails unless a decoding gave want and wantMeta or, with a
// reason, was rejected for it with a *DecodeError and no data.
func checkOutcome(t *testing.T, ev indexer.Event, meta Meta, err error, want indexer.Event, wantMeta Meta, reason string) {
	t.Helper()
	if reason != "" {
		var de *DecodeError
		if !errors.As(err, &de) {
			t.Fatalf("accepted: %+v, want a rejection (%s)", ev, reason)
		}
		if reasonOf(de) != reason {
			t.Errorf("reason = %s, want %s (%v)", reasonOf(de), reason, err)
		}
		if !cmp.Equal(ev, indexer.Event{}) || meta != (Meta{}) {
			t.Errorf("a rejected message returned data: %+v %+v", ev, meta)
		}
		return
	}
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, ev); diff != "" {
		t.Errorf("event (-want +got):\n%s", diff)
	}
	if meta != wantMeta {
		t.Errorf("meta = %+v, want %+v", meta, wantMeta)
	}
}

func TestDecodeLimits(t *testing.T) {
	blocks := func(n int) string {
		var b strings.Builder
		b.WriteString(`{"worker_id":1,"event":{"event_id":1,"data":{"stored":{"parent_hash":null,"blocks":[`)
		for i := range n {
			if i > 0 {
				b.WriteByte(',')
			}
			fmt.Fprintf(&b, `{"block_hash":%d,"tokens_hash":1}`, i)
		}
		b.WriteString(`]}}}}`)
		return b.String()
	}
	if ev, _, err := DecodeJSON([]byte(blocks(MaxBlocksPerEvent))); err != nil || len(ev.Blocks) != MaxBlocksPerEvent {
		t.Fatalf("DecodeJSON of %d blocks = %d blocks, %v", MaxBlocksPerEvent, len(ev.Blocks), err)
	}
	_, _, err := DecodeJSON([]byte(blocks(MaxBlocksPerEvent + 1)))
	if !errors.Is(err, ErrTooLarge) {
		t.Fatalf("DecodeJSON of %d blocks: %v, want ErrTooLarge", MaxBlocksPerEvent+1, err)
	}
	big := make([]byte, MaxMessageBytes+1)
	big[0] = '{'
	if _, _, err := Decode(big); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("Decode of %d bytes: %v, want ErrTooLarge", len(big), err)
	}
	big[0] = 0x80
	if _, _, err := Decode(big); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("Decode of %d bytes: %v, want ErrTooLarge", len(big), err)
	}
}

// TestDecodeMsgpack decodes envelopes built with a MessagePack library in
// the shapes rmp_serde writes, and hand-made variants.
func TestDecodeMsgpack(t *testing.T) {
	stored := indexer.Event{Worker: indexer.Worker{ID: 1<<63 + 5, DPRank: 2}, Kind: indexer.KindStored, HasParent: true, Parent: 99,
		Blocks: []indexer.Block{{Hash: 1<<64 - 1, Tokens: 12124091508212882195}, {Hash: 3, Tokens: 4}}}
	removed := indexer.Event{Worker: indexer.Worker{ID: 7}, Kind: indexer.KindRemoved, Removed: []indexer.BlockHash{1, 2, 1 << 40}}
	cleared := indexer.Event{Worker: indexer.Worker{ID: 7, DPRank: 1}, Kind: indexer.KindCleared}
	hostCleared := cleared
	hostCleared.Tier = indexer.TierHost
	enc := func(v any) []byte {
		b, err := msgpack.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	envelope := func(payload []byte) []byte { return mpEnvelopeOf(t, payload, 9, true) }
	rawEvent := func(data any) []byte {
		return enc(map[string]any{"worker_id": 7, "event": map[string]any{"event_id": 3, "data": data}})
	}
	tests := []struct {
		name     string
		in       []byte
		want     indexer.Event
		wantMeta Meta
		reason   string
	}{
		{name: "stored, compact ints", in: mpEnvelopeOf(t, mpPayload(t, stored, Meta{EventID: 1 << 40}, true), 9, true), want: stored,
			wantMeta: Meta{EventID: 1 << 40, Encoding: EncodingMsgpack, PublisherID: 42, Sequence: 9, PublishedAtMs: 1700000000000}},
		{name: "stored, full-width ints", in: mpEnvelopeOf(t, mpPayload(t, stored, Meta{EventID: 3}, false), 9, false), want: stored,
			wantMeta: Meta{EventID: 3, Encoding: EncodingMsgpack, PublisherID: 42, Sequence: 9, PublishedAtMs: 1700000000000}},
		{name: "removed", in: msgpackEvent(t, removed, 4), want: removed,
			wantMeta: Meta{EventID: 4, Encoding: EncodingMsgpack, PublisherID: 42, Sequence: 4, PublishedAtMs: 1700000000000}},
		{name: "cleared as a string", in: msgpackEvent(t, cleared, 5), want: cleared,
			wantMeta: Meta{EventID: 5, Encoding: EncodingMsgpack, PublisherID: 42, Sequence: 5, PublishedAtMs: 1700000000000}},
		{name: "host pinned tier", in: envelope(mpPayload(t, cleared, Meta{EventID: 5, StorageTier: TierHostPinned}, true)), want: hostCleared,
			wantMeta: Meta{EventID: 5, StorageTier: TierHostPinned, Encoding: EncodingMsgpack, PublisherID: 42, Sequence: 9, PublishedAtMs: 1700000000000}},
		{name: "bare router event, no envelope", in: mpPayload(t, removed, Meta{EventID: 4}, true), want: removed,
			wantMeta: Meta{EventID: 4, Encoding: EncodingMsgpack}},
		{name: "json payload", in: envelope(jsonEvent(removed, 4)), want: removed,
			wantMeta: Meta{EventID: 4, Encoding: EncodingMsgpack, PublisherID: 42, Sequence: 9, PublishedAtMs: 1700000000000}},
		{name: "cleared as a map with nil", in: envelope(rawEvent(map[string]any{"cleared": nil})),
			want: indexer.Event{Worker: indexer.Worker{ID: 7}, Kind: indexer.KindCleared}, wantMeta: Meta{EventID: 3, Encoding: EncodingMsgpack, PublisherID: 42, Sequence: 9, PublishedAtMs: 1700000000000}},
		{name: "variant by index", in: envelope(rawEvent(map[int]any{1: map[string]any{"block_hashes": []int64{-1}}})),
			want:     indexer.Event{Worker: indexer.Worker{ID: 7}, Kind: indexer.KindRemoved, Removed: []indexer.BlockHash{1<<64 - 1}},
			wantMeta: Meta{EventID: 3, Encoding: EncodingMsgpack, PublisherID: 42, Sequence: 9, PublishedAtMs: 1700000000000}},
		{name: "bare variant index", in: envelope(rawEvent(2)),
			want: indexer.Event{Worker: indexer.Worker{ID: 7}, Kind: indexer.KindCleared}, wantMeta: Meta{EventID: 3, Encoding: EncodingMsgpack, PublisherID: 42, Sequence: 9, PublishedAtMs: 1700000000000}},
		{name: "negative hashes", in: envelope(rawEvent(map[string]any{"stored": map[string]any{"parent_hash": int64(-5), "blocks": []any{map[string]any{"block_hash": int8(-1), "tokens_hash": int64(-9223372036854775808)}}}})),
			want: indexer.Event{Worker: indexer.Worker{ID: 7}, Kind: indexer.KindStored, HasParent: true, Parent: 1<<64 - 5,
				Blocks: []indexer.Block{{Hash: 1<<64 - 1, Tokens: 1 << 63}}},
			wantMeta: Meta{EventID: 3, Encoding: EncodingMsgpack, PublisherID: 42, Sequence: 9, PublishedAtMs: 1700000000000}},
		{name: "payload as str", in: enc(map[string]any{"publisher_id": 1, "payload": string(mpPayload(t, cleared, Meta{EventID: 5}, true))}), want: cleared,
			wantMeta: Meta{EventID: 5, Encoding: EncodingMsgpack, PublisherID: 1}},
		{name: "payload as byte array", in: enc(map[string]any{"payload": toInts(mpPayload(t, cleared, Meta{EventID: 5}, true))}), want: cleared,
			wantMeta: Meta{EventID: 5, Encoding: EncodingMsgpack}},

		{name: "empty", in: nil, reason: metrics.DecodeMsgpack},
		{name: "invalid type byte", in: []byte{0xc1}, reason: metrics.DecodeMsgpack},
		{name: "truncated envelope", in: msgpackEvent(t, stored, 1)[:20], reason: metrics.DecodeMsgpack},
		{name: "truncated payload", in: envelope(mpPayload(t, stored, Meta{}, true)[:30]), reason: metrics.DecodeMsgpack},
		{name: "trailing bytes", in: append(msgpackEvent(t, cleared, 1), 0xc0), reason: metrics.DecodeMsgpack},
		{name: "map claims 4 billion entries", in: []byte{0xdf, 0xff, 0xff, 0xff, 0xff, 0xa1, 'x'}, reason: metrics.DecodeMsgpack},
		{name: "array claims 4 billion blocks", in: envelope(rawEventBytes(t, []byte{0xdd, 0xff, 0xff, 0xff, 0xff})), reason: metrics.DecodeMsgpack},
		{name: "missing payload", in: enc(map[string]any{"publisher_id": 1}), reason: metrics.DecodeSchema},
		{name: "not a map", in: enc([]int{1, 2}), reason: metrics.DecodeSchema},
		{name: "positional router event", in: envelope(enc([]any{7, "device", []any{1, "cleared", 0}})), reason: metrics.DecodeSchema},
		{name: "unknown variant", in: envelope(rawEvent(map[string]any{"evicted": nil})), reason: metrics.DecodeSchema},
		{name: "unknown variant index", in: envelope(rawEvent(map[int]any{3: nil})), reason: metrics.DecodeSchema},
		{name: "stored without data", in: envelope(rawEvent("stored")), reason: metrics.DecodeSchema},
		{name: "two variants", in: envelope(rawEvent(map[string]any{"cleared": nil, "removed": nil})), reason: metrics.DecodeSchema},
		{name: "worker id as string", in: envelope(enc(map[string]any{"worker_id": "7", "event": map[string]any{"event_id": 3, "data": "cleared"}})), reason: metrics.DecodeSchema},
		{name: "event id float", in: envelope(enc(map[string]any{"worker_id": 7, "event": map[string]any{"event_id": 3.0, "data": "cleared"}})), reason: metrics.DecodeSchema},
		{name: "dp rank out of range", in: envelope(enc(map[string]any{"worker_id": 7, "event": map[string]any{"event_id": 3, "dp_rank": uint64(1) << 32, "data": "cleared"}})), reason: metrics.DecodeSchema},
		{name: "too many blocks", in: envelope(rawEventBytes(t, manyBlocks(MaxBlocksPerEvent+1))), reason: reasonTooLarge},
		{name: "deep unknown value", in: envelope(enc(map[string]any{"worker_id": 7, "x": nest(100), "event": map[string]any{"event_id": 3, "data": "cleared"}})), reason: reasonTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ev, meta, err := Decode(tt.in)
			checkOutcome(t, ev, meta, err, tt.want, tt.wantMeta, tt.reason)
		})
	}
}

func toInts(b []byte) []int {
	out := make([]int, len(b))
	for i, c := range b {
		out[i] = int(c)
	}
	return out
}

func nest(n int) any {
	var v any = 1
	for range n {
		v = []any{v}
	}
	return v
}

// rawEventBytes is a RouterEvent map whose stored blocks are the given raw
// MessagePack bytes.
func rawEventBytes(t testing.TB, blocks []byte) []byte {
	t.Helper()
	var b bytes.Buffer
	b.Write([]byte{0x82})
	b.Write(mustMarshal(t, "worker_id"))
	b.Write(mustMarshal(t, 7))
	b.Write(mustMarshal(t, "event"))
	b.Write([]byte{0x82})
	b.Write(mustMarshal(t, "event_id"))
	b.Write(mustMarshal(t, 1))
	b.Write(mustMarshal(t, "data"))
	b.Write([]byte{0x81})
	b.Write(mustMarshal(t, "stored"))
	b.Write([]byte{0x81})
	b.Write(mustMarshal(t, "blocks"))
	b.Write(blocks)
	return b.Bytes()
}

// manyBlocks is an array32 header for n blocks followed by n blocks.
func manyBlocks(n int) []byte {
	out := []byte{0xdd, 0, 0, 0, 0}
	binary.BigEndian.PutUint32(out[1:], uint32(n))
	block := []byte{0x82, 0xaa, 'b', 'l', 'o', 'c', 'k', '_', 'h', 'a', 's', 'h', 0x01, 0xab, 't', 'o', 'k', 'e', 'n', 's', '_', 'h', 'a', 's', 'h', 0x02}
	for range n {
		out = append(out, block...)
	}
	return out
}

func mustMarshal(t testing.TB, v any) []byte {
	t.Helper()
	b, err := msgpack.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestDecodeDispatch(t *testing.T) {
	ev := indexer.Event{Worker: indexer.Worker{ID: 3}, Kind: indexer.KindCleared}
	for _, tt := range []struct {
		name string
		in   []byte
		enc  Encoding
	}{
		{"json", jsonEvent(ev, 1), EncodingJSON},
		{"json after white space", append([]byte(" \n\t"), jsonEvent(ev, 1)...), EncodingJSON},
		{"msgpack", msgpackEvent(t, ev, 1), EncodingMsgpack},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, meta, err := Decode(tt.in)
			if err != nil {
				t.Fatal(err)
			}
			if meta.Encoding != tt.enc || !cmp.Equal(got, ev) {
				t.Errorf("Decode = %+v %v, want %+v %v", got, meta.Encoding, ev, tt.enc)
			}
		})
	}
}

func TestDecodeErrorSentinels(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want error
	}{
		{`{`, ErrMalformedJSON},
		{`{"worker_id":1}`, ErrSchema},
		{"\xc1", ErrMalformedMsgpack},
	} {
		_, _, err := Decode([]byte(tt.in))
		if !errors.Is(err, tt.want) {
			t.Errorf("Decode(%q) = %v, want errors.Is %v", tt.in, err, tt.want)
		}
		if msg := err.Error(); !strings.HasPrefix(msg, "decode kv event: ") {
			t.Errorf("error %q lacks its operation", msg)
		}
	}
}

// TestAppendJSONRoundTrip encodes events of every kind and tier and decodes
// them back: the event's Tier is written as storage_tier and read back into
// both the event and Meta.StorageTier.
func TestAppendJSONRoundTrip(t *testing.T) {
	for _, tt := range []struct {
		ev   indexer.Event
		meta Meta
	}{
		{indexer.Event{Worker: indexer.Worker{ID: 1<<64 - 1, DPRank: 1<<32 - 1}, Kind: indexer.KindStored, HasParent: true, Parent: 1 << 63,
			Blocks: []indexer.Block{{Hash: 1, Tokens: 2}, {Hash: 3, Tokens: 1<<64 - 1}}, Tier: indexer.TierDisk}, Meta{EventID: 9, StorageTier: TierDisk}},
		{indexer.Event{Worker: indexer.Worker{ID: 2}, Kind: indexer.KindRemoved, Removed: []indexer.BlockHash{5}, Tier: indexer.TierHost},
			Meta{EventID: 2, StorageTier: TierHostPinned}},
		{indexer.Event{Worker: indexer.Worker{ID: 2}, Kind: indexer.KindStored, Blocks: []indexer.Block{{Hash: 1, Tokens: 2}}, Tier: indexer.TierExternal},
			Meta{EventID: 3, StorageTier: TierExternal}},
		{indexer.Event{Worker: indexer.Worker{ID: 2}, Kind: indexer.KindStored}, Meta{}},
		{indexer.Event{Worker: indexer.Worker{ID: 2}, Kind: indexer.KindRemoved, Removed: []indexer.BlockHash{5, 6}}, Meta{EventID: 1, CacheOwner: true}},
		{indexer.Event{Worker: indexer.Worker{ID: 2}, Kind: indexer.KindCleared}, Meta{EventID: 1}},
	} {
		b := AppendJSON(nil, tt.ev, tt.meta)
		ev, meta, err := DecodeJSON(b)
		if err != nil {
			t.Fatalf("DecodeJSON(%s): %v", b, err)
		}
		tt.meta.Encoding = EncodingJSON
		if !cmp.Equal(ev, tt.ev) || meta != tt.meta {
			t.Errorf("round trip of %s = %+v %+v, want %+v %+v", b, ev, meta, tt.ev, tt.meta)
		}
	}
}

// TestHandMsgpackEncoder checks the benchmark's hand-written encoder against
// the decoder and the library-built shape.
func TestHandMsgpackEncoder(t *testing.T) {
	for _, s := range seedEvents {
		b := testutil.AppendMsgpackEnvelope(nil, s.ev, s.meta.EventID)
		ev, meta, err := DecodeMsgpack(b)
		if err != nil {
			t.Fatalf("% x: %v", b, err)
		}
		if !cmp.Equal(ev, s.ev) || meta.EventID != s.meta.EventID {
			t.Errorf("decoded %+v %+v, want %+v", ev, meta, s.ev)
		}
	}
}

// TestStorageTierMapping maps every Dynamo tier to the index's and back, and
// a decoded event carries its storage_tier as its Tier.
func TestStorageTierMapping(t *testing.T) {
	for _, tt := range []struct {
		name string
		st   StorageTier
		tier indexer.Tier
	}{
		{"device", TierDevice, indexer.TierDevice},
		{"host_pinned", TierHostPinned, indexer.TierHost},
		{"disk", TierDisk, indexer.TierDisk},
		{"external", TierExternal, indexer.TierExternal},
	} {
		if got := tt.st.Tier(); got != tt.tier {
			t.Errorf("%v.Tier() = %v, want %v", tt.st, got, tt.tier)
		}
		if got := StorageTierOf(tt.tier); got != tt.st {
			t.Errorf("StorageTierOf(%v) = %v, want %v", tt.tier, got, tt.st)
		}
		ev, meta, err := DecodeJSON([]byte(`{"worker_id":1,"storage_tier":"` + tt.name +
			`","event":{"event_id":1,"data":{"removed":{"block_hashes":[5]}}}}`))
		if err != nil || ev.Tier != tt.tier || meta.StorageTier != tt.st {
			t.Errorf("storage_tier %q: decoded tier %v, meta %v, error %v; want %v, %v", tt.name, ev.Tier, meta.StorageTier, err, tt.tier, tt.st)
		}
	}
	if got := StorageTier(9).Tier(); got != indexer.NumTiers {
		t.Errorf("StorageTier(9).Tier() = %v, want NumTiers (the index rejects it)", got)
	}
	ev, _, err := DecodeJSON([]byte(`{"worker_id":1,"event":{"event_id":1,"data":"cleared"}}`))
	if err != nil || ev.Tier != indexer.TierDevice {
		t.Errorf("no storage_tier: tier %v, error %v; want the device", ev.Tier, err)
	}
}
