package workers

import (
	"cmp"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	radix "github.com/armon/go-radix"

	"github.com/kvrouter/router/indexer"
	"github.com/kvrouter/router/metrics"
)

// IndexWriter is the one writer of the KV index, as the registry commands
// it. Each method queues a command in order behind the worker's KV events
// already queued and returns without waiting; none fails or blocks. The
// registry calls them while holding its lock, in the order of the changes
// they stand for. *events.Writer implements it.
type IndexWriter interface {
	// WorkerJoined: the worker registered; its events are no longer an
	// unknown worker's.
	WorkerJoined(id indexer.WorkerID)
	// WorkerLeft: the worker left discovery; drop every block it holds.
	WorkerLeft(id indexer.WorkerID)
	// ClearRank: the worker's card dropped the rank; drop its blocks.
	ClearRank(rank indexer.Worker)
	// DropUnregistered: the grace period of a worker that sent KV events
	// without registering ended; drop its blocks, unless it registered
	// since, and count its events as dropped.
	DropUnregistered(id indexer.WorkerID)
}

// FleetListener learns every new set of workers, in order: the scheduler,
// which chooses among them (through an adapter that makes its candidates).
// FleetChanged is called while the registry holds its lock, right before the
// snapshot is published; it must return quickly and never call back into
// the Registry.
type FleetListener interface {
	FleetChanged(s *Snapshot)
}

// NoticeSource tells the registry of workers whose KV events reach the index
// while they are not registered (*events.Notices): Ready receives a value
// when Take has ids to return. Safe for concurrent use.
type NoticeSource interface {
	Ready() <-chan struct{}
	Take() []indexer.WorkerID
}

// Sinks are where the registry sends the consequences of each change of a
// worker's life.
type Sinks struct {
	// Index receives the lifecycle commands (required).
	Index IndexWriter
	// Fleet hears of every new set of workers; nil for none.
	Fleet FleetListener
	// Engines hears of the workers file's workers whose KV events the
	// router subscribes to itself; nil for none.
	Engines EngineSink
}

// Registry knows which workers exist: it holds Dynamo's discovery entries
// (fed by Discovery) and the workers file's workers (fed by FileSource),
// derives the workers from them, publishes them as a Snapshot, keeps their
// load (fed by LoadSubscriber), and keeps the index and the per-worker
// metrics in step with them. See the package documentation for its locks.
type Registry struct {
	cfg     Config
	idx     IndexWriter
	fleet   FleetListener
	engines EngineSink
	m       *Metrics
	log     *slog.Logger

	snap atomic.Pointer[Snapshot]

	// mu guards the fields below and serialises every write of per-worker
	// metrics, so that a series is never re-created after its worker's
	// series were deleted. The outermost lock of the router: the sinks are
	// called under it (docs/locks.md).
	mu sync.Mutex
	// tree maps each relevant etcd key to its decoded *entry; prefix walks
	// find a component's instances and cards.
	tree *radix.Tree
	// bad maps malformed keys to the mod revision already counted, so a
	// relist does not count the same bad value again.
	bad     map[string]int64
	version uint64
	// Per-worker memory of what was already said, so each thing is logged
	// (and a mismatch counted) once per worker, not at every rebuild.
	mismatchCounted map[indexer.WorkerID]bool
	dupWarned       map[indexer.WorkerID]bool
	// pending are the unregistered workers in their grace period
	// (grace.go).
	pending map[indexer.WorkerID]*pending
	closed  bool
	// etcd, listed and minMet make up readiness; etcdSince is when etcd
	// entered its current state (the staleness of the workers while it is
	// down).
	etcd      etcdState
	etcdErr   error
	etcdSince time.Time
	listed    bool
	minMet    bool

	// file is the workers file's last good set, sorted by id; fileLoaded
	// says the file was read once, fileErr why its last reading failed
	// (nil once one succeeds).
	file       []FileWorker
	fileLoaded bool
	fileErr    error
	// conflicts are the file's worker ids refused because etcd registers
	// them too, each logged and counted once while it lasts.
	conflicts map[indexer.WorkerID]bool
	// accepted are the file's workers in the snapshot (file less
	// conflicts), and engineSet what the EngineSink was last told.
	accepted, engineSet []FileWorker

	// loadMu guards loads. Lock order: mu, then loadMu (docs/locks.md).
	loadMu sync.RWMutex
	loads  map[indexer.Worker]Load
}

// etcdState is what discovery last learned of etcd.
type etcdState uint8

const (
	etcdUnknown etcdState = iota
	etcdUp
	etcdDown
)

// entry is one relevant discovery key and what it decoded to.
type entry struct {
	key key
	// card is the decoded model card (cards only).
	card *card
}

// change is one key as etcd reports it: a put with its value, or a delete.
type change struct {
	key     string
	value   []byte
	modRev  int64
	deleted bool
}

// NewRegistry returns an empty registry, not ready until discovery lists
// etcd. sinks.Index and m are required; log may be nil. It starts nothing:
// Run consumes the index writer's notices of unregistered workers.
func NewRegistry(cfg Config, sinks Sinks, m *metrics.Router, log *slog.Logger) (*Registry, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if sinks.Index == nil || m == nil {
		return nil, errors.New("worker registry: nil index writer or metrics")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	wm, err := NewMetrics(m)
	if err != nil {
		return nil, fmt.Errorf("worker registry: %w", err)
	}
	r := &Registry{
		cfg: cfg, idx: sinks.Index, fleet: sinks.Fleet, engines: sinks.Engines, m: wm, log: log,
		tree:            radix.New(),
		bad:             map[string]int64{},
		mismatchCounted: map[indexer.WorkerID]bool{},
		dupWarned:       map[indexer.WorkerID]bool{},
		pending:         map[indexer.WorkerID]*pending{},
		loads:           map[indexer.Worker]Load{},
		conflicts:       map[indexer.WorkerID]bool{},
	}
	r.snap.Store(newSnapshot(0, nil))
	return r, nil
}

// Snapshot returns the current set of workers. It never blocks and never
// returns nil.
func (r *Registry) Snapshot() *Snapshot { return r.snap.Load() }

// WorkerURL returns the URL of a registered worker (FileWorker.URL), or ""
// when it is not registered or its URL is unknown. It never blocks.
func (r *Registry) WorkerURL(id indexer.WorkerID) string {
	w, _ := r.snap.Load().Get(id)
	return w.URL
}

// Load returns the last load reported for a registered rank, and false if
// the rank is not registered or never reported.
func (r *Registry) Load(w indexer.Worker) (Load, bool) {
	r.loadMu.RLock()
	defer r.loadMu.RUnlock()
	l, ok := r.loads[w]
	return l, ok
}

// Status is the registry's part of /health.
type Status struct {
	// Ready is true once etcd was listed (unless etcd is off), the workers
	// file was read (if there is one), and at least MinInitialWorkers
	// workers registered (once; later departures do not make the registry
	// unready), as long as the workers are not Stale. An etcd outage alone
	// leaves the registry ready: the last known workers are served. So
	// does a reading of the workers file that failed: its last good set is.
	Ready bool `json:"ready"`
	// Reason says why the registry is not ready.
	Reason string `json:"reason,omitempty"`
	// EtcdReachable is false while discovery cannot reach etcd; the last
	// known workers are served meanwhile.
	EtcdReachable bool `json:"etcd_reachable"`
	// EtcdError is why discovery last failed to reach etcd, while it does.
	EtcdError string `json:"etcd_error,omitempty"`
	// Staleness is how old the last known workers are: 0 while discovery
	// reaches etcd (its watch keeps them current), else the time since it
	// found etcd unreachable.
	Staleness time.Duration `json:"staleness"`
	// Stale is true when Staleness is past MaxStaleness (and that is set):
	// the registry no longer vouches for its workers and is not ready.
	Stale bool `json:"stale"`
	// MaxStaleness is Config.MaxStaleness; 0 means never stale.
	MaxStaleness time.Duration `json:"max_staleness"`
	// Listed is true once discovery listed etcd.
	Listed bool `json:"listed"`
	// EtcdOff says etcd discovery is off (Config.NoEtcd): EtcdReachable
	// and Listed are then false and mean nothing.
	EtcdOff bool `json:"etcd_off,omitempty"`
	// FileError is why the last reading of the workers file failed, while
	// no later one succeeded: the last good set is served meanwhile.
	FileError string `json:"file_error,omitempty"`
	// FileConflicts lists the workers file's worker ids refused because
	// etcd registers them too.
	FileConflicts []indexer.WorkerID `json:"file_conflicts,omitempty"`
	// Workers counts registered workers, all types.
	Workers           int `json:"workers"`
	MinInitialWorkers int `json:"min_initial_workers"`
	// BlockSizeMismatches lists the registered workers whose block size
	// differs from the router's, by id.
	BlockSizeMismatches []Mismatch `json:"block_size_mismatches,omitempty"`
}

// Mismatch is one worker whose block size differs from the router's.
type Mismatch struct {
	WorkerID        indexer.WorkerID `json:"worker_id"`
	WorkerType      Type             `json:"worker_type"`
	BlockSize       int              `json:"block_size"`
	RouterBlockSize int              `json:"router_block_size"`
}

// String reads "decode worker 7 has block size 64".
func (m Mismatch) String() string {
	return fmt.Sprintf("%s worker %d has block size %d", m.WorkerType, m.WorkerID, m.BlockSize)
}

// Status reports readiness and its parts.
func (r *Registry) Status() Status {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.snap.Load()
	st := Status{
		EtcdReachable:     r.etcd == etcdUp,
		Listed:            r.listed,
		Workers:           s.Len(),
		MinInitialWorkers: r.cfg.MinInitialWorkers,
		MaxStaleness:      r.cfg.MaxStaleness,
		EtcdOff:           r.cfg.NoEtcd,
	}
	if r.fileErr != nil {
		st.FileError = r.fileErr.Error()
	}
	for id := range r.conflicts {
		st.FileConflicts = append(st.FileConflicts, id)
	}
	slices.Sort(st.FileConflicts)
	if r.etcd == etcdDown {
		st.EtcdError = fmt.Sprint(r.etcdErr)
		st.Staleness = time.Since(r.etcdSince)
		st.Stale = r.listed && r.cfg.MaxStaleness > 0 && st.Staleness > r.cfg.MaxStaleness
	}
	etcdPending := !r.cfg.NoEtcd && !r.listed
	switch {
	case etcdPending && r.etcd == etcdDown:
		st.Reason = fmt.Sprintf("workers not listed from etcd yet: etcd unreachable: %s", st.EtcdError)
	case etcdPending:
		st.Reason = "workers not listed from etcd yet"
	case r.cfg.WorkersFile != "" && !r.fileLoaded:
		st.Reason = "workers file not read yet"
	case st.Stale:
		st.Reason = fmt.Sprintf("etcd unreachable for %v, past --router-workers-max-staleness %v: the last known workers are no longer trusted: %s",
			st.Staleness.Round(time.Second), r.cfg.MaxStaleness, st.EtcdError)
	case !r.minMet:
		st.Reason = fmt.Sprintf("%d of %d initial workers registered (DYN_ROUTER_MIN_INITIAL_WORKERS)", s.Len(), r.cfg.MinInitialWorkers)
	default:
		st.Ready = true
	}
	for _, w := range s.Workers() {
		if w.BlockSizeMismatch {
			st.BlockSizeMismatches = append(st.BlockSizeMismatches, Mismatch{WorkerID: w.ID, WorkerType: w.Type, BlockSize: w.BlockSize, RouterBlockSize: r.cfg.BlockSize})
		}
	}
	return st
}

// Ready reports Status().Ready.
func (r *Registry) Ready() bool { return r.Status().Ready }

// replace makes kvs, a full listing of the discovery prefixes, the whole
// content of the registry: keys that vanished since the last listing remove
// their workers. A malformed value keeps what its key held before, as a
// watch put of a malformed value does. It marks etcd listed and reachable.
func (r *Registry) replace(kvs []change) {
	r.mu.Lock()
	defer r.mu.Unlock()
	old := r.tree
	oldBad := r.bad
	r.tree, r.bad = radix.New(), map[string]int64{}
	for _, c := range kvs {
		e, err := r.decode(c)
		switch {
		case err != nil:
			if prev, ok := old.Get(c.key); ok {
				r.tree.Insert(c.key, prev)
			}
			r.malformed(c, err, oldBad[c.key] == c.modRev)
		case e != nil:
			r.tree.Insert(c.key, e)
		}
	}
	first := !r.listed
	r.listed = true
	r.setEtcdLocked(etcdUp, nil)
	r.rebuildLocked(false)
	if first {
		r.log.Info("workers listed from etcd", "workers", r.snap.Load().Len(), "keys", len(kvs))
	}
}

// apply applies the changes of one watch response, in order.
func (r *Registry) apply(cs []change) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, c := range cs {
		if c.deleted {
			r.tree.Delete(c.key)
			delete(r.bad, c.key)
			continue
		}
		e, err := r.decode(c)
		switch {
		case err != nil:
			r.malformed(c, err, r.bad[c.key] == c.modRev)
		case e != nil:
			r.tree.Insert(c.key, e)
			delete(r.bad, c.key)
		}
	}
	r.rebuildLocked(false)
}

// loadFile makes ws, a good reading of the workers file at path, the
// file's part of the registry: workers it no longer names leave, new ones
// join, changed ones change, as etcd's do. The EngineSink hears of the
// accepted set, even if unchanged.
func (r *Registry) loadFile(path string, ws []FileWorker) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.file = slices.SortedFunc(slices.Values(ws), func(a, b FileWorker) int { return cmp.Compare(a.ID, b.ID) })
	r.fileLoaded, r.fileErr = true, nil
	r.rebuildLocked(true)
	r.log.Info("workers file read", "path", path, "workers", len(ws), "etcd_conflicts", len(r.conflicts))
}

// fileFailed records a reading of the workers file that failed: counted in
// dynamo_component_router_discovery_malformed_total{kind="workers_file"}.
// The file's last good set stays. It is logged only when logIt (the first
// reading's error is returned instead, and ends the router).
func (r *Registry) fileFailed(path string, err error, logIt bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.fileErr = err
	r.m.DiscoveryMalformed.WithLabelValues(metrics.DiscoveryWorkersFile).Inc()
	if logIt {
		r.log.Warn("workers file refused; keeping its last good set", "path", path, "workers", len(r.file), "error", err)
	}
}

// loadedLocked reports whether every source of workers has loaded once:
// etcd listed (unless off) and the workers file read (if any).
func (r *Registry) loadedLocked() bool {
	return (r.cfg.NoEtcd || r.listed) && (r.cfg.WorkersFile == "" || r.fileLoaded)
}

// etcdDown records that discovery cannot reach etcd. The workers stay as
// they are until etcd answers again; the registry stays ready until the
// outage is older than MaxStaleness.
func (r *Registry) etcdDown(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.setEtcdLocked(etcdDown, err)
}

// setEtcdLocked records etcd's state, logging each change once and keeping
// the etcd gauges in step.
func (r *Registry) setEtcdLocked(s etcdState, err error) {
	prev := r.etcd
	r.etcd, r.etcdErr = s, err
	if s != prev {
		r.etcdSince = time.Now()
		r.m.SetEtcdReachable(s == etcdUp, r.etcdSince)
	}
	switch {
	case s == prev:
	case s == etcdDown:
		r.log.Warn("etcd unreachable; serving the last known workers", "error", err, "workers", r.snap.Load().Len())
	case prev == etcdDown:
		r.log.Info("etcd reachable again")
	}
}

// decode decodes one put. It returns a nil entry and no error for keys the
// registry does not track: other namespaces (the watch range covers some),
// other components and endpoints.
func (r *Registry) decode(c change) (*entry, error) {
	b, ok := bucketOf(c.key)
	if !ok || !strings.HasPrefix(c.key[len(b.root()):], r.cfg.Namespace+"/") {
		return nil, nil
	}
	k, err := parseKey(c.key)
	if err != nil {
		return nil, err
	}
	if k.endpoint != r.cfg.Endpoint || (k.component != r.cfg.Component && k.component != r.cfg.PrefillComponent) {
		return nil, nil
	}
	e := &entry{key: k}
	if b == bucketInstances {
		err = decodeInstance(k, c.value)
	} else {
		var cd card
		cd, err = decodeCard(k, c.value)
		e.card = &cd
	}
	if err != nil {
		return nil, fmt.Errorf("key %q: %w", c.key, err)
	}
	return e, nil
}

// malformed counts and logs a value that could not be decoded, unless this
// very revision of the key was counted before.
func (r *Registry) malformed(c change, err error, counted bool) {
	r.bad[c.key] = c.modRev
	if counted {
		return
	}
	kind := metrics.DiscoveryInstance
	if b, ok := bucketOf(c.key); ok {
		kind = b.kind()
	}
	r.m.DiscoveryMalformed.WithLabelValues(kind).Inc()
	r.log.Warn("skipping malformed discovery entry", "key", c.key, "kind", kind, "mod_revision", c.modRev, "error", err)
}

// rebuildLocked derives the workers from the tree and the workers file,
// publishes them if they changed, and brings the index, the metrics, the
// loads and the grace timers in step; then it tells the EngineSink of the
// file's accepted workers if they changed, or if tellEngines.
func (r *Registry) rebuildLocked(tellEngines bool) {
	old := r.snap.Load()
	next := r.collectLocked()
	if !slices.Equal(old.Workers(), next) {
		r.version++
		snap := newSnapshot(r.version, next)
		// What arrives is announced before the snapshot is published: whoever
		// sees a worker or rank in it, or is routed to it, finds the index
		// writer told and its registered series set.
		for _, w := range next {
			prev, existed := old.Get(w.ID)
			r.joinLocked(prev, existed, w)
		}
		// The scheduler hears next: whoever sees the new snapshot can route
		// to its workers. It lets go of departed ranks, and deletes their
		// dynamo_frontend_worker_* series itself; this package deletes its
		// own series of them below, once nobody routes to them.
		if r.fleet != nil {
			r.fleet.FleetChanged(snap)
		}
		r.snap.Store(snap)
		for _, w := range next {
			prev, existed := old.Get(w.ID)
			r.reconcileLocked(prev, existed, w)
		}
		for _, w := range old.Workers() {
			if _, ok := slices.BinarySearchFunc(next, w.ID, byID); !ok {
				r.removeLocked(w)
			}
		}
	}
	if r.loadedLocked() && len(next) >= r.cfg.MinInitialWorkers && !r.minMet {
		r.minMet = true
		r.log.Info("initial workers registered", "workers", len(next), "min_initial_workers", r.cfg.MinInitialWorkers)
	}
	// Last: the workers named have joined and those gone have left
	// (their removal queued), so the source subscribes only to registered
	// workers, and events still on their way from a departed one meet an
	// unregistered worker, as over NATS.
	if r.engines != nil && (tellEngines || !slices.EqualFunc(r.accepted, r.engineSet, sameFileWorker)) {
		r.engineSet = slices.Clone(r.accepted)
		r.engines.SetFileWorkers(slices.Clone(r.accepted))
	}
}

// sameFileWorker reports whether a and b say the same, their KVEvents
// compared by value.
func sameFileWorker(a, b FileWorker) bool {
	ka, kb := a.KVEvents, b.KVEvents
	a.KVEvents, b.KVEvents = nil, nil
	return a == b && (ka == kb || ka != nil && kb != nil && *ka == *kb)
}

func byID(w Worker, id indexer.WorkerID) int {
	switch {
	case w.ID < id:
		return -1
	case w.ID > id:
		return 1
	}
	return 0
}

// collectLocked derives the workers from the tree and the workers file,
// sorted by id, and sets r.accepted. An instance makes a worker; its card,
// if any, describes it. A worker registered under both components is taken
// as a decode worker. A file worker whose id etcd registers too is refused
// (etcd wins), logged and counted once while the conflict lasts. With etcd
// on, the file's workers join only once etcd was listed.
func (r *Registry) collectLocked() []Worker {
	var ws []Worker
	seen := map[indexer.WorkerID]Type{}
	for _, c := range []struct {
		component string
		t         Type
	}{{r.cfg.Component, TypeDecode}, {r.cfg.PrefillComponent, TypePrefill}} {
		path := r.cfg.Namespace + "/" + c.component + "/" + r.cfg.Endpoint + "/"
		cards := map[indexer.WorkerID]*card{}
		r.tree.WalkPrefix(cardsRoot+path, func(_ string, v any) bool {
			e := v.(*entry)
			// The base model's card (no suffix) wins over a LoRA adapter's;
			// both carry the instance's runtime config.
			if _, ok := cards[e.key.id]; !ok || e.key.suffix == "" {
				cards[e.key.id] = e.card
			}
			return false
		})
		r.tree.WalkPrefix(instancesRoot+path, func(_ string, v any) bool {
			e := v.(*entry)
			if t, dup := seen[e.key.id]; dup {
				if t != c.t && !r.dupWarned[e.key.id] {
					r.dupWarned[e.key.id] = true
					r.log.Warn("worker registered under both components; taken as a decode worker", "worker_id", e.key.id, "components", []string{r.cfg.Component, r.cfg.PrefillComponent})
				}
				return false
			}
			seen[e.key.id] = c.t
			ws = append(ws, r.worker(e.key, c.t, cards[e.key.id]))
			return false
		})
	}
	r.accepted = r.accepted[:0:0]
	// With etcd on, the file's workers wait for its first listing, so
	// that etcd's win from the first snapshot on: an id in both never
	// registers from the file first.
	file := r.file
	if !r.cfg.NoEtcd && !r.listed {
		file = nil
	}
	for _, f := range file {
		if _, dup := seen[f.ID]; dup {
			if !r.conflicts[f.ID] {
				r.conflicts[f.ID] = true
				r.m.FileConflicts.Inc()
				r.log.Warn("workers file names a worker that etcd registers; etcd's wins, the file's entry is refused", "worker_id", f.ID)
			}
			continue
		}
		ws = append(ws, r.fileWorker(f))
		r.accepted = append(r.accepted, f)
	}
	for id := range r.conflicts {
		if _, inEtcd := seen[id]; !inEtcd || !slices.ContainsFunc(r.file, func(f FileWorker) bool { return f.ID == id }) {
			delete(r.conflicts, id)
		}
	}
	slices.SortFunc(ws, func(a, b Worker) int { return byID(a, b.ID) })
	return ws
}

// fileWorker describes a worker of the workers file as a card would: the
// same defaults and the same block-size rule.
func (r *Registry) fileWorker(f FileWorker) Worker {
	t := TypeDecode
	if f.Component == r.cfg.PrefillComponent {
		t = TypePrefill
	}
	w := r.worker(key{namespace: r.cfg.Namespace, component: f.Component, endpoint: r.cfg.Endpoint, id: f.ID}, t, &card{
		blockSize: f.BlockSize, totalKVBlocks: f.TotalKVBlocks, maxNumSeqs: f.MaxNumSeqs, maxNumBatchedTokens: f.MaxNumBatchedTokens,
		dpSize: uint32(f.DPSize),
	})
	w.Source, w.URL = SourceFile, f.URL
	return w
}

// worker describes the instance at k from its card, or from the defaults.
func (r *Registry) worker(k key, t Type, c *card) Worker {
	d := r.cfg.Defaults
	w := Worker{
		ID: k.id, Type: t, Namespace: k.namespace, Component: k.component,
		DPSize: 1, BlockSize: r.cfg.BlockSize,
		TotalKVBlocks: d.TotalKVBlocks, MaxNumSeqs: d.MaxNumSeqs, MaxNumBatchedTokens: d.MaxNumBatchedTokens,
	}
	if c == nil {
		return w
	}
	w.HasCard, w.Model = true, c.model
	w.DPStart, w.DPSize = c.dpStart, c.dpSize
	if c.blockSize > 0 {
		w.BlockSize = c.blockSize
		w.BlockSizeMismatch = c.blockSize != r.cfg.BlockSize
	}
	for _, f := range []struct {
		dst *int
		v   int
	}{
		{&w.TotalKVBlocks, c.totalKVBlocks},
		{&w.MaxNumSeqs, c.maxNumSeqs},
		{&w.MaxNumBatchedTokens, c.maxNumBatchedTokens},
	} {
		if f.v > 0 {
			*f.dst = f.v
		}
	}
	return w
}

// joinLocked announces what w, which was prev (if existed) before, brings,
// before the snapshot holding w is published: a new worker to the index
// writer, and the registered series of each rank of a new worker or of a
// worker whose ranks or type changed. reconcileLocked does the rest once
// the snapshot is published.
func (r *Registry) joinLocked(prev Worker, existed bool, w Worker) {
	switch {
	case !existed:
		r.idx.WorkerJoined(w.ID)
		r.registerMetricsLocked(w)
	case ranksChanged(prev, w):
		// Sets the new ranks' (or type's) series; the kept ones are set
		// already. The lost ones go in reconcileLocked.
		r.registerMetricsLocked(w)
	}
}

// ranksChanged reports whether the worker's ranks or type, which label its
// series, differ between prev and w.
func ranksChanged(prev, w Worker) bool {
	return prev.Type != w.Type || prev.DPStart != w.DPStart || prev.DPSize != w.DPSize
}

// reconcileLocked brings metrics, loads, grace timers and logs in step with
// w, which was prev (if existed) before, once the snapshot holding w is
// published (joinLocked came before).
func (r *Registry) reconcileLocked(prev Worker, existed bool, w Worker) {
	if p := r.pending[w.ID]; p != nil {
		p.timer.Stop()
		delete(r.pending, w.ID)
	}
	if existed && prev == w {
		return
	}
	// worker_type is the worker's type, decode or prefill, as the metrics
	// label it; the component it registered under gives it. Route replies
	// speak of serving modes instead (docs/api.md §3).
	attrs := []any{"worker_id", w.ID, "worker_type", w.Type, "component", w.Component, "dp_start", w.DPStart, "dp_size", w.DPSize,
		"block_size", w.BlockSize, "total_kv_blocks", w.TotalKVBlocks, "max_num_seqs", w.MaxNumSeqs,
		"max_num_batched_tokens", w.MaxNumBatchedTokens, "model", w.Model, "source", w.Source}
	if w.URL != "" {
		attrs = append(attrs, "url", w.URL)
	}
	switch {
	case !existed:
		r.log.Info("worker registered", attrs...)
	case ranksChanged(prev, w):
		// The worker's series change labels or ranks: those of what it has
		// now were set before publication (joinLocked); delete those of the
		// ranks or type it lost, start its KV stats afresh, and forget the
		// ranks it lost.
		for _, rank := range prev.Ranks() {
			if prev.Type != w.Type || !w.HasRank(rank.DPRank) {
				r.m.DeleteRegistered(prev.metricsWorker(rank.DPRank))
			}
		}
		r.m.DeleteKVStats(uint64(w.ID))
		r.dropLoadsLocked(prev, w)
		r.clearLostRanksLocked(prev, w)
		r.log.Info("worker changed ranks or type", attrs...)
	default:
		r.log.Info("worker updated", attrs...)
	}
	if !w.HasCard && (!existed || prev.HasCard) {
		r.log.Warn("worker has no model card; using defaults", "worker_id", w.ID, "worker_type", w.Type,
			"total_kv_blocks", w.TotalKVBlocks, "max_num_seqs", w.MaxNumSeqs, "max_num_batched_tokens", w.MaxNumBatchedTokens)
	}
	switch {
	case w.BlockSizeMismatch && !r.mismatchCounted[w.ID]:
		r.mismatchCounted[w.ID] = true
		r.m.BlockSizeMismatches.Inc()
		r.log.Error("worker block size differs from the router's; its overlaps will not be trusted",
			"worker_id", w.ID, "worker_type", w.Type, "block_size", w.BlockSize, "router_block_size", r.cfg.BlockSize)
	case !w.BlockSizeMismatch && existed && prev.BlockSizeMismatch:
		r.log.Info("worker block size matches the router's now", "worker_id", w.ID, "block_size", w.BlockSize)
	}
}

// registerMetricsLocked sets dynamo_component_router_worker_registered for
// each rank of w.
func (r *Registry) registerMetricsLocked(w Worker) {
	for _, rank := range w.Ranks() {
		r.m.SetRegistered(w.metricsWorker(rank.DPRank))
	}
}

// removeLocked forgets a worker that left discovery: its blocks (through the
// index writer, after the events it sent before leaving), its series, its
// loads. Events still on their way make it an unregistered worker for the
// writer, whose blocks go at the end of a grace period (grace.go).
func (r *Registry) removeLocked(w Worker) {
	r.idx.WorkerLeft(w.ID)
	r.m.DeleteWorker(uint64(w.ID))
	r.dropLoadsLocked(w, Worker{})
	delete(r.mismatchCounted, w.ID)
	delete(r.dupWarned, w.ID)
	r.log.Info("worker removed", "worker_id", w.ID, "worker_type", w.Type)
}

// dropLoadsLocked forgets the loads of the ranks of prev that next lacks.
func (r *Registry) dropLoadsLocked(prev, next Worker) {
	r.loadMu.Lock()
	defer r.loadMu.Unlock()
	for _, rank := range prev.Ranks() {
		if next.DPSize == 0 || !next.HasRank(rank.DPRank) {
			delete(r.loads, rank)
		}
	}
}

// clearLostRanksLocked drops the blocks of the ranks of prev that next
// lacks.
func (r *Registry) clearLostRanksLocked(prev, next Worker) {
	for _, rank := range prev.Ranks() {
		if !next.HasRank(rank.DPRank) {
			r.idx.ClearRank(rank)
		}
	}
}

// applyLoad merges one load message into the rank's load and re-exports the
// KV stats it carries. A rank that is not registered is refused: keeping it
// would leave series no worker removal ever deletes.
func (r *Registry) applyLoad(u loadUpdate, now time.Time) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	w, ok := r.snap.Load().Get(u.worker.ID)
	if !ok || !w.HasRank(u.worker.DPRank) {
		return fmt.Errorf("worker %v is not registered", u.worker)
	}
	r.loadMu.Lock()
	l := u.merge(r.loads[u.worker])
	l.Updated = now
	r.loads[u.worker] = l
	r.loadMu.Unlock()
	if u.fields&fieldsKVStats != 0 {
		total := l.KVTotalBlocks
		if total == 0 {
			total = w.TotalKVBlocks
		}
		r.m.SetKVStats(uint64(w.ID), uint32(u.worker.DPRank), KVStats{
			ActiveBlocks:          uint64(l.KVUsedBlocks),
			TotalBlocks:           uint64(total),
			GPUCacheUsage:         l.GPUCacheUsage,
			GPUPrefixCacheHitRate: l.GPUPrefixCacheHitRate,
		})
	}
	return nil
}
