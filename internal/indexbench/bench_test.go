package indexbench

import (
	"testing"
	"time"

	"github.com/kvrouter/router/indexer"
)

// BenchmarkReplay replays the excerpt: "mixed" applies events and runs
// queries interleaved in trace order into a fresh index on one goroutine;
// "query" runs every query against the final state. block-ops/s counts as
// Run does.
func BenchmarkReplay(b *testing.B) {
	cfg := Config{Workers: 16, CacheBlocks: 4096, KeysPerBlock: 16, Duplicate: 1, Goroutines: 1, LatencyEvery: 16}
	s, err := buildStream(b.Context(), readExcerpt(b), cfg)
	if err != nil {
		b.Fatal(err)
	}
	b.Run("mixed", func(b *testing.B) {
		b.ReportAllocs()
		start := time.Now()
		for b.Loop() {
			if err := interleave(b.Context(), indexer.NewIndex(indexer.Config{}), s, nil); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(s.ops())*float64(b.N)/time.Since(start).Seconds(), "block-ops/s")
	})
	b.Run("query", func(b *testing.B) {
		idx, _ := load(s, cfg)
		dst := make([]indexer.Match, 0, cfg.Workers)
		b.ReportAllocs()
		start := time.Now()
		for b.Loop() {
			for _, q := range s.queries {
				dst = idx.FindMatches(q.keys, false, dst)
			}
		}
		b.ReportMetric(float64(s.queryBlocks)*float64(b.N)/time.Since(start).Seconds(), "block-ops/s")
	})
}
