package events

import (
	"testing"
	"time"

	"github.com/kvrouter/router/events/codec"
	"github.com/kvrouter/router/indexer"
	"github.com/kvrouter/router/internal/testutil"
)

// BenchmarkIngest measures end-to-end ingestion over loopback NATS: a
// publisher connection sends single-block events (stores of 64 workers, each
// growing a chain of 16 blocks and then removing it with one removal event)
// to an embedded server; the subscriber, with the default 4 event threads,
// decodes and applies them to an index. The clock runs from the first
// publish to the last event applied; events/s is b.N over that time.
//
// The publisher keeps at most a window of events unapplied, polling the
// subscriber's count: without a window it outruns the subscriber and the
// server cuts the slow connection, which measures nothing useful.
//
//	go test ./events/ -run '^$' -bench BenchmarkIngest -benchtime 2000000x
func BenchmarkIngest(b *testing.B) {
	b.Run("json", func(b *testing.B) { benchIngest(b, false, false) })
	b.Run("msgpack", func(b *testing.B) { benchIngest(b, true, false) })
	// Durable: the same events through a JetStream stream (file storage)
	// and the router's durable consumer.
	b.Run("json_durable", func(b *testing.B) { benchIngest(b, false, true) })
}

func benchIngest(b *testing.B, msgpackEnc, durable bool) {
	srv := testutil.NATS(b)
	cfg := testConfig()
	if durable {
		cfg = durableConfig("bench")
	}
	cfg.PrefillComponent = ""
	h := newHarness(b, srv.URL(), cfg).start()
	pub := testutil.NATSConn(b, srv.URL())
	subject := Subjects("test", DefaultComponent)[0]

	const (
		workers = 64
		chain   = 16
		window  = 32 << 10
	)
	var (
		pos [workers]int
		ids [workers]uint64
		buf []byte
		ev  = indexer.Event{Blocks: make([]indexer.Block, 1), Removed: make([]indexer.BlockHash, 1)}
	)
	next := func(i int) []byte {
		w := i % workers
		ids[w]++
		base := indexer.BlockHash(uint64(w)<<40 | ids[w]<<8)
		e := indexer.Event{Worker: indexer.Worker{ID: indexer.WorkerID(w + 1)}}
		if pos[w] == chain {
			e.Kind = indexer.KindRemoved
			e.Removed = ev.Removed
			e.Removed[0] = base - indexer.BlockHash(chain)<<8 // the chain's root
			pos[w] = 0
		} else {
			e.Kind = indexer.KindStored
			e.Blocks = ev.Blocks
			e.Blocks[0] = indexer.Block{Hash: base, Tokens: indexer.LocalHash(pos[w] + 1)}
			if pos[w] > 0 {
				e.HasParent, e.Parent = true, base-1<<8
			}
			pos[w]++
		}
		if msgpackEnc {
			buf = testutil.AppendMsgpackEnvelope(buf[:0], e, ids[w])
			return buf
		}
		buf = codec.AppendJSON(buf[:0], e, codec.Meta{EventID: ids[w]})
		return buf
	}
	poll := time.NewTicker(100 * time.Microsecond)
	defer poll.Stop()
	base := h.sub.Stats().Applied

	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		if i%1024 == 0 {
			for uint64(i)-(h.sub.Stats().Applied-base) > window {
				<-poll.C
			}
		}
		if err := pub.Publish(subject, next(i)); err != nil {
			b.Fatal(err)
		}
	}
	if err := pub.Flush(); err != nil {
		b.Fatal(err)
	}
	for h.sub.Stats().Applied-base < uint64(b.N) {
		<-poll.C
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
	if st := h.sub.Stats(); st.Dropped != 0 || st.DecodeErrors != 0 || st.Missed != 0 {
		b.Fatalf("losses: %+v", st)
	}
}
