package warmstart

import (
	"testing"
	"time"

	"github.com/kvrouter/router/indexer"
	"github.com/kvrouter/router/internal/testutil"
	"github.com/kvrouter/router/metrics"
)

// BenchmarkWarmStart times a whole warm start over loopback NATS: a joiner
// asks, a peer cuts and sends its index of 32 ranks × 2,048 blocks (65,536
// entries, twice the index measured in issue 18) in chunks of the server's
// maximum payload, and the joiner checks, loads and releases it. It
// reports the snapshot's size and the entries loaded per second.
func BenchmarkWarmStart(b *testing.B) {
	const ranks, blocks = 32, 2048
	url := testutil.NATS(b).URL()
	ws := make([]indexer.Worker, ranks)
	for i := range ws {
		ws[i] = indexer.Worker{ID: indexer.WorkerID(i + 1)}
	}
	pub := newPublisher(b, url, ws...)
	peer := newNode(b, url, false)
	peer.serve(1, 0)
	for range blocks / 256 {
		pub.publish(256)
		peer.w.Sync(b.Context())
	}
	peer.waitEntries(ranks * blocks)

	b.ReportAllocs()
	var res Result
	var took time.Duration
	for i := 0; b.Loop(); i++ {
		b.StopTimer()
		joiner := newNode(b, url, true)
		b.StartTimer()
		start := time.Now()
		res, _ = joiner.join(uint64(i+2), 30*time.Second)
		took += time.Since(start)
		if res.Result != metrics.WarmStartLoaded {
			b.Fatalf("result %+v, want loaded", res)
		}
		b.StopTimer()
		joiner.waitEntries(ranks * blocks)
		b.StartTimer()
	}
	b.ReportMetric(float64(res.Bytes)/1e6, "MB/snapshot")
	b.ReportMetric(float64(res.Chunks), "chunks")
	b.ReportMetric(float64(ranks*blocks)/(took.Seconds()/float64(b.N)), "entries/s")
}
