package overhead

import (
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"github.com/kvrouter/router/metrics"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestTimerPhases advances synctest's fake clock through the phases of a
// decision and checks what the Timer reports and what lands in the
// histograms.
func TestTimerPhases(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		tm := Start()
		time.Sleep(2 * time.Millisecond) // block hashing
		tm.BlockHashed()
		time.Sleep(1 * time.Millisecond) // sequence hashing
		tm.SeqHashed()
		time.Sleep(5 * time.Millisecond) // find_matches
		tm.Matched()
		time.Sleep(3 * time.Millisecond) // scheduling
		got := tm.Done()
		want := metrics.Overhead{
			BlockHashed: 2 * time.Millisecond,
			SeqHashed:   3 * time.Millisecond,
			FindMatches: 5 * time.Millisecond,
			Matched:     8 * time.Millisecond,
			Total:       11 * time.Millisecond,
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Fatalf("Done (-want +got):\n%s", diff)
		}

		reg := prometheus.NewRegistry()
		m, err := metrics.New(reg, metrics.DefaultConfig())
		if err != nil {
			t.Fatal(err)
		}
		var o Observer = m
		o.ObserveOverhead(got)
		for name, wantMS := range map[string]float64{
			metrics.NameOverheadBlockHashing: 2, metrics.NameOverheadSeqHashing: 1, metrics.NameOverheadFindMatches: 5,
			metrics.NameOverheadScheduling: 3, metrics.NameOverheadTotal: 11,
		} {
			if sum := histogramSum(t, reg, name); sum != wantMS {
				t.Errorf("%s sum = %v ms, want %v", name, sum, wantMS)
			}
		}
	})
}

func histogramSum(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()[0].GetHistogram().GetSampleSum()
		}
	}
	t.Fatalf("%s not gathered", name)
	return 0
}

func TestTimerSkippedPhasesMeasureZero(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		tm := Start()
		tm.BlockHashed() // block hashes given: nothing to hash
		time.Sleep(time.Millisecond)
		tm.SeqHashed()
		tm.Matched()
		got := tm.Done()
		if got.BlockHashed != 0 || got.FindMatches != 0 || got.Total != time.Millisecond {
			t.Errorf("Done = %+v, want block hashing 0, find_matches 0, total 1ms", got)
		}
	})
}

// BenchmarkTimer times one decision's worth of marks and the observation
// into the five histograms: the overhead of measuring the overhead.
func BenchmarkTimer(b *testing.B) {
	m, err := metrics.New(prometheus.NewRegistry(), metrics.DefaultConfig())
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		tm := Start()
		tm.BlockHashed()
		tm.SeqHashed()
		tm.Matched()
		m.ObserveOverhead(tm.Done())
	}
}

func TestTimerAllocatesNothing(t *testing.T) {
	m, err := metrics.New(prometheus.NewRegistry(), metrics.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	allocs := testing.AllocsPerRun(100, func() {
		tm := Start()
		tm.BlockHashed()
		tm.SeqHashed()
		tm.Matched()
		m.ObserveOverhead(tm.Done())
	})
	if allocs != 0 {
		t.Errorf("a timed decision allocates %v times", allocs)
	}
}
