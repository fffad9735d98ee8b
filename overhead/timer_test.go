package overhead

import (
	"math"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"github.com/kvrouter/router/metrics"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func newRoot(t testing.TB) (*metrics.Router, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	m, err := metrics.New(reg, metrics.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	return m, reg
}

func newRoute(t testing.TB) (*Route, *prometheus.Registry) {
	t.Helper()
	m, reg := newRoot(t)
	r, err := NewRoute(m)
	if err != nil {
		t.Fatal(err)
	}
	return r, reg
}

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
		want := Phases{
			BlockHashed: 2 * time.Millisecond,
			SeqHashed:   3 * time.Millisecond,
			FindMatches: 5 * time.Millisecond,
			Matched:     8 * time.Millisecond,
			Total:       11 * time.Millisecond,
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Fatalf("Done (-want +got):\n%s", diff)
		}

		r, reg := newRoute(t)
		r.Observe(got)
		for name, wantMS := range map[string]float64{
			metrics.NameOverheadBlockHashing: 2, metrics.NameOverheadSeqHashing: 1, metrics.NameOverheadFindMatches: 5,
			metrics.NameOverheadScheduling: 3, metrics.NameOverheadTotal: 11,
		} {
			if sum := histogramSum(t, reg, name, nil); sum != wantMS {
				t.Errorf("%s sum = %v ms, want %v", name, sum, wantMS)
			}
		}
	})
}

// Observe derives the phases as Dynamo does.
func TestRouteObserve(t *testing.T) {
	tests := []struct {
		name string
		in   Phases
		want map[string]float64 // histogram → sum of observations in ms
	}{
		{
			name: "phases",
			in:   Phases{BlockHashed: 2 * time.Millisecond, SeqHashed: 3 * time.Millisecond, FindMatches: 4 * time.Millisecond, Matched: 7 * time.Millisecond, Total: 10 * time.Millisecond},
			want: map[string]float64{metrics.NameOverheadBlockHashing: 2, metrics.NameOverheadSeqHashing: 1, metrics.NameOverheadFindMatches: 4, metrics.NameOverheadScheduling: 3, metrics.NameOverheadTotal: 10},
		},
		{
			name: "clock going backwards floors at zero",
			in:   Phases{BlockHashed: 2 * time.Millisecond, SeqHashed: time.Millisecond, FindMatches: time.Millisecond, Matched: 5 * time.Millisecond, Total: 4 * time.Millisecond},
			want: map[string]float64{metrics.NameOverheadBlockHashing: 2, metrics.NameOverheadSeqHashing: 0, metrics.NameOverheadFindMatches: 1, metrics.NameOverheadScheduling: 0, metrics.NameOverheadTotal: 4},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, reg := newRoute(t)
			r.Observe(tt.in)
			got := map[string]float64{}
			for name := range tt.want {
				got[name] = histogramSum(t, reg, name, nil)
			}
			if diff := cmp.Diff(tt.want, got, cmpopts.EquateApprox(0, 1e-9)); diff != "" {
				t.Errorf("sums in ms (-want +got):\n%s", diff)
			}
		})
	}
}

// The apply and mark timings land in their own families, in milliseconds,
// and both mark series exist before any mark.
func TestPathTimings(t *testing.T) {
	m, reg := newRoot(t)
	apply, err := NewApply(m)
	if err != nil {
		t.Fatal(err)
	}
	marks, err := NewMarks(m)
	if err != nil {
		t.Fatal(err)
	}
	if got := histogramCount(t, reg, metrics.NameMark, map[string]string{metrics.LabelMark: metrics.MarkFree}); got != 0 {
		t.Fatalf("mark_free series before any mark: %d observations, want a series with 0", got)
	}
	apply.Observe(1500 * time.Microsecond)
	apply.Observe(-time.Millisecond) // a clock step floors at zero
	marks.Prefill.Observe(250 * time.Microsecond)
	marks.Free.Observe(time.Millisecond)
	marks.Free.Observe(2 * time.Millisecond)
	tests := []struct {
		name   string
		labels map[string]string
		count  uint64
		sum    float64
	}{
		{name: metrics.NameEventApply, count: 2, sum: 0.0015},
		{name: metrics.NameMark, labels: map[string]string{metrics.LabelMark: metrics.MarkPrefill}, count: 1, sum: 0.00025},
		{name: metrics.NameMark, labels: map[string]string{metrics.LabelMark: metrics.MarkFree}, count: 2, sum: 0.003},
	}
	for _, tt := range tests {
		if got := histogramCount(t, reg, tt.name, tt.labels); got != tt.count {
			t.Errorf("%s%v: %d observations, want %d", tt.name, tt.labels, got, tt.count)
		}
		if got := histogramSum(t, reg, tt.name, tt.labels); math.Abs(got-tt.sum) > 1e-12 {
			t.Errorf("%s%v: sum %v s, want %v", tt.name, tt.labels, got, tt.sum)
		}
	}
	// Asking again returns the same collectors.
	again, err := NewMarks(m)
	if err != nil {
		t.Fatal(err)
	}
	again.Prefill.Observe(time.Millisecond)
	if got := histogramCount(t, reg, metrics.NameMark, map[string]string{metrics.LabelMark: metrics.MarkPrefill}); got != 2 {
		t.Errorf("mark_prefill after a second NewMarks: %d observations, want 2 (shared)", got)
	}
}

func histogram(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string) (count uint64, sum float64) {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, s := range mf.GetMetric() {
			for _, lp := range s.GetLabel() {
				if v, ok := labels[lp.GetName()]; ok && v != lp.GetValue() {
					continue next
				}
			}
			return s.GetHistogram().GetSampleCount(), s.GetHistogram().GetSampleSum()
		}
	}
	t.Fatalf("%s%v not gathered", name, labels)
	return 0, 0
}

func histogramSum(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string) float64 {
	t.Helper()
	_, sum := histogram(t, reg, name, labels)
	return sum
}

func histogramCount(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string) uint64 {
	t.Helper()
	n, _ := histogram(t, reg, name, labels)
	return n
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
	r, _ := newRoute(b)
	b.ReportAllocs()
	for b.Loop() {
		tm := Start()
		tm.BlockHashed()
		tm.SeqHashed()
		tm.Matched()
		r.Observe(tm.Done())
	}
}

func TestTimingAllocatesNothing(t *testing.T) {
	r, _ := newRoute(t)
	m, _ := newRoot(t)
	marks, err := NewMarks(m)
	if err != nil {
		t.Fatal(err)
	}
	apply, err := NewApply(m)
	if err != nil {
		t.Fatal(err)
	}
	allocs := testing.AllocsPerRun(100, func() {
		tm := Start()
		tm.BlockHashed()
		tm.SeqHashed()
		tm.Matched()
		r.Observe(tm.Done())
		start := time.Now()
		marks.Free.Since(start)
		apply.Since(start)
	})
	if allocs != 0 {
		t.Errorf("a timed decision, mark and batch allocate %v times", allocs)
	}
}
