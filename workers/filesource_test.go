package workers

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/kvrouter/router/indexer"
	"github.com/kvrouter/router/internal/testutil"
	"github.com/kvrouter/router/metrics"
)

// fileSetup is a registry fed by a workers file in a temporary directory,
// read again at each value sent on reload.
type fileSetup struct {
	*env
	path   string
	reload chan os.Signal
	src    *FileSource
}

// newFileSetup writes content as the workers file and builds a registry
// of cfg (given the file's path) and its file source, not yet running.
func newFileSetup(t *testing.T, cfg Config, content string) *fileSetup {
	t.Helper()
	f := &fileSetup{path: filepath.Join(t.TempDir(), "workers.json"), reload: make(chan os.Signal)}
	f.write(t, content)
	cfg.WorkersFile = f.path
	f.env = newEnv(t, cfg)
	var err error
	if f.src, err = NewFileSource(cfg, f.reg, f.reload); err != nil {
		t.Fatal(err)
	}
	return f
}

func (f *fileSetup) write(t *testing.T, content string) {
	t.Helper()
	if err := os.WriteFile(f.path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// hup sends SIGHUP on the reload channel; the source has read the file
// again once the call after it (another send) is taken, or the test
// polls for the outcome.
func (f *fileSetup) hup() { f.reload <- syscall.SIGHUP }

func (f *fileSetup) malformed(t *testing.T) float64 {
	t.Helper()
	return f.counter(t, metrics.NameDiscoveryMalformedTotal, "kind="+metrics.DiscoveryWorkersFile)
}

const (
	// Worker 1 (two ranks, a URL, KV events) and prefill worker 2.
	fileV1 = `{"workers": [
	  {"worker_id": 1, "component": "backend", "block_size": 128, "data_parallel_size": 2, "total_kv_blocks": 1000,
	   "url": "http://10.0.0.1:8000", "kv_events": {"endpoint": "tcp://10.0.0.1:5557", "engine": "vllm"}},
	  {"worker_id": 2, "component": "prefill", "block_size": 128}]}`
	// Worker 2 gone, worker 1 down to one rank at another URL, worker 3
	// new with another block size.
	fileV2 = `{"workers": [
	  {"worker_id": 3, "component": "backend", "block_size": 64},
	  {"worker_id": 1, "component": "backend", "block_size": 128, "total_kv_blocks": 1000,
	   "url": "http://10.0.0.9:8000", "kv_events": {"endpoint": "tcp://10.0.0.1:5557", "engine": "vllm"}}]}`
)

// The workers file alone, without etcd: its workers register as etcd's
// would, and each SIGHUP reading adds, removes and changes them, clearing
// the blocks of what left; a bad reading keeps the last good set.
func TestFileSourceReload(t *testing.T) {
	cfg := testConfig()
	cfg.NoEtcd = true
	f := newFileSetup(t, cfg, fileV1)
	if st := f.reg.Status(); st.Ready || st.Reason != "workers file not read yet" || !st.EtcdOff {
		t.Errorf("before the first reading: %+v", st)
	}
	testutil.RunUntilCleanup(t, f.src.Run)
	waitWorkers(t, f.env, 1, 2)
	testutil.Eventually(t, within, f.reg.Ready, "not ready: %+v", testutil.Later(func() string { return fmt.Sprint(f.reg.Status()) }))

	w1, _ := f.reg.Snapshot().Get(1)
	want := Worker{ID: 1, Type: TypeDecode, Namespace: "dynamo", Component: "backend", DPSize: 2, BlockSize: 128, TotalKVBlocks: 1000,
		HasCard: true, Source: SourceFile, URL: "http://10.0.0.1:8000"}
	if diff := cmp.Diff(want, w1); diff != "" {
		t.Errorf("worker 1 (-want +got):\n%s", diff)
	}
	if w2, _ := f.reg.Snapshot().Get(2); w2.Type != TypePrefill || w2.URL != "" || w2.Source != SourceFile {
		t.Errorf("worker 2: %+v", w2)
	}
	if got := f.reg.WorkerURL(1); got != "http://10.0.0.1:8000" {
		t.Errorf("WorkerURL(1) = %q", got)
	}
	if ids, n := f.engines.get(); !slices.Equal(ids, []uint64{1, 2}) || n != 1 {
		t.Errorf("engine sink told %v, %d times; want [1 2] once", ids, n)
	}
	for _, w := range []indexer.Worker{{ID: 1}, {ID: 1, DPRank: 1}, {ID: 2}} {
		f.store(t, w, 3)
	}

	// Reload: 2 leaves with its blocks, 1 loses rank 1 and its blocks and
	// changes URL, 3 joins with a block size the router does not use.
	f.write(t, fileV2)
	f.hup()
	waitWorkers(t, f.env, 1, 3)
	for w, want := range map[indexer.Worker]int{{ID: 1}: 3, {ID: 1, DPRank: 1}: 0, {ID: 2}: 0} {
		if got := f.size(t, w); got != want {
			t.Errorf("rank %v holds %d blocks after the reload, want %d", w, got, want)
		}
	}
	if got := f.reg.WorkerURL(1); got != "http://10.0.0.9:8000" {
		t.Errorf("WorkerURL(1) after the reload = %q", got)
	}
	if w3, _ := f.reg.Snapshot().Get(3); !w3.BlockSizeMismatch {
		t.Errorf("worker 3 with block size 64 is no mismatch: %+v", w3)
	}
	if mm := f.reg.Status().BlockSizeMismatches; len(mm) != 1 || mm[0].WorkerID != 3 {
		t.Errorf("mismatches %+v, want worker 3", mm)
	}
	testutil.Eventually(t, within, func() bool { ids, n := f.engines.get(); return slices.Equal(ids, []uint64{1, 3}) && n == 2 },
		"engine sink: %v", testutil.Later(func() string { return fmt.Sprint(f.engines.get()) }))
	if got := f.series(t, metrics.NameRouterWorkerRegistered); !cmp.Equal(got, map[string]float64{
		registeredLabels(1, 0, "decode"): 1, registeredLabels(3, 0, "decode"): 1}) {
		t.Errorf("registered series %v", got)
	}

	// A bad reading is counted and logged, and changes nothing.
	f.write(t, oneWorker(`, "kv_events": {"endpoint": "tcp://x", "engine": "vllm"}`))
	f.hup()
	testutil.Eventually(t, within, func() bool { return f.malformed(t) == 1 }, "bad reading not counted")
	st := f.reg.Status()
	if want := `workers file: workers[0].kv_events.endpoint: "tcp://x" has no port`; st.FileError != want || !st.Ready {
		t.Errorf("status after a bad reading: %+v, want ready with file error %s", st, want)
	}
	if got := ids(f.reg.Snapshot()); !slices.Equal(got, []uint64{1, 3}) {
		t.Errorf("workers after a bad reading: %v, want the last good set", got)
	}
	if n := f.log.count("workers file refused; keeping its last good set"); n != 1 {
		t.Errorf("%d warnings of the bad reading, want 1", n)
	}
	// So does a file that went missing.
	if err := os.Remove(f.path); err != nil {
		t.Fatal(err)
	}
	f.hup()
	testutil.Eventually(t, within, func() bool { return f.malformed(t) == 2 }, "missing file not counted")
	if _, n := f.engines.get(); n != 2 {
		t.Errorf("engine sink told %d times, want 2 (no bad reading)", n)
	}

	// A good reading again, the same as the last good one: nothing
	// changes, the file error is gone, and the sink hears of it anyway.
	f.write(t, fileV2)
	f.hup()
	testutil.Eventually(t, within, func() bool { _, n := f.engines.get(); return n == 3 }, "good reading not told to the sink")
	if st := f.reg.Status(); st.FileError != "" || !st.Ready {
		t.Errorf("status after a good reading: %+v", st)
	}
	if got := f.reg.Snapshot().Version(); got != 2 {
		t.Errorf("snapshot version %d, want 2: an unchanged file changed the workers", got)
	}

	// An empty file removes every worker.
	f.write(t, `{"workers": []}`)
	f.hup()
	waitWorkers(t, f.env)
	if n := f.size(t, indexer.Worker{ID: 1}); n != 0 {
		t.Errorf("worker 1 holds %d blocks after leaving", n)
	}
	if !f.reg.Ready() {
		t.Errorf("not ready once the workers left: %+v", f.reg.Status())
	}
}

// A first reading that fails ends the source with its error, counted; the
// registry never gets ready.
func TestFileSourceFirstReadingFails(t *testing.T) {
	for _, tc := range []struct {
		name, content string
		want          func(error) bool
	}{
		{"missing", "", func(err error) bool { return errors.Is(err, fs.ErrNotExist) }},
		{"malformed", `{"workers": [{"worker_id": 0}]}`, func(err error) bool {
			return err.Error() == "workers file: workers[0].worker_id: 0 is not a worker id"
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig()
			cfg.NoEtcd = true
			f := newFileSetup(t, cfg, tc.content)
			if tc.content == "" {
				if err := os.Remove(f.path); err != nil {
					t.Fatal(err)
				}
			}
			err := f.src.Run(context.Background())
			if err == nil || !errors.Is(err, ErrWorkersFile) || !tc.want(err) {
				t.Fatalf("Run = %v", err)
			}
			if f.malformed(t) != 1 {
				t.Errorf("first bad reading not counted")
			}
			if f.log.count("workers file refused; keeping its last good set") != 0 {
				t.Errorf("the returned error was logged too")
			}
			if st := f.reg.Status(); st.Ready || st.Reason != "workers file not read yet" {
				t.Errorf("status %+v", st)
			}
		})
	}
}

func TestFileConfig(t *testing.T) {
	cfg := testConfig()
	cfg.NoEtcd = true
	want := "--etcd-endpoints: empty turns etcd discovery off, which needs --workers-file (DYN_ROUTER_WORKERS_FILE): no worker could register"
	if err := cfg.Validate(); err == nil || err.Error() != want || !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("Validate = %v, want %s", err, want)
	}
	e := newEnv(t, testConfig())
	if _, err := NewFileSource(testConfig(), e.reg, nil); err == nil {
		t.Error("a file source without a file")
	}
}

// With etcd and the file, the sets merge; a worker id in both is etcd's,
// and its file entry is refused, logged and counted, until etcd lets go of
// it. The engine sink hears only of accepted file workers.
func TestRegistryFileAndEtcd(t *testing.T) {
	etcd := testutil.Etcd(t)
	cli := testutil.EtcdClient(t, etcd.Endpoint())
	register(t, cli, "backend", 0x1a, cardSpec{blockSize: 128})
	register(t, cli, "backend", 0x2b, cardSpec{blockSize: 128, dpSize: 2})
	f := newFileSetup(t, testConfig(), `{"workers": [
	  {"worker_id": 43, "component": "prefill", "block_size": 128, "url": "http://file-2b",
	   "kv_events": {"endpoint": "tcp://h:5557", "engine": "sglang"}},
	  {"worker_id": 60, "component": "backend", "block_size": 128, "url": "http://file-3c"}]}`) // 0x2b, 0x3c
	if st := f.reg.Status(); st.Ready || st.Reason != "workers not listed from etcd yet" {
		t.Errorf("before either source: %+v", st)
	}
	testutil.RunUntilCleanup(t, f.src.Run)
	// Read, the file's workers wait for etcd's listing: etcd's win from
	// the first snapshot on.
	testutil.Eventually(t, within, func() bool { _, n := f.engines.get(); return n == 1 }, "file not read")
	if st := f.reg.Status(); st.Ready || st.Workers != 0 {
		t.Errorf("file read, etcd not listed: %+v", st)
	}
	startDiscovery(t, f.env, etcd.Endpoint(), nil)
	waitWorkers(t, f.env, 0x1a, 0x2b, 0x3c)
	testutil.Eventually(t, within, f.reg.Ready, "not ready")

	conflicts := func() float64 { return f.counter(t, metrics.NameWorkersFileConflictsTotal, "") }
	w, _ := f.reg.Snapshot().Get(0x2b)
	if w.Source != SourceEtcd || w.Type != TypeDecode || w.DPSize != 2 || w.URL != "" {
		t.Errorf("worker 0x2b is not etcd's: %+v", w)
	}
	if w, _ := f.reg.Snapshot().Get(0x3c); w.Source != SourceFile || w.URL != "http://file-3c" {
		t.Errorf("worker 0x3c is not the file's: %+v", w)
	}
	if c := conflicts(); c != 1 {
		t.Errorf("%v conflicts counted, want 1", c)
	}
	if st := f.reg.Status(); !slices.Equal(st.FileConflicts, []indexer.WorkerID{0x2b}) {
		t.Errorf("status conflicts %v", st.FileConflicts)
	}
	testutil.Eventually(t, within, func() bool { ids, _ := f.engines.get(); return slices.Equal(ids, []uint64{0x3c}) },
		"engine sink: %v", testutil.Later(func() string { return fmt.Sprint(f.engines.get()) }))

	// etcd registers the file's 0x3c too: etcd's wins.
	register(t, cli, "backend", 0x3c, cardSpec{blockSize: 128})
	testutil.Eventually(t, within, func() bool { w, _ := f.reg.Snapshot().Get(0x3c); return w.Source == SourceEtcd }, "0x3c not etcd's")
	if f.reg.WorkerURL(0x3c) != "" || conflicts() != 2 {
		t.Errorf("0x3c: url %q, %v conflicts", f.reg.WorkerURL(0x3c), conflicts())
	}
	testutil.Eventually(t, within, func() bool { ids, _ := f.engines.get(); return len(ids) == 0 }, "engine sink still names 0x3c")

	// etcd lets go of 0x2b: the file's entry is taken, a prefill worker
	// with one rank; rank 1 of etcd's 0x2b loses its blocks.
	f.store(t, indexer.Worker{ID: 0x2b, DPRank: 1}, 2)
	del(t, cli, instanceKey("dynamo", "backend", 0x2b))
	testutil.Eventually(t, within, func() bool { w, _ := f.reg.Snapshot().Get(0x2b); return w.Source == SourceFile }, "0x2b not the file's")
	if w, _ := f.reg.Snapshot().Get(0x2b); w.Type != TypePrefill || w.DPSize != 1 || w.URL != "http://file-2b" {
		t.Errorf("0x2b from the file: %+v", w)
	}
	if n := f.size(t, indexer.Worker{ID: 0x2b, DPRank: 1}); n != 0 {
		t.Errorf("rank 1 of 0x2b holds %d blocks", n)
	}
	if st := f.reg.Status(); !slices.Equal(st.FileConflicts, []indexer.WorkerID{0x3c}) {
		t.Errorf("status conflicts %v, want [0x3c]", st.FileConflicts)
	}
	testutil.Eventually(t, within, func() bool { ids, _ := f.engines.get(); return slices.Equal(ids, []uint64{0x2b}) }, "engine sink lacks 0x2b")
	// A conflict is logged once while it lasts: 0x2b and 0x3c, once each.
	if n := f.log.count("workers file names a worker that etcd registers; etcd's wins, the file's entry is refused"); n != 2 {
		t.Errorf("%d conflict warnings, want 2", n)
	}
	if c := conflicts(); c != 2 {
		t.Errorf("%v conflicts counted, want 2", c)
	}
}

// BenchmarkWorkerURL times the look-up of a route reply's worker_url, among
// 1,000 file workers.
func BenchmarkWorkerURL(b *testing.B) {
	cfg := testConfig()
	cfg.NoEtcd, cfg.WorkersFile = true, "workers.json"
	e := newEnv(b, cfg)
	ws := make([]FileWorker, 1000)
	for i := range ws {
		ws[i] = FileWorker{ID: indexer.WorkerID(i + 1), Component: cfg.Component, BlockSize: cfg.BlockSize, DPSize: 1,
			URL: fmt.Sprintf("http://10.0.%d.%d:8000", i/256, i%256)}
	}
	e.reg.loadFile(cfg.WorkersFile, ws)
	b.ReportAllocs()
	id := indexer.WorkerID(1)
	for b.Loop() {
		if e.reg.WorkerURL(id) == "" {
			b.Fatal("no url")
		}
		id = id%1000 + 1
	}
}
