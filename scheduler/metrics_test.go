package scheduler

import (
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/kvrouter/router/indexer"
	"github.com/kvrouter/router/metrics"
)

// seriesOf counts the series of worker id in each per-worker family, by
// worker_type.
func seriesOf(t *testing.T, e *env, id string) map[string]int {
	t.Helper()
	mfs, err := e.prom.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]int{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			var worker, typ string
			for _, lp := range m.GetLabel() {
				switch lp.GetName() {
				case metrics.LabelWorkerID:
					worker = lp.GetValue()
				case metrics.LabelWorkerType:
					typ = lp.GetValue()
				}
			}
			if worker == id {
				got[mf.GetName()+"/"+typ]++
			}
		}
	}
	return got
}

// The Router owns the dynamo_frontend_worker_* series: a rank that stops
// being a candidate loses them at once, and nothing writes them again; a
// rank whose type changes loses those of its old type.
func TestPerWorkerSeriesFollowCandidates(t *testing.T) {
	e := newEnv(t, testConfig(), newFleet(cands(0, 0, 1, 2), nil))
	route(t, e, &Request{ID: "a", Tokens: tokens(0, 2, 4), AllowedWorkerIDs: []indexer.WorkerID{1}})
	route(t, e, &Request{ID: "b", Tokens: tokens(100, 2, 4), AllowedWorkerIDs: []indexer.WorkerID{2}})
	e.r.MarkPrefill("a")
	e.r.MarkPrefill("b")
	e.r.Free("a", 11)

	all := func(typ string, names ...string) map[string]int {
		m := map[string]int{}
		for _, n := range names {
			m[n+"/"+typ] = 1
		}
		return m
	}
	load := []string{metrics.NameWorkerActiveDecodeBlocks, metrics.NameWorkerActivePrefillTokens}
	last := []string{metrics.NameWorkerLastTimeToFirstToken, metrics.NameWorkerLastInputSequenceTokens}
	w1 := all("decode", append(append(load, last...), metrics.NameWorkerLastInterTokenLatency)...)
	w2 := all("decode", append(load, last...)...)
	if diff := cmp.Diff(w1, seriesOf(t, e, "1")); diff != "" {
		t.Fatalf("series of worker 1 before it leaves (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(w2, seriesOf(t, e, "2")); diff != "" {
		t.Fatalf("series of worker 2 (-want +got):\n%s", diff)
	}

	e.r.SetCandidates(cands(0, 0, 2), nil) // worker 1 leaves
	if got := seriesOf(t, e, "1"); len(got) != 0 {
		t.Errorf("series of worker 1 after it left: %v, want none", got)
	}
	// Its request went with it; marking it writes nothing.
	if e.r.MarkPrefill("a") || e.r.Free("a", 3) {
		t.Errorf("marks of a request of a departed worker succeeded")
	}
	route(t, e, &Request{ID: "c", Tokens: tokens(200, 2, 4)})
	if got := seriesOf(t, e, "1"); len(got) != 0 {
		t.Errorf("series of worker 1 re-created after it left: %v", got)
	}
	if diff := cmp.Diff(w2, seriesOf(t, e, "2")); diff != "" {
		t.Errorf("series of worker 2 after worker 1 left (-want +got):\n%s", diff)
	}

	// Worker 2 comes back as a prefill worker: its decode series go, its
	// load is exported under its new type.
	e.r.SetCandidates(cands(0, 0, 3), cands(0, 0, 2))
	route(t, e, &Request{ID: "d", Tokens: tokens(300, 2, 4), AllowedWorkerIDs: []indexer.WorkerID{2, 3}})
	if diff := cmp.Diff(all("prefill", load...), seriesOf(t, e, "2")); diff != "" {
		t.Errorf("series of worker 2 after it turned prefill (-want +got):\n%s", diff)
	}
}

// Every mark is timed, known request or not.
func TestMarksAreTimed(t *testing.T) {
	e := newEnv(t, testConfig(), newFleet(cands(0, 0, 1), nil))
	route(t, e, &Request{ID: "r", Tokens: tokens(0, 2, 4)})
	e.r.MarkPrefill("r")
	e.r.MarkPrefill("nope")
	e.r.Free("r", 2)
	got := map[string]uint64{}
	mfs, err := e.prom.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != metrics.NameMark {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if lp.GetName() == metrics.LabelMark {
					got[lp.GetValue()] = m.GetHistogram().GetSampleCount()
				}
			}
		}
	}
	if diff := cmp.Diff(map[string]uint64{metrics.MarkPrefill: 2, metrics.MarkFree: 1}, got); diff != "" {
		t.Errorf("%s observations (-want +got):\n%s", metrics.NameMark, diff)
	}
}
