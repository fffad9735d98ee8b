package stack

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kvrouter/router/events"
	"github.com/kvrouter/router/indexer"
	"github.com/kvrouter/router/internal/testutil"
	"github.com/kvrouter/router/metrics"
	"github.com/kvrouter/router/scheduler"
	"github.com/kvrouter/router/service"
	"github.com/kvrouter/router/status"
	"github.com/kvrouter/router/workers"
)

// A router without etcd (an empty --etcd-endpoints), its workers from the
// workers file: it gets ready, /health does not count etcd as down, it
// routes to the file's workers with their KV events and echoes their URL,
// and a reload on the injected SIGHUP channel takes a worker away with its
// blocks, while a bad reload degrades /health and keeps the last good set.
func TestRouteToFileWorkerWithoutEtcd(t *testing.T) {
	ns := testutil.NATS(t)
	path := filepath.Join(t.TempDir(), "workers.json")
	write := func(content string) {
		t.Helper()
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(`{"workers": [
	  {"worker_id": 26, "component": "backend", "block_size": 4, "total_kv_blocks": 1000, "max_num_batched_tokens": 256, "url": "http://10.0.0.5:8000"},
	  {"worker_id": 27, "component": "backend", "block_size": 4, "total_kv_blocks": 1000, "max_num_batched_tokens": 256, "url": "http://10.0.0.6:8000"}]}`)
	m, err := metrics.New(prometheus.NewRegistry(), metrics.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	reload := make(chan os.Signal)
	cfg := Config{RouterID: 1, KVEvents: true, Events: events.DefaultConfig(), Workers: workers.DefaultConfig(),
		Scheduler: scheduler.DefaultConfig(), Service: service.DefaultConfig(), WorkersFileReload: reload,
		Status:   &status.Config{Host: "127.0.0.1", Port: 0, HealthPath: "/health", LivePath: "/live", StartingStatus: "notready"},
		Gatherer: prometheus.NewRegistry()}
	cfg.Workers.BlockSize, cfg.Scheduler.BlockSize = blockSize, blockSize
	cfg.Workers.NoEtcd, cfg.Workers.WorkersFile = true, path
	c := &cluster{t: t, nc: testutil.NATSConn(t, ns.URL()), ids: map[indexer.Worker]uint64{}}
	if c.st, err = New(cfg, testutil.NATSConn(t, ns.URL()), nil, m, nil); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	c.cancel, c.done = cancel, make(chan error, 1)
	go func() { c.done <- c.st.Run(ctx) }()
	t.Cleanup(c.stop)

	get := func() (int, healthBody) { return getHealth(t, c.st) }
	testutil.Eventually(t, 10*time.Second, func() bool { code, _ := get(); return code == http.StatusOK }, "/health ready")
	testutil.Eventually(t, 10*time.Second, func() bool {
		_, err := c.nc.Request(service.Subject("dynamo", "router", "overlap_scores"), []byte(`{"token_ids":[]}`), time.Second)
		return err == nil
	}, "routing service answering")
	if _, h := get(); h.Endpoints["etcd"] != "ready" || h.Endpoints["workers"] != "ready" || len(h.Degraded) != 0 {
		t.Errorf("/health without etcd: %+v", h)
	}

	// Worker 26 holds the prompt: the route goes there, with its URL.
	prompt := tokens(100, 3*blockSize)
	c.store(indexer.Worker{ID: 26}, prompt)
	testutil.Eventually(t, 10*time.Second, func() bool { return c.overlaps(prompt)[indexer.Worker{ID: 26}] == 3 }, "worker 26's blocks indexed")
	type reply struct {
		WorkerID      uint64 `json:"worker_id"`
		OverlapBlocks int    `json:"overlap_blocks"`
		WorkerURL     string `json:"worker_url"`
	}
	var r reply
	if code := c.request("route", map[string]any{"request_id": "a", "token_ids": prompt}, &r); code != "" {
		t.Fatalf("route: %s", code)
	}
	if r != (reply{WorkerID: 26, OverlapBlocks: 3, WorkerURL: "http://10.0.0.5:8000"}) {
		t.Errorf("route reply %+v, want worker 26 at http://10.0.0.5:8000 with 3 blocks", r)
	}
	c.request("mark_free", map[string]any{"request_id": "a"}, nil)

	// A reload without worker 26: its blocks go, routes go to 27.
	write(`{"workers": [{"worker_id": 27, "component": "backend", "block_size": 4, "url": "http://10.0.0.6:8000"}]}`)
	reload <- syscall.SIGHUP
	c.waitRanks(26, 0)
	testutil.Eventually(t, 10*time.Second, func() bool { return len(c.overlaps(prompt)) == 0 }, "worker 26's blocks dropped")
	r = reply{}
	if code := c.request("route", map[string]any{"token_ids": prompt, "book": false}, &r); code != "" {
		t.Fatalf("route after the reload: %s", code)
	}
	if r != (reply{WorkerID: 27, WorkerURL: "http://10.0.0.6:8000"}) {
		t.Errorf("route reply after the reload %+v, want worker 27", r)
	}

	// A bad reload: degraded, still ready, still routing to 27.
	write(`{"workers": [{"worker_id": 27}]}`)
	reload <- syscall.SIGHUP
	testutil.Eventually(t, 10*time.Second, func() bool { _, h := get(); return len(h.Degraded) > 0 }, "bad reload shown as degraded")
	code, h := get()
	if want := "workers: serving the workers file's last good set: workers file: workers[0].component: missing (required)"; code != http.StatusOK || len(h.Degraded) != 1 || h.Degraded[0] != want {
		t.Errorf("/health after a bad reload: %d %+v, want 200 and %q", code, h, want)
	}
	c.waitRanks(27, 1)
	if !strings.Contains(c.st.Registry().Status().FileError, "component: missing") {
		t.Errorf("registry status %+v", c.st.Registry().Status())
	}
}
