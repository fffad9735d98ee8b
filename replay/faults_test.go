package replay

import (
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/kvrouter/router/internal/testutil"
)

// A router that holds its route requests and answers them late stands in
// for a hung replica: no real router can be made to hang on cue. In real
// time, the replay must send every arrival while the earlier ones are
// still unanswered, count each failure by reason, and finish.
func TestReplayRealTimeArrivalsDoNotWait(t *testing.T) {
	wl := chat(t, 20, 100, 4, 8)
	nsrv := testutil.NATS(t)
	nc := testutil.NATSConn(t, nsrv.URL())
	router := testutil.NATSConn(t, nsrv.URL())

	var (
		mu   sync.Mutex
		held []*nats.Msg
	)
	if _, err := router.Subscribe("namespace.faults.component.router.route", func(m *nats.Msg) {
		mu.Lock()
		held = append(held, m)
		mu.Unlock()
	}); err != nil {
		t.Fatal(err)
	}
	if err := router.Flush(); err != nil {
		t.Fatal(err)
	}

	cfg := DefaultConfig()
	cfg.Namespace = "faults"
	cfg.Speedup = 1
	// Long enough that a replay waiting for each answer before the next
	// arrival could not send them all before the test's deadline.
	cfg.RouterTimeout = time.Minute
	cfg.GenerateTimeout = 10 * time.Second
	cfg.ProgressInterval = 0
	rp, err := New(cfg, nc, wl, Options{})
	if err != nil {
		t.Fatal(err)
	}
	type outcome struct {
		res *Result
		err error
	}
	done := make(chan outcome, 1)
	go func() {
		res, err := rp.Run(t.Context())
		done <- outcome{res, err}
	}()

	// Every arrival reaches the router while none has been answered.
	testutil.Eventually(t, 30*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(held) == 20
	}, "the router did not receive all 20 route requests while holding the first")

	// Then it answers them all: half with the router's no-workers error,
	// half with an answer the replay cannot read.
	mu.Lock()
	for i, m := range held {
		body := `{"error":{"code":"no_workers","message":"none"}}`
		if i%2 == 1 {
			body = `not json`
		}
		if err := m.Respond([]byte(body)); err != nil {
			t.Error(err)
		}
	}
	mu.Unlock()

	var out outcome
	select {
	case out = <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("the replay did not finish after every route was answered")
	}
	if out.err != nil {
		t.Fatalf("Run: %v; a failed route must not stop a real-time replay", out.err)
	}
	s := out.res.Summarize()
	want := map[string]int{"route_no_workers": 10, ReasonRouteTransport: 10}
	if s.Failed != 20 || s.Completed != 0 || len(s.FailedBy) != 2 || s.FailedBy["route_no_workers"] != 10 || s.FailedBy[ReasonRouteTransport] != 10 {
		t.Fatalf("failed %d, completed %d, by reason %v; want 20 failed by %v", s.Failed, s.Completed, s.FailedBy, want)
	}
	rep := &Report{Results: []*Result{out.res}}
	var b strings.Builder
	rep.WriteText(&b)
	if !strings.Contains(b.String(), "failed requests by reason: kv: route_no_workers 10, route_transport 10.") {
		t.Errorf("report lacks the failures line:\n%s", b.String())
	}
}

// With no router at all, every route fails at once with no responders; the
// replay counts them and ends.
func TestReplayRealTimeWithoutRouter(t *testing.T) {
	wl := chat(t, 5, 100, 2, 8)
	nsrv := testutil.NATS(t)
	nc := testutil.NATSConn(t, nsrv.URL())
	cfg := DefaultConfig()
	cfg.Namespace = "nobody"
	cfg.ProgressInterval = 0
	rp, err := New(cfg, nc, wl, Options{})
	if err != nil {
		t.Fatal(err)
	}
	res, err := rp.Run(t.Context())
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if s := res.Summarize(); s.Failed != 5 || s.FailedBy[ReasonNoRouter] != 5 {
		t.Fatalf("failed %d by %v; want 5 by %s", s.Failed, s.FailedBy, ReasonNoRouter)
	}
}

func TestFailuresLine(t *testing.T) {
	sums := []Summary{
		{Mode: "kv", FailedBy: map[string]int{"unfinished": 1, "route_timeout": 3, "no_router": 3}},
		{Mode: "round-robin"},
	}
	if got, want := failures(sums), "failed requests by reason: kv: no_router 3, route_timeout 3, unfinished 1."; got != want {
		t.Errorf("failures = %q, want %q", got, want)
	}
	if got := failures(sums[1:]); got != "" {
		t.Errorf("failures without any = %q, want empty", got)
	}
}
