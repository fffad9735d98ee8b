package metrics

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// The per-request calls on the routing path.
func BenchmarkObserveOverhead(b *testing.B) {
	m, err := New(prometheus.NewRegistry(), DefaultConfig())
	if err != nil {
		b.Fatal(err)
	}
	o := Overhead{BlockHashed: 20 * time.Microsecond, SeqHashed: 30 * time.Microsecond,
		FindMatches: 150 * time.Microsecond, Matched: 200 * time.Microsecond, Total: 500 * time.Microsecond}
	b.ReportAllocs()
	for b.Loop() {
		m.ObserveOverhead(o)
	}
}

func BenchmarkSetWorkerLoad(b *testing.B) {
	m, err := New(prometheus.NewRegistry(), DefaultConfig())
	if err != nil {
		b.Fatal(err)
	}
	w := Worker{ID: 7587888160958628000, DPRank: 3, Type: WorkerTypeDecode}
	b.ReportAllocs()
	for b.Loop() {
		m.SetWorkerLoad(w, 42, 1000)
	}
}
