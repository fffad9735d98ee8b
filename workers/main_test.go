package workers

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/common/expfmt"

	"github.com/kvrouter/router/events"
	"github.com/kvrouter/router/indexer"
	kvtest "github.com/kvrouter/router/internal/testutil"
	"github.com/kvrouter/router/metrics"
)

func TestMain(m *testing.M) {
	kvtest.VerifyTestMain(m)
}

var update = flag.Bool("update", false, "rewrite the golden files in testdata/workers")

// The index writer is what the registry commands, and its notices what it
// consumes.
var (
	_ IndexWriter  = (*events.Writer)(nil)
	_ NoticeSource = (*events.Notices)(nil)
)

// env is a registry commanding the real index writer of a real index, with
// real metrics and a log the test can read; both run until the test ends
// (inside a synctest bubble when made in one).
type env struct {
	reg   *Registry
	idx   *indexer.Index
	w     *events.Writer
	m     *metrics.Router
	prom  *prometheus.Registry
	log   *logBuffer
	fleet *fleetRecorder
	// engines records what the registry tells its EngineSink.
	engines *engineRecorder
	// stopReg stops the registry's Run (its grace timers).
	stopReg func()
	// ids numbers the events store submits, per rank.
	ids map[indexer.Worker]uint64
}

func newEnv(t testing.TB, cfg Config) *env {
	t.Helper()
	e := &env{idx: indexer.NewIndex(indexer.Config{}), prom: prometheus.NewRegistry(), log: &logBuffer{},
		fleet: &fleetRecorder{}, engines: &engineRecorder{}, ids: map[indexer.Worker]uint64{}}
	var err error
	if e.m, err = metrics.New(e.prom, metrics.DefaultConfig()); err != nil {
		t.Fatal(err)
	}
	if e.w, err = events.NewWriter(events.DefaultConfig(), e.idx, e.m, e.log.logger()); err != nil {
		t.Fatal(err)
	}
	if e.reg, err = NewRegistry(cfg, Sinks{Index: e.w, Fleet: e.fleet, Engines: e.engines}, e.m, e.log.logger()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	wdone, rdone := make(chan error, 1), make(chan error, 1)
	go func() { wdone <- e.w.Run(ctx) }()
	rctx, rcancel := context.WithCancel(ctx)
	go func() { rdone <- e.reg.Run(rctx, e.w.Notices()) }()
	var once sync.Once
	e.stopReg = func() {
		once.Do(func() {
			rcancel()
			if err := <-rdone; err != nil {
				t.Errorf("registry: %v", err)
			}
		})
	}
	t.Cleanup(func() {
		e.stopReg()
		cancel()
		if err := <-wdone; err != nil {
			t.Errorf("writer: %v", err)
		}
	})
	return e
}

// sync waits until the writer applied every command queued so far.
func (e *env) sync(t testing.TB) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := e.w.Sync(ctx); err != nil {
		t.Fatalf("index writer sync: %v", err)
	}
}

// size returns how many blocks rank w holds once the writer has applied
// everything queued.
func (e *env) size(t testing.TB, w indexer.Worker) int {
	t.Helper()
	e.sync(t)
	return e.idx.Size(w)
}

// fleetRecorder keeps the last snapshot the registry handed its listener,
// and calls onChange, when set, with each.
type fleetRecorder struct {
	mu       sync.Mutex
	snap     *Snapshot
	n        int
	onChange func(*Snapshot)
}

func (f *fleetRecorder) FleetChanged(s *Snapshot) {
	f.mu.Lock()
	f.snap = s
	f.n++
	onChange := f.onChange
	f.mu.Unlock()
	if onChange != nil {
		onChange(s)
	}
}

// setOnChange sets the function FleetChanged calls.
func (f *fleetRecorder) setOnChange(fn func(*Snapshot)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.onChange = fn
}

func (f *fleetRecorder) last() *Snapshot {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.snap
}

// engineRecorder keeps the file workers the registry last gave its
// EngineSink, and how many times it did.
type engineRecorder struct {
	mu   sync.Mutex
	last []FileWorker
	n    int
}

func (r *engineRecorder) SetFileWorkers(ws []FileWorker) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.last, r.n = ws, r.n+1
}

// get returns the last set's ids and the number of calls.
func (r *engineRecorder) get() ([]uint64, int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	ids := []uint64{}
	for _, w := range r.last {
		ids = append(ids, uint64(w.ID))
	}
	return ids, r.n
}

// testConfig is DefaultConfig with etcd timeouts short enough for tests.
func testConfig() Config {
	cfg := DefaultConfig()
	cfg.EtcdTimeout = time.Second
	cfg.EtcdProbeInterval = 100 * time.Millisecond
	return cfg
}

// store indexes n blocks under rank w, a chain from the root, as one KV
// event through the writer, and waits until it is applied.
func (e *env) store(t testing.TB, w indexer.Worker, n int) {
	t.Helper()
	blocks := make([]indexer.Block, n)
	for i := range blocks {
		blocks[i] = indexer.Block{Hash: indexer.BlockHash(1000 + i), Tokens: indexer.LocalHash(10 + i)}
	}
	e.ids[w]++
	e.w.Submit(indexer.Event{Worker: w, Kind: indexer.KindStored, Blocks: blocks}, e.ids[w])
	if got := e.size(t, w); got < n {
		t.Fatalf("store %v: %d blocks indexed, want %d", w, got, n)
	}
}

// series returns the series of the family name as "label=value,..." →
// value, labels sorted.
func (e *env) series(t testing.TB, name string) map[string]float64 {
	t.Helper()
	mfs, err := e.prom.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			var ls []string
			for _, l := range m.GetLabel() {
				if l.GetName() == metrics.LabelNamespace || l.GetName() == metrics.LabelComponent {
					continue
				}
				ls = append(ls, l.GetName()+"="+l.GetValue())
			}
			slices.Sort(ls)
			v := m.GetGauge().GetValue() + m.GetCounter().GetValue()
			out[strings.Join(ls, ",")] = v
		}
	}
	return out
}

// counter returns the value of a counter series (0 when absent).
func (e *env) counter(t testing.TB, name, labels string) float64 {
	t.Helper()
	return e.series(t, name)[labels]
}

// checkGolden compares families of the exposition with a golden file under
// testdata/workers; -update rewrites it.
func (e *env) checkGolden(t *testing.T, file string, names ...string) {
	t.Helper()
	path := filepath.Join("..", "testdata", "workers", file)
	if *update {
		mfs, err := e.prom.Gather()
		if err != nil {
			t.Fatal(err)
		}
		var b bytes.Buffer
		enc := expfmt.NewEncoder(&b, expfmt.NewFormat(expfmt.TypeTextPlain))
		for _, mf := range mfs {
			if slices.Contains(names, mf.GetName()) {
				if err := enc.Encode(mf); err != nil {
					t.Fatal(err)
				}
			}
		}
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatalf("open golden file (go test ./workers/ -run %s -update creates it): %v", t.Name(), err)
	}
	defer f.Close()
	if err := testutil.GatherAndCompare(e.prom, f, names...); err != nil {
		t.Errorf("exposition differs from %s (-update rewrites it):\n%v", path, err)
	}
}

// logBuffer collects JSON log lines for assertions.
type logBuffer struct {
	kvtest.Buffer
	// discard drops what is written, for tests that measure memory.
	discard atomic.Bool
}

func (l *logBuffer) Write(p []byte) (int, error) {
	if l.discard.Load() {
		return len(p), nil
	}
	return l.Buffer.Write(p)
}

func (l *logBuffer) logger() *slog.Logger {
	return slog.New(slog.NewJSONHandler(l, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// count returns how many lines have message msg.
func (l *logBuffer) count(msg string) int {
	n := 0
	for _, line := range strings.Split(l.String(), "\n") {
		var rec struct {
			Msg string `json:"msg"`
		}
		if json.Unmarshal([]byte(line), &rec) == nil && rec.Msg == msg {
			n++
		}
	}
	return n
}

// Discovery entries as Dynamo writes them.

func instanceKey(ns, component string, id uint64) string {
	return fmt.Sprintf("v1/instances/%s/%s/generate/%x", ns, component, id)
}

func cardKey(ns, component string, id uint64) string {
	return fmt.Sprintf("v1/mdc/%s/%s/generate/%x", ns, component, id)
}

func instanceValue(ns, component string, id uint64) string {
	return fmt.Sprintf(`{"type":"Endpoint","namespace":%q,"component":%q,"endpoint":"generate","instance_id":%d,"transport":{"nats_tcp":"%s_%s.generate-%x"}}`,
		ns, component, id, ns, component, id)
}

// cardSpec is the variable part of a model card.
type cardSpec struct {
	blockSize, totalKVBlocks, maxNumSeqs, maxNumBatchedTokens int
	dpStart, dpSize                                           int
}

func cardValue(ns, component string, id uint64, c cardSpec) string {
	rc := map[string]any{
		"total_kv_blocks": c.totalKVBlocks, "max_num_seqs": c.maxNumSeqs, "max_num_batched_tokens": c.maxNumBatchedTokens,
		"data_parallel_start_rank": c.dpStart, "data_parallel_size": max(c.dpSize, 1), "enable_local_indexer": true,
	}
	v := map[string]any{
		"type": "Model", "namespace": ns, "component": component, "endpoint": "generate", "instance_id": id,
		"card_json": map[string]any{"display_name": "Qwen/Qwen3-0.6B", "kv_cache_block_size": c.blockSize, "runtime_config": rc},
	}
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return string(b)
}

// puts builds the changes of a listing from key/value pairs.
func puts(kv ...string) []change {
	var cs []change
	for i := 0; i+1 < len(kv); i += 2 {
		cs = append(cs, change{key: kv[i], value: []byte(kv[i+1]), modRev: int64(i + 1)})
	}
	return cs
}

// ids returns the ids of the snapshot's workers.
func ids(s *Snapshot) []uint64 {
	var out []uint64
	for _, w := range s.Workers() {
		out = append(out, uint64(w.ID))
	}
	return out
}

func labels(kv map[string]string) string {
	keys := slices.Sorted(maps.Keys(kv))
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + kv[k]
	}
	return strings.Join(parts, ",")
}

func registeredLabels(id uint64, rank int, typ string) string {
	return labels(map[string]string{"router_worker_id": strconv.FormatUint(id, 10), "dp_rank": strconv.Itoa(rank), "worker_type": typ})
}
