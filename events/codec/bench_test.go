package codec

import (
	"testing"

	"github.com/kvrouter/router/indexer"
)

// BenchmarkDecode times decoding one KV event of each encoding and shape
// the engines publish: a stored event of one block (one engine step of a
// decode), of 64 blocks (a 1,024-token prefill), and a removal of 16
// hashes.
//
//	go test ./events/codec/ -run '^$' -bench Decode
func BenchmarkDecode(b *testing.B) {
	chain := func(n int) indexer.Event {
		ev := indexer.Event{Worker: indexer.Worker{ID: 1<<40 + 7, DPRank: 1}, Kind: indexer.KindStored, HasParent: true, Parent: 9143094415614847814}
		for i := range n {
			ev.Blocks = append(ev.Blocks, indexer.Block{Hash: indexer.BlockHash(12124091508212882195 - uint64(i)*7919), Tokens: indexer.LocalHash(1<<62 + uint64(i))})
		}
		return ev
	}
	removed := indexer.Event{Worker: indexer.Worker{ID: 1<<40 + 7}, Kind: indexer.KindRemoved}
	for i := range 16 {
		removed.Removed = append(removed.Removed, indexer.BlockHash(1<<63+uint64(i)*104729))
	}
	shapes := []struct {
		name string
		ev   indexer.Event
	}{{"stored1", chain(1)}, {"stored64", chain(64)}, {"removed16", removed}}
	for _, sh := range shapes {
		meta := Meta{EventID: 1 << 33}
		for _, enc := range []struct {
			name string
			msg  []byte
		}{
			{"json", AppendJSON(nil, sh.ev, meta)},
			{"msgpack", mpEnvelopeOf(b, mpPayload(b, sh.ev, meta, true), 1<<33, true)},
		} {
			b.Run(enc.name+"/"+sh.name, func(b *testing.B) {
				b.ReportAllocs()
				b.SetBytes(int64(len(enc.msg)))
				for b.Loop() {
					if _, _, err := Decode(enc.msg); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}
