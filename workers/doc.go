// Package workers knows which workers exist, what kind they are, how big
// their caches are and how loaded they are, and makes the KV index forget a
// worker's blocks the moment the worker is gone.
//
// # Discovery (discovery.go, card.go)
//
// Workers announce themselves in etcd with Dynamo's layout (docs/api.md
// §1, docs/compat.md §6):
//
//	v1/instances/{ns}/{component}/{endpoint}/{instance id hex}   the instance, on its lease
//	v1/mdc/{ns}/{component}/{endpoint}/{instance id hex}[/{lora}] its model card
//
// An instance under Config.Component is a decode worker (aggregated workers
// included, as Dynamo's metrics call them), one under
// Config.PrefillComponent a prefill worker; only Config.Endpoint counts.
// The instance makes the worker: its existence is the key's, and a deleted
// key or an expired lease removes the worker. The card describes it:
// kv_cache_block_size, and from runtime_config total_kv_blocks,
// max_num_seqs, max_num_batched_tokens and the data-parallel ranks
// [data_parallel_start_rank, +data_parallel_size), each rank a scheduling
// candidate. Without a card, or for a number the card leaves out,
// Config.Defaults stand in and a warning is logged. A base model's card is
// preferred over a LoRA adapter's card of the same instance. Ids parse in
// lower or upper case hex, zero-padded or not, as Dynamo versions wrote
// them; an id registered under both components counts as decode.
//
// Discovery.Run lists both prefixes in one transaction (one revision), then
// watches from the next revision. It uses one watch over the key range from
// v1/instances/{ns}/ to the end of v1/mdc/{ns}/ rather than one per prefix:
// a single stream is ordered by revision and delivers one revision's events
// together, so a lease expiry, which deletes an instance and its card in
// one revision, is one change, not a worker that briefly loses its card.
// The range also covers keys of other namespaces; they are skipped. The
// watch carries WithRequireLeader, so a member without a leader ends it.
// Because etcd's client silently retries a watch whose server died, a probe
// (a linearizable count of the instances prefix every
// Config.EtcdProbeInterval) notices a dead etcd. Any end of the watch —
// compaction, a closed channel, an error, a failed probe — leads to a new
// listing after a jittered backoff (100 ms doubling to 5 s). A listing
// replaces the whole registry, so keys deleted meanwhile remove their
// workers and blocks. While etcd cannot be reached the registry keeps
// serving the last known workers and stays ready until the outage is older
// than Config.MaxStaleness; it logs the outage and the recovery once each.
//
// A malformed key (not {ns}/{component}/{endpoint}/{hex id}) or value (not
// JSON, a field of the wrong type, a type or instance_id contradicting the
// key, a data_parallel_size of 0 or over MaxDPSize, ...) is skipped with a
// warning and counted in dynamo_component_router_discovery_malformed_total
// {kind="instance"|"model_card"}, once per key revision (a relist does not
// count it again). What the key held before stays, as in Dynamo's resync: a
// worker whose card update is malformed keeps its last good card.
//
// # The workers file (file.go, filesource.go)
//
// Workers that register nowhere (plain vLLM or SGLang) are listed in a JSON
// file, Config.WorkersFile (docs/api.md §8). DecodeWorkersFile reads it
// strictly and whole, with the router's JSON scanner (internal/jsonscan):
// an unknown or repeated field, a wrong type, a missing required field, a
// worker id of 0 or repeated, a component other than Config.Component and
// Config.PrefillComponent, a number out of range, an endpoint that is not
// tcp://host:port or ipc://path, or two ranks on one
// address refuse the file with an error naming the entry and the field.
// FileSource reads it when Run starts (a failure ends Run: the router does
// not start) and again at each value of its reload channel (SIGHUP); a
// refused reading is counted in
// dynamo_component_router_discovery_malformed_total{kind="workers_file"},
// logged, and keeps the last good set.
//
// The registry holds the file's last good set beside the etcd entries and
// derives the workers from both (Worker.Source says which). A file entry is
// made a Worker as a model card would be: the same defaults, the same
// block-size rule below. A worker id in both is etcd's: the file's entry is
// refused, logged and counted in
// dynamo_component_router_workers_file_conflicts_total once while the
// conflict lasts, and takes over when etcd lets go of the id. With etcd
// on, the file's workers join once etcd was first listed, so etcd wins
// from the first snapshot. With Config.NoEtcd there is no Discovery, and
// Status reports etcd as off rather than unreachable.
//
// A file worker without kv_events is not flagged as untrusted: nothing of
// it reaches the index but what reaches it anyway (NATS events, or the
// router's own decisions in approximate mode, which are sound), so its
// overlap is honest, usually 0.
//
// The EngineSink (Sinks.Engines), the source of engines' KV events over
// ZMQ, hears of the accepted file workers (the file less etcd's ids), with
// their kv_events, after every good reading and whenever that set changes:
// after the workers it names joined and those it no longer names left.
//
// # Block size
//
// A card whose kv_cache_block_size differs from Config.BlockSize makes a
// mismatch: Dynamo would silently find no overlap with that worker (its
// issues #1232 and #392). The worker is still registered and routable, but
// Worker.BlockSizeMismatch and Candidate.BlockSizeMismatch tell the
// scheduler not to trust its overlaps; it is logged (at error level) and
// counted in dynamo_component_router_block_size_mismatches_total once per
// registration, and listed in Status for /health while it lasts.
//
// # Registry (registry.go, snapshot.go)
//
// The registry holds the decoded entries in a radix tree keyed by etcd
// path (github.com/armon/go-radix), so a component's instances and cards
// are prefix walks. After every change it derives the workers again and,
// if they changed, publishes a new immutable Snapshot through an atomic
// pointer: Workers sorted by id, Get by id, and per type the precomputed
// Candidates, one per (worker, dp_rank).
//
// The registry is the one owner of each worker's life: every consequence
// of a change goes out from it, in order, while it holds its lock, to sinks
// it was given at construction (Sinks). What arrives is announced first,
// then the FleetListener (the scheduler) gets the new snapshot, then the
// snapshot is published, then what left is deleted: whoever sees a worker
// registered, or is routed to it, can route to it and finds its series, and
// the scheduler has let go of a departed rank before its series are
// deleted. Comparing the new workers with the old, it:
//
//   - for a new worker, before publishing: tells the index writer
//     (IndexWriter.WorkerJoined) and sets
//     dynamo_component_router_worker_registered for each rank;
//   - for a removed worker: commands the removal of its blocks
//     (IndexWriter.WorkerLeft, applied after the events it sent before),
//     deletes the per-worker series this package owns (Metrics.DeleteWorker:
//     dynamo_component_router_worker_registered,
//     dynamo_component_kvstats_*) and forgets its loads and everything it
//     said about the worker; nothing of it is kept, so the same id can
//     register again at any time and starts afresh;
//   - for a worker whose type or ranks changed: sets the registered series
//     of its new ranks or type before publishing, then deletes those of
//     the ranks or type it lost and its dynamo_component_kvstats_* series,
//     and forgets the loads and blocks of the ranks it lost
//     (IndexWriter.ClearRank).
//
// Readiness (Status, Ready) needs a first listing (unless etcd is off),
// a first good reading of the workers file (if any), once
// Config.MinInitialWorkers workers (DYN_ROUTER_MIN_INITIAL_WORKERS, all
// types counted), and no etcd outage older than Config.MaxStaleness; the
// minimum is for the start, so later departures do not make the router
// unready.
//
// # Unregistered workers (grace.go)
//
// Events of a worker that is not registered are indexed, but the worker is
// no candidate. The index writer notices such a worker once (NoticeSource,
// consumed by Registry.Run) and the registry starts a grace period; if the
// worker is still unregistered after Config.UnknownWorkerGrace, the
// registry commands IndexWriter.DropUnregistered: its blocks go and its
// events are counted in
// dynamo_component_kv_events_dropped_total{reason="unknown_worker"}. The
// period counts only while discovery is up to date (listed, etcd
// reachable). Events of a worker that left discovery, still on their way
// when it left, reach the writer after its removal from a worker no longer
// registered, and are noticed and dropped the same way: no sweep is needed.
//
// # Load (load.go)
//
// LoadSubscriber reads namespace.{ns}.kv_metrics in both of Dynamo's shapes:
// the classic {"worker_id", "data": {"worker_stats", "kv_stats"}} (also with
// data tagged engine_load_metrics or predictive_load_metrics), and the newer
// ActiveLoad {"worker_id", "dp_rank", "active_decode_blocks"?,
// "active_prefill_tokens"?, "kv_used_blocks"?}, whose absent fields keep
// their last value. Registry.Load returns the merged Load of a rank. A
// message stating KV figures (kv_stats, or kv_used_blocks) also sets the
// dynamo_component_kvstats_* gauges of the rank (total blocks from the
// message, else the card). Messages that are not JSON, fit neither shape,
// or name a rank that is not registered are counted in
// dynamo_component_router_worker_load_rejected_total{reason} and logged at
// most once per 10 s per reason.
//
// # Metrics
//
// The package owns these families (Metrics, built by NewMetrics in the
// router's component scope; names in metrics/names.go, docs/metrics.md):
// dynamo_component_router_worker_registered, the four
// dynamo_component_kvstats_* gauges,
// dynamo_component_router_block_size_mismatches_total,
// dynamo_component_router_discovery_malformed_total,
// dynamo_component_router_workers_file_conflicts_total,
// dynamo_component_router_worker_load_rejected_total,
// dynamo_component_router_etcd_reachable and
// dynamo_component_router_workers_staleness_seconds. The Registry writes
// the per-worker series under its lock and deletes them with their worker.
//
// The dynamo_frontend_worker_* gauges are the router's own prediction,
// which the scheduler owns: it deletes a rank's series when the rank stops
// being a candidate (FleetListener). ActiveLoad figures published by other
// routers are not copied into them.
//
// # Goroutines and locks
//
// Constructors start nothing. Discovery.Run runs the list/watch loop on the
// caller's goroutine and one probe goroutine per watch, and returns after
// both end. FileSource.Run reads the file on the caller's goroutine. LoadSubscriber.Run subscribes (nats.go runs the handler on its
// own goroutine), drains the subscription when its context ends, and
// returns after the last message was handled. Registry.Run consumes the
// writer's notices; grace timers are time.AfterFunc callbacks, stopped when
// Run returns.
//
// Every method of Registry and Snapshot is safe for concurrent use.
// Snapshot takes no lock; Load takes only the read side of
// Registry.loadMu, which writers hold for a map update. Registry.mu
// serialises changes, grace timers, Status and load messages (so that a
// worker's series are never re-created after its removal deleted them). The
// sinks are called with Registry.mu held and must not call back into the
// registry; the lock order is in docs/locks.md.
package workers
