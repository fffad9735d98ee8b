package replay

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/kvrouter/router/traces"
)

func TestFromTrace(t *testing.T) {
	reqs := []traces.Request{
		{Timestamp: 0, InputLength: 600, OutputLength: 5, HashIDs: []uint64{1, 2}},
		{Timestamp: 1000, InputLength: 2000, OutputLength: 0, HashIDs: []uint64{1, 3}}, // longer than its ids
		{Timestamp: 500, InputLength: 10, OutputLength: 1, HashIDs: []uint64{4}},       // goes backwards
		{Timestamp: 4000, InputLength: 10, OutputLength: 1, HashIDs: []uint64{5}},
	}
	wl, err := FromTrace("t", reqs, TraceOptions{RateScale: 2, Window: 3 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	want := []Request{
		{Index: 0, Arrival: 0, InputLength: 600, OutputLength: 5, HashIDs: []uint64{1, 2}},
		{Index: 1, Arrival: 500 * time.Millisecond, InputLength: 1024, OutputLength: 1, HashIDs: []uint64{1, 3}},
		{Index: 2, Arrival: 500 * time.Millisecond, InputLength: 10, OutputLength: 1, HashIDs: []uint64{4}},
	}
	if diff := cmp.Diff(want, wl.Requests); diff != "" {
		t.Fatalf("(-want +got):\n%s", diff)
	}
	// Tokens follow the ids and stop at the input length; shared ids
	// give shared tokens.
	a := wl.Tokens(&wl.Requests[0], nil)
	b := wl.Tokens(&wl.Requests[1], nil)
	if len(a) != 600 || len(b) != 1024 || !slicesEqual(a[:512], b[:512]) || slicesEqual(a[512:], b[512:600]) {
		t.Fatalf("tokens: %d and %d, shared first block %v", len(a), len(b), slicesEqual(a[:512], b[:512]))
	}
	if _, err := FromTrace("t", reqs, TraceOptions{RateScale: 0}); err == nil || !strings.Contains(err.Error(), "--rate-scale") {
		t.Fatalf("rate scale 0: %v", err)
	}
	if _, err := FromTrace("t", reqs, TraceOptions{RateScale: 1, Window: time.Nanosecond, MaxRequests: 1}); err != nil {
		t.Fatalf("window: %v", err)
	}
}

func slicesEqual(a, b []uint32) bool { return cmp.Equal(a, b) }

func TestSyntheticIsDeterministic(t *testing.T) {
	cfg := DefaultSyntheticConfig()
	cfg.Requests = 200
	a, err := Synthetic(cfg)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := Synthetic(cfg)
	if diff := cmp.Diff(a, b); diff != "" {
		t.Fatalf("same seed, different workloads:\n%s", diff)
	}
	cfg.Seed++
	c, _ := Synthetic(cfg)
	if cmp.Equal(a.Requests, c.Requests) {
		t.Fatal("another seed gave the same workload")
	}
	// Conversations grow: some request extends an earlier one's prompt.
	grown := false
	for i, r := range a.Requests {
		for _, q := range a.Requests[:i] {
			if len(r.HashIDs) > len(q.HashIDs) && cmp.Equal(r.HashIDs[:len(q.HashIDs)], q.HashIDs) && q.HashIDs[len(q.HashIDs)-1] > uint64(cfg.SystemPrompts*cfg.SystemBlocks) {
				grown = true
			}
		}
	}
	if !grown {
		t.Fatal("no conversation grew over turns")
	}
	for i := 1; i < len(a.Requests); i++ {
		if a.Requests[i].Arrival < a.Requests[i-1].Arrival {
			t.Fatal("arrivals out of order")
		}
	}
	bad := DefaultSyntheticConfig()
	bad.Rate, bad.Users = 0, 0
	if err := bad.Validate(); err == nil || !strings.Contains(err.Error(), "--rate") || !strings.Contains(err.Error(), "--users") {
		t.Fatalf("Validate = %v", err)
	}
}
