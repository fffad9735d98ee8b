package service

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	promtest "github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/common/expfmt"

	"github.com/kvrouter/router/internal/testutil"
	"github.com/kvrouter/router/metrics"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/service")

// timed are the families whose values are durations: the golden file keeps
// their sample counts only (histograms) or masks their values (gauges).
var timed = []string{
	metrics.NameRequestDurationSeconds,
	metrics.NameOverheadBlockHashing, metrics.NameOverheadSeqHashing, metrics.NameOverheadFindMatches,
	metrics.NameOverheadScheduling, metrics.NameOverheadTotal,
	metrics.NameRouterTimeToFirstToken, metrics.NameRouterInterTokenLatency,
	metrics.NameWorkerLastTimeToFirstToken, metrics.NameWorkerLastInterTokenLatency,
	metrics.NameKVEventApplyLagSeconds, metrics.NameEventApply, metrics.NameMark,
}

// TestGoldenMetrics runs a fixed script of requests against a router with
// the queue on and compares the whole exposition with
// testdata/service/metrics.golden (go test -run TestGoldenMetrics -update
// rewrites it).
func TestGoldenMetrics(t *testing.T) {
	srv := startServers(t)
	cfg := testConfig()
	cfg.QueueThreshold = ptr(1.0)
	rt := startRouter(t, srv, 42, cfg)
	srv.register(t, worker{id: 7, totalKVBlocks: 1000, maxBatched: 64})
	srv.register(t, worker{id: 9, totalKVBlocks: 1000, maxBatched: 64})
	waitWorkers(t, 2, rt)
	prompt := seq(100, 16)
	rt.store(t, 9, prompt[:12])

	rt.request(t, "route", `{"request_id":"r-1","token_ids":`+tokensJSON(prompt)+`}`)
	rt.request(t, "route", `{"token_ids":`+tokensJSON(prompt)+`,"book":false}`)
	rt.request(t, "route", `{"request_id":"r-2","token_ids":`+tokensJSON(seq(500, 8))+`}`)
	rt.request(t, "mark_prefill", `{"request_id":"r-1"}`)
	rt.request(t, "mark_free", `{"request_id":"r-1","output_tokens":12}`)
	rt.request(t, "mark_free", `{"request_id":"unknown"}`)
	rt.request(t, "overlap_scores", `{"token_ids":`+tokensJSON(prompt)+`}`)
	rt.request(t, "potential_loads", `{"block_hashes":[1,2]}`)
	rt.request(t, "route", `{"token_ids":[1,`)
	rt.request(t, "route", `{"token_ids":[1],"allowed_worker_ids":[5]}`)
	// Both workers over the queue threshold (64 tokens): a request that
	// will not wait is turned away.
	rt.request(t, "route", `{"request_id":"big-7","token_ids":`+tokensJSON(seq(1000, 68))+`,"allowed_worker_ids":[7]}`)
	rt.request(t, "route", `{"request_id":"big-9","token_ids":`+tokensJSON(seq(2000, 68))+`,"allowed_worker_ids":[9]}`)
	rt.request(t, "route", `{"token_ids":[1,2,3,4],"do_not_queue":true}`)
	// An endpoint counts a request once its reply is sent, and takes it
	// out of its in-flight gauge last: a scrape right after the last reply
	// may miss it. Every request above was in flight before its reply came,
	// so none in flight means all are counted.
	testutil.Eventually(t, 10*time.Second, func() bool {
		for _, name := range Endpoints() {
			ep, _ := rt.svc.h.m.Endpoint(name)
			if promtest.ToFloat64(ep.Inflight) != 0 {
				return false
			}
		}
		return true
	}, "requests still in flight after their replies")

	got := normalize(t, rt)
	path := filepath.Join("..", "testdata", "service", "metrics.golden")
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if !bytes.Equal(want, got) {
		t.Errorf("metrics differ from %s (run with -update to accept):\n%s", path, lineDiff(string(want), string(got)))
	}
}

// normalize gathers rt's metrics as text, with the timed families reduced
// to what does not depend on the clock.
func normalize(t *testing.T, rt *router) []byte {
	t.Helper()
	mfs, err := rt.prom.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	enc := expfmt.NewEncoder(&buf, expfmt.NewFormat(expfmt.TypeTextPlain))
	for _, mf := range mfs {
		if err := enc.Encode(mf); err != nil {
			t.Fatal(err)
		}
	}
	var out []string
	sample := regexp.MustCompile(`^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})? (.*)$`)
	for _, line := range strings.Split(buf.String(), "\n") {
		m := sample.FindStringSubmatch(line)
		if m == nil {
			out = append(out, line)
			continue
		}
		name := m[1]
		for _, f := range timed {
			if !strings.HasPrefix(name, f) {
				continue
			}
			switch {
			case name == f+"_count":
			case name == f:
				line = name + m[2] + " <duration>"
			default:
				line = ""
			}
		}
		if line != "" {
			out = append(out, line)
		}
	}
	return []byte(strings.Join(out, "\n"))
}

// lineDiff lists the lines only in want (-) or only in got (+).
func lineDiff(want, got string) string {
	in := func(s string) map[string]bool {
		m := map[string]bool{}
		for _, l := range strings.Split(s, "\n") {
			m[l] = true
		}
		return m
	}
	w, g := in(want), in(got)
	var b strings.Builder
	for _, l := range strings.Split(want, "\n") {
		if !g[l] {
			b.WriteString("- " + l + "\n")
		}
	}
	for _, l := range strings.Split(got, "\n") {
		if !w[l] {
			b.WriteString("+ " + l + "\n")
		}
	}
	return b.String()
}
