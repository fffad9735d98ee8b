package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/kvrouter/router/internal/testutil"
)

// The deployment files the tests check, relative to this package.
const (
	prometheusConfig = "../deploy/metrics/prometheus.yml"
	grafanaDashboard = "../deploy/metrics/grafana-dashboard.json"
)

// TestDashboardQueriesReturnData scrapes a router under traffic with a real
// Prometheus, configured from deploy/metrics/prometheus.yml, and checks
// that every query of deploy/metrics/grafana-dashboard.json returns data:
// a non-empty result with at least one finite value. The router runs with
// the threshold queue on and the traffic makes requests wait and be turned
// away, so that the queue panels show the router's own series, not only
// their `or vector(0)` fallback; such a fallback must not add a series
// beside real ones either. Last, promtool lints the exposition the traffic
// left.
//
// The workers register and publish their first events from the test
// goroutine, where a failure may stop the test; only the rounds of traffic
// run in their own goroutine, which the test stops and waits for.
func TestDashboardQueriesReturnData(t *testing.T) {
	bins := need(t, natsServer, etcdServer, promtool, prometheus)
	if out, err := exec.Command(bins.path(t, promtool), "check", "config", prometheusConfig).CombinedOutput(); err != nil {
		t.Fatalf("promtool check config %s: %v\n%s", prometheusConfig, err, out)
	}
	exprs := dashboardExprs(t, grafanaDashboard)

	// Busy means over 0.5 × 64 = 32 prefill tokens: one uncached
	// 40-token prompt makes a worker busy.
	const blockSize, maxBatched = 4, 64
	c := newCluster(t, bins, "--router-block-size", strconv.Itoa(blockSize),
		"--router-queue-threshold", "0.5", "--router-model-name", "e2e-model")
	c.waitHealth(200, 60*time.Second)
	f := newFleet(t, c, blockSize)
	w1, w2 := f.register(maxBatched), f.register(maxBatched)
	testutil.Eventually(t, 30*time.Second, every(50*time.Millisecond, func() bool {
		return len(samples(c.mustScrape(), "dynamo_component_router_worker_registered", nil)) == 2
	}), "the two workers never registered")
	hot := f.newPrompt(1, 4*blockSize)
	if err := f.publish(storedEvent(w1, hot, 0, 4)); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 30*time.Second, func() bool {
		ws := f.overlaps(promptRequest{TokenIDs: hot.tokens}).Workers
		return len(ws) == 1 && ws[0].OverlapBlocks == 4
	}, "the hot prompt's blocks were never indexed")
	// One event that is not JSON, so that the "KV event problems" panel has
	// a decode-error series of the router's own.
	if err := f.publish([]byte(`{"worker_id": 1, "event": `)); err != nil {
		t.Fatal(err)
	}

	promPort := testutil.FreePort(t)
	promBase := "http://" + testutil.Addr(promPort)
	cfg := scrapeConfig(t, prometheusConfig, c.statusBase[len("http://"):])
	if out, err := exec.Command(bins.path(t, promtool), "check", "config", cfg).CombinedOutput(); err != nil {
		t.Fatalf("promtool check config on the test's config: %v\n%s", err, out)
	}
	prom := testutil.Start(t, bins.path(t, prometheus), "--config.file", cfg,
		"--storage.tsdb.path", t.TempDir(), "--web.listen-address", testutil.Addr(promPort))
	testutil.Eventually(t, 60*time.Second, every(100*time.Millisecond, func() bool {
		code, _ := httpGet(promBase + "/-/ready")
		return code == 200 || prom.Exited()
	}), "prometheus never became ready")
	if prom.Exited() {
		t.Fatalf("prometheus exited at start:\n%s", prom.Output())
	}

	tr := &traffic{f: f, hot: hot, blockSize: blockSize, workers: []*worker{w1, w2}}
	ctx, stop := context.WithTimeout(context.Background(), 2*time.Minute)
	var wg sync.WaitGroup
	wg.Go(func() { tr.run(ctx, 2000) })
	stopped := false
	stopTraffic := func() {
		if !stopped {
			stopped = true
			stop()
			wg.Wait()
		}
	}
	t.Cleanup(stopTraffic) // a failing test still waits for its goroutine

	// Every expression until each has data. An expression ending in
	// `or vector(0)` has data from the start, scrape or not: its left side
	// must have data too, since the traffic fills every family the
	// dashboard shows.
	var queries []string
	for _, e := range exprs {
		queries = append(queries, e)
		if lhs, ok := withoutFallback(e); ok {
			queries = append(queries, lhs)
		}
	}
	done := map[string]bool{}
	testutil.Eventually(t, 90*time.Second, every(500*time.Millisecond, func() bool {
		missing := 0
		for _, q := range queries {
			if !done[q] {
				done[q] = promQuery(promBase, q).finite
			}
			if !done[q] {
				missing++
			}
		}
		return missing == 0
	}), "queries without data:\n%v", lazy(func() string {
		var out []string
		for _, q := range queries {
			if !done[q] {
				out = append(out, q+" → "+promQuery(promBase, q).summary)
			}
		}
		return strings.Join(out, "\n")
	}))
	for _, e := range exprs {
		r := promQuery(promBase, e)
		line := fmt.Sprintf("%s\n\t→ %s", e, r.summary)
		if lhs, ok := withoutFallback(e); ok {
			l := promQuery(promBase, lhs)
			line += fmt.Sprintf("\n\t  without the fallback → %s", l.summary)
			// `or` matches whole label sets: when the left side has series
			// with labels, vector(0)'s label-less series is added beside
			// them, a phantom 0 line with an empty legend.
			if l.series > 0 && r.series != l.series {
				fix := lhs + " or on() vector(0)"
				t.Errorf("%s\nreturns %d series where its left side has %d: the fallback adds a phantom series (%s);"+
					"\n%s would return %s", e, r.series, l.series, r.summary, fix, promQuery(promBase, fix).summary)
			}
		}
		t.Log(line)
	}

	stopTraffic()
	if err := tr.err; err != nil {
		t.Errorf("traffic: %v", err)
	}
	t.Logf("traffic: %d rounds, %d routed, %d queued, %d turned away (do_not_queue)", tr.rounds, tr.routed, tr.queued, tr.rejected)
	if tr.queued == 0 || tr.rejected == 0 {
		t.Errorf("traffic never exercised the queue: %d queued, %d turned away", tr.queued, tr.rejected)
	}

	exposition, fams, err := c.scrape()
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{
		"dynamo_frontend_router_queue_pending_requests",
		"dynamo_frontend_router_queue_backpressure_total",
		"dynamo_component_kv_cache_events_applied",
	} {
		if len(samples(fams, name, nil)) == 0 {
			t.Errorf("the scrape after traffic has no series of %s", name)
		}
	}
	// Every event the workers published was well formed and in order.
	for _, st := range []string{"parent_block_not_found", "block_not_found", "invalid_block"} {
		if v := sum(samples(fams, "dynamo_component_kv_cache_events_applied", map[string]string{"status": st})); v != 0 {
			t.Errorf("dynamo_component_kv_cache_events_applied{status=%q} = %v, want 0", st, v)
		}
	}
	if v := sum(samples(fams, "dynamo_component_kv_events_missed_total", nil)); v != 0 {
		t.Errorf("dynamo_component_kv_events_missed_total = %v, want 0", v)
	}
	checkExposition(t, bins, exposition)
}

// withoutFallback returns the left side of an expression ending in
// `or vector(0)` or `or on() vector(0)`.
func withoutFallback(expr string) (string, bool) {
	for _, suffix := range []string{" or vector(0)", " or on() vector(0)"} {
		if lhs, ok := strings.CutSuffix(expr, suffix); ok {
			return lhs, true
		}
	}
	return "", false
}

// dashboardExprs returns the expr of every query target of a Grafana
// dashboard, rows and nested panels included, in order.
func dashboardExprs(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var doc any
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	var exprs []string
	var walk func(v any)
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			if targets, ok := v["targets"].([]any); ok {
				for _, tg := range targets {
					if e, ok := tg.(map[string]any)["expr"].(string); ok && e != "" {
						exprs = append(exprs, e)
					}
				}
			}
			if panels, ok := v["panels"].([]any); ok {
				for _, p := range panels {
					walk(p)
				}
			}
		}
	}
	walk(doc)
	if len(exprs) == 0 {
		t.Fatalf("%s has no query targets", path)
	}
	return exprs
}

// scrapeConfig writes the shipped Prometheus configuration with every
// static target pointed at target and every interval at 1s, so that rates
// over [1m] have points within seconds, and returns its path.
func scrapeConfig(t *testing.T, path, target string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var cfg map[string]any
	if err := yaml.Unmarshal(b, &cfg); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	global, _ := cfg["global"].(map[string]any)
	if global == nil {
		global = map[string]any{}
		cfg["global"] = global
	}
	global["scrape_interval"], global["evaluation_interval"] = "1s", "1s"
	jobs, _ := cfg["scrape_configs"].([]any)
	targets := 0
	for _, j := range jobs {
		job := j.(map[string]any)
		if _, ok := job["scrape_interval"]; ok {
			job["scrape_interval"] = "1s"
		}
		if _, ok := job["scrape_timeout"]; ok {
			job["scrape_timeout"] = "1s"
		}
		statics, _ := job["static_configs"].([]any)
		for _, s := range statics {
			s.(map[string]any)["targets"] = []string{target}
			targets++
		}
	}
	if targets == 0 {
		t.Fatalf("%s has no static target to point at the router", path)
	}
	out, err := yaml.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(t.TempDir(), "prometheus.yml")
	if err := os.WriteFile(dst, out, 0o644); err != nil {
		t.Fatal(err)
	}
	return dst
}

// promResult is an instant query's answer: how many series, whether any
// value is finite, and the series summarised.
type promResult struct {
	series  int
	finite  bool
	summary string
}

// promQuery runs an instant query.
func promQuery(base, expr string) promResult {
	code, body := httpGet(base + "/api/v1/query?query=" + url.QueryEscape(expr))
	if code != 200 {
		return promResult{summary: fmt.Sprintf("status %d: %.200s", code, body)}
	}
	var r struct {
		Status string `json:"status"`
		Data   struct {
			ResultType string `json:"resultType"`
			Result     []struct {
				Metric map[string]string `json:"metric"`
				Value  [2]any            `json:"value"`
			} `json:"result"`
		} `json:"data"`
	}
	if err := json.Unmarshal([]byte(body), &r); err != nil || r.Status != "success" || r.Data.ResultType != "vector" {
		return promResult{summary: fmt.Sprintf("%.200s", body)}
	}
	res := promResult{series: len(r.Data.Result)}
	var vals []string
	for _, s := range r.Data.Result {
		v, _ := s.Value[1].(string)
		if x, err := strconv.ParseFloat(v, 64); err == nil && !math.IsNaN(x) && !math.IsInf(x, 0) {
			res.finite = true
		}
		vals = append(vals, labelString(s.Metric)+"="+v)
	}
	if len(vals) > 5 {
		vals = append(vals[:5], fmt.Sprintf("… (%d series)", len(vals)))
	}
	res.summary = strings.Join(vals, " ")
	if res.series == 0 {
		res.summary = "empty"
	}
	return res
}

// labelString renders a series' labels but those of the scrape target
// (instance, job, service), which every series of the router shares.
func labelString(m map[string]string) string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		switch k {
		case "instance", "job", "service":
		default:
			parts = append(parts, k+"="+m[k])
		}
	}
	return "{" + strings.Join(parts, ",") + "}"
}

// httpGet fetches a URL; code 0 means no answer.
func httpGet(u string) (int, string) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return 0, err.Error()
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// traffic plays a frontend and its workers against the router in rounds,
// ten a second, until its context ends or it has played its rounds. Each
// round routes the hot prompt (cached on a worker), makes both workers
// busy with uncached prompts whose blocks the chosen workers then store,
// asks once with do_not_queue (turned away) and once without (waits in the
// queue), completes the prefills (which releases the waiting request),
// frees everything and has the workers evict the blocks. Its fields are
// read after run returns.
type traffic struct {
	f         *fleet
	hot       prompt
	blockSize int
	workers   []*worker

	rounds, routed, queued, rejected int
	err                              error
}

func (tr *traffic) run(ctx context.Context, maxRounds int) {
	tick := time.NewTicker(100 * time.Millisecond) // pacing, not synchronisation
	defer tick.Stop()
	for tr.rounds < maxRounds {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if err := tr.round(ctx); err != nil {
			if ctx.Err() == nil {
				tr.err = fmt.Errorf("round %d: %w", tr.rounds, err)
			}
			return
		}
		tr.rounds++
	}
}

func (tr *traffic) round(ctx context.Context) error {
	n := tr.rounds
	id := func(s string) string { return fmt.Sprintf("t%d-%s", n, s) }
	fresh := func(k uint32) prompt { return tr.f.newPrompt(1_000_000+uint32(n)*1000+k*100, 10*tr.blockSize) }
	byID := map[uint64]*worker{}
	for _, w := range tr.workers {
		byID[w.id] = w
	}
	route := func(req routeRequest) (routeReply, error) {
		var r routeReply
		if err := tr.f.ask(ctx, "route", req, &r); err != nil {
			return r, err
		}
		if r.Error == nil {
			tr.routed++
		}
		return r, nil
	}
	mark := func(endpoint, rid string, out int) error {
		var r markReply
		if err := tr.f.ask(ctx, endpoint, markRequest{RequestID: rid, OutputTokens: out}, &r); err != nil {
			return err
		}
		if !r.Success {
			return fmt.Errorf("%s %s: success false (%s)", endpoint, rid, r.Error)
		}
		return nil
	}

	// The hot prompt: a full hit on the worker holding it.
	if r, err := route(routeRequest{RequestID: id("hot"), TokenIDs: tr.hot.tokens}); err != nil || r.Error != nil {
		return errors.Join(err, fmt.Errorf("route hot: %s", r.Error))
	}
	// Two uncached prompts of 40 tokens: each makes its worker busy; the
	// worker then stores the blocks, as an engine does after prefill.
	var stored []struct {
		w *worker
		p prompt
	}
	for i, name := range []string{"a", "b"} {
		p := fresh(uint32(i))
		r, err := route(routeRequest{RequestID: id(name), TokenIDs: p.tokens})
		if err != nil || r.Error != nil {
			return errors.Join(err, fmt.Errorf("route %s: %s", name, r.Error))
		}
		w := byID[r.WorkerID]
		if w == nil {
			return fmt.Errorf("route %s: unknown worker %d", name, r.WorkerID)
		}
		if err := tr.f.publish(storedEvent(w, p, 0, len(p.locals))); err != nil {
			return err
		}
		stored = append(stored, struct {
			w *worker
			p prompt
		}{w, p})
	}
	// Every worker is busy now: do_not_queue is turned away, and a request
	// that may wait waits until a prefill completes.
	names := []string{"hot", "a", "b"}
	r, err := route(routeRequest{RequestID: id("nq"), TokenIDs: fresh(2).tokens, DoNotQueue: true})
	switch {
	case err != nil:
		return err
	case r.Error == nil: // a worker was free after all: free it with the rest
		names = append(names, "nq")
	case r.Error.Code == "queue_rejected":
		tr.rejected++
	default:
		return fmt.Errorf("route with do_not_queue: %s", r.Error)
	}
	waiting := make(chan struct{})
	var waited routeReply
	var waitErr error
	go func() {
		defer close(waiting)
		waited, waitErr = route(routeRequest{RequestID: id("wait"), TokenIDs: fresh(3).tokens})
	}()
	// Wait, bounded, until the request shows in the queue or is answered.
	if err := tr.awaitQueued(ctx, waiting); err != nil {
		<-waiting
		return err
	}
	for _, name := range names {
		if err := mark("mark_prefill", id(name), 0); err != nil {
			<-waiting
			return err
		}
	}
	<-waiting // answered once a prefill completed, or by the router's queue timeout
	if waitErr != nil {
		return waitErr
	}
	if waited.Error == nil {
		if err := mark("mark_prefill", id("wait"), 0); err != nil {
			return err
		}
		names = append(names, "wait")
	}
	for _, name := range names {
		if err := mark("mark_free", id(name), 16); err != nil {
			return err
		}
	}
	for _, s := range stored {
		if err := tr.f.publish(removedEvent(s.w, s.p)); err != nil {
			return err
		}
	}
	return nil
}

// awaitQueued polls potential_loads until a request is pending, counting
// it, or until answered is closed or 5 s pass.
func (tr *traffic) awaitQueued(ctx context.Context, answered <-chan struct{}) error {
	poll := time.NewTicker(5 * time.Millisecond)
	defer poll.Stop()
	deadline := time.NewTimer(5 * time.Second)
	defer deadline.Stop()
	for {
		var loads loadsReply
		if err := tr.f.ask(ctx, "potential_loads", promptRequest{TokenIDs: tr.hot.tokens}, &loads); err != nil {
			return err
		}
		if loads.PendingCount > 0 {
			tr.queued++
			return nil
		}
		select {
		case <-answered:
			return nil
		case <-deadline.C:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		case <-poll.C:
		}
	}
}
