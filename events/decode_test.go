package events

import (
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/kvrouter/router/events/codec"
	"github.com/kvrouter/router/indexer"
	"github.com/kvrouter/router/internal/testutil"
	"github.com/kvrouter/router/metrics"
)

// The decoders and their tests live in events/codec; these tests cover
// what this package adds: the reason labels and the benchmark's encoder.

// TestReasonOf checks the label each kind of rejection is counted under.
func TestReasonOf(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want string
	}{
		{`{`, metrics.DecodeJSON},
		{`{"worker_id":1}`, metrics.DecodeSchema},
		{"\xc1", metrics.DecodeMsgpack},
		{`{"x":` + strings.Repeat("[", 100) + strings.Repeat("]", 100) + `}`, ReasonTooLarge},
	} {
		_, _, err := codec.Decode([]byte(tt.in))
		var de *codec.DecodeError
		if !errors.As(err, &de) {
			t.Fatalf("Decode(%q) = %v, want a *codec.DecodeError", tt.in, err)
		}
		if got := Reason(err); got != tt.want {
			t.Errorf("Reason(%v) = %s, want %s", err, got, tt.want)
		}
	}
}

// TestHandMsgpackEncoder checks the benchmarks' hand-written encoder
// (testutil.AppendMsgpackEnvelope) against the decoder.
func TestHandMsgpackEncoder(t *testing.T) {
	for _, ev := range []indexer.Event{
		{Worker: indexer.Worker{ID: 7, DPRank: 1}, Kind: indexer.KindStored, Blocks: []indexer.Block{{Hash: 1, Tokens: 2}}},
		{Worker: indexer.Worker{ID: 1<<64 - 1}, Kind: indexer.KindStored, HasParent: true, Parent: 1 << 63,
			Blocks: []indexer.Block{{Hash: 3, Tokens: 4}, {Hash: 5, Tokens: 6}}},
		{Worker: indexer.Worker{ID: 7}, Kind: indexer.KindRemoved, Removed: []indexer.BlockHash{1, 1<<64 - 1}},
		{Worker: indexer.Worker{ID: 7}, Kind: indexer.KindCleared},
	} {
		b := testutil.AppendMsgpackEnvelope(nil, ev, 1<<40)
		got, meta, err := codec.DecodeMsgpack(b)
		if err != nil {
			t.Fatalf("% x: %v", b, err)
		}
		if !cmp.Equal(got, ev) || meta.EventID != 1<<40 {
			t.Errorf("decoded %+v %+v, want %+v", got, meta, ev)
		}
	}
}
