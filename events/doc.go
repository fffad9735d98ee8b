// Package events owns every change of the KV index: the Writer, the one
// writer of the index, and the NATS transport of the workers' KV events
// (Subscriber), the only way the router learns what every worker caches. An
// event lost, misread or applied out of order degrades every routing
// decision silently, so ingestion here is exact (per-rank order,
// whole-or-nothing decoding), accounted for (every message is applied or
// counted by reason) and recoverable (durable mode rebuilds the index after
// a restart).
//
// # One writer
//
// Nothing but the Writer changes the index. Its commands are the transports'
// KV events (Submit, and the Subscriber's own), the worker registry's
// lifecycle commands (WorkerJoined, WorkerLeft, ClearRank,
// DropUnregistered), and approximate mode's stores and removals (Write).
// They are sharded by worker id, so everything about one worker applies in
// the order it was submitted: a worker that leaves loses exactly what its
// events stored before, and an event still on its way is applied after the
// removal, to a worker no longer registered. Such a worker, like one that
// never registered, is noticed once (Notices) for the registry to start a
// grace period; if the registry then commands DropUnregistered, its blocks go
// and every event it sent while unregistered is counted in
// dynamo_component_kv_events_dropped_total{reason="unknown_worker"}. A
// departed worker leaves nothing behind in the writer: its event_id
// baselines and state are freed with its blocks.
//
// # Wire
//
// Workers publish one RouterEvent per message on
// namespace.{ns}.component.{component}.kv-events (older builds: kv_events),
// for the aggregated/decode component and the prefill component. The
// wire format is the codec package's (events/codec): codec.Decode tells the
// two encodings of docs/compat.md §3 apart by the first byte, JSON or the
// MessagePack envelope, and reads the RouterEvent schema written once for
// both; it rejects a message whole or not at all, with a *codec.DecodeError
// wrapping one of codec.ErrMalformedJSON, ErrMalformedMsgpack, ErrSchema,
// ErrTooLarge. This package does the transport and the accounting: each
// sentinel is a reason label of dynamo_component_kv_event_decode_errors_total
// (json, msgpack, schema, too_large). Snapshots are written with
// codec.AppendJSON and read with codec.DecodeJSONList.
//
// # Storage tiers
//
// Events about every storage tier of a worker's own caches (device,
// host_pinned, disk, external) are applied, each about its tier: the codec
// sets indexer.Event.Tier from storage_tier (codec.StorageTier.Tier), and
// the index keeps a block of a rank while any tier holds it and scores each
// matched block by its fastest tier (package indexer). Only the device's
// events take part in event_id tracking: each tier numbers its own events,
// so a host event's id says nothing about the device's stream, and is
// neither checked for gaps nor compared with a warm start's baselines.
// Events about the cache_owner residency domain, blocks of a shared cache
// rather than the worker's (codec.Meta.Device), are decoded and validated
// but not applied, counted in
// dynamo_component_kv_events_dropped_total{reason="storage_tier"}.
//
// # Goroutines and order
//
// Writer.Run and Subscriber.Run each own the goroutines they start and
// return after all have exited; stop the Subscriber first, then the Writer,
// which applies what was submitted before it stops. Config.EventThreads
// shard goroutines apply commands; a worker id is hashed to one of them, so
// the events of each rank apply in the order NATS delivered them, in order
// with the worker's lifecycle commands, while workers on different shards
// apply in parallel: the index takes its tree's write lock only for each
// event's change of the tree, and does the work in a rank's own table
// beside other shards' (indexer/phases.go). Each shard has a bounded queue
// (Config.QueueCapacity) that producers append to under a mutex and the
// shard swaps out whole; it applies what it took in slices of up to 256
// events per ApplyBatch.
//
// Producers are the NATS delivery goroutine of each plain subscription (one
// per subject), or in durable mode one fetcher goroutine per component.
// Decoding happens on the producer.
//
// # Full queues and lost events
//
// A plain subscription's callback never blocks: blocking it would stall
// every worker on that subject behind one slow shard. When a shard's queue
// is full the event is dropped and counted
// (dynamo_component_kv_events_dropped_total{reason="queue_full"}), and since
// that rank's index view is now wrong, the rank is cleared as soon as the
// shard has applied what was queued before the loss (the queue only frees up
// when the shard takes all of it, so nothing of that rank was queued after
// the loss), and its next event_id starts a new baseline: clearing is
// Dynamo's answer to lost events, and the one that keeps the index from
// claiming blocks the worker has evicted. The same clear happens when event_ids
// reveal loss (see below). A cleared rank rebuilds from its next stores;
// until then it scores lower than it should, never higher. Config.ClearOnLoss
// turns the clearing off (the losses are still counted). NATS's own client
// buffer sits in front of the queue (pending limits of 1 Mi messages, 256
// MiB per subscription); what NATS drops there is counted as
// reason="slow_consumer" and shows up as event_id gaps.
//
// In durable mode nothing is dropped: the fetcher waits for room
// (backpressure), acknowledges only applied messages, and JetStream keeps
// the rest.
//
// # event_id tracking
//
// Each shard keeps the last event_id of each of its ranks. An id equal to
// the last (Dynamo's ZMQ bridge gives all events of one engine batch the
// batch's number) or one above it is in order. A larger one is a gap: the
// missing ids are added to dynamo_component_kv_events_missed_total and the
// rank is cleared. A smaller one means the publisher restarted (its cache
// is new): counted in dynamo_component_kv_event_id_resets_total and the
// rank is cleared. Warnings are logged at most once per second per rank
// with the count of those suppressed; decode errors and drops at most once
// per second overall.
//
// # Durable mode
//
// With Config.Durable (--router-durable-kv-events) a component's events are
// read from the JetStream stream Dynamo uses, namespace-{ns}-component-{component}-kv-events.
// An existing stream is used as it is; a missing one is created capturing
// Dynamo's JetStream publishers' subjects ({stream}.*) and the core
// kv-events subjects, without a maximum age (snapshots bound it; expiry
// would lose events no snapshot covers). The router reads with a durable
// pull consumer named Config.RouterID (acknowledge-all, inactive threshold
// one hour as in Dynamo), in batches of up to 1024 messages: each batch is
// applied, then its last message acknowledged. A message delivered again
// after it was applied is skipped and counted (reason="duplicate"). Should
// deliveries go missing between server and client (the consumer sequence
// skips), the consumer is recreated right after the last applied message, so
// an acknowledgement never covers a message that was not applied.
//
// Snapshots: at most every Config.SnapshotInterval the fetcher checks the
// stream; past Config.SnapshotThreshold messages (and half a threshold of
// news since the last snapshot) it takes one between two batches, when
// every message it dispatched is applied: the index dump restricted to the
// workers seen on that stream, written as a JSON list of RouterEvents (the
// wire shape; see encodeSnapshot) to object radix-state of bucket
// namespace-{ns}-component-{component}-radix-bucket, with the covered
// stream sequence in the object's metadata. The upload runs beside the
// fetcher; once written, the stream is purged up to the snapshot's
// sequence, but never past the ack floor of any consumer of the stream.
// A bucket already holding a newer snapshot is left alone. Routers sharing
// a stream take turns: the check, the write and the purge happen under
// key snapshot of key-value bucket
// namespace-{ns}-component-{component}-radix-lock, created with a TTL of
// SnapshotLockTTL so that a router dying mid-upload frees it; a router
// finding it held tries again at a later interval.
//
// At start, Run submits the snapshot's events to the Writer, with their
// event_ids as baselines, ahead of the stream's, deletes any consumer of its name and creates a fresh
// one delivering from the sequence after the snapshot, then replays; Ready
// turns true once the replay reached the stream's last sequence at start (or
// a pull found nothing left), so a restarted router answers only with its
// index back. A snapshot written by
// Dynamo (no sequence) is loaded and the whole stream replayed, as Dynamo
// does. Config.ResetStates (--router-reset-states) purges the stream and
// deletes the bucket instead. On a clean shutdown the consumer is deleted,
// so a stopped router holds back no purge.
//
// Replaying is exact: the snapshot rebuilds the index and the baselines as
// they were at its sequence, and the messages after it are re-applied in
// stream order, so a restarted router ends with the index a never-stopped
// one holds (an index with a capacity cap may evict differently).
//
// # Warm start
//
// A router joining running replicas loads a peer's index before it applies
// the live events (package warmstart drives it). Writer.Hold, before the
// transports start, makes the Writer buffer their events in arrival order
// (at most HoldCapacity; past it an event is dropped, counted with
// reason="warm_start_overflow", and a marker in the buffer clears its rank
// in order after the release, unless the snapshot covers everything it
// lost). Writer.LoadSnapshot decodes a peer's snapshot whole, then submits
// it ahead of the held events, each rank's event_id becoming its baseline.
// Writer.Release queues the held events behind it; a shard skips an event
// below its rank's baseline (already in the snapshot; counted with
// reason="duplicate") until one at or above it arrives, and checks
// event_ids as usual from there, so a gap between snapshot and live events
// clears the rank. Events arriving during the release are held behind the
// ones being queued, and the hold ends under its lock once none is left.
//
// The serving side is Subscriber.Snapshot, a consistent cut: every message
// the connection received before the request handed to the Writer (a NATS
// barrier), the baselines read through every shard, then the dump; export.go
// argues why a joiner that subscribed first misses nothing.
//
// # Diverging index
//
// The Writer counts, over the last DivergenceWindow, the live stored events
// it applied and those rejected for an unknown parent; at DivergenceShare of
// at least DivergenceMinStored, the index is diverging
// (dynamo_router_index_diverging, Writer.Divergence for /health), logged
// once when an episode starts and once when it ends.
//
// # Concurrency
//
// NewWriter and NewSubscriber start nothing; each Run may be called once.
// The Writer's commands, Sync and Notices, and the Subscriber's Ready and
// Stats, are safe for concurrent use with Run and each other. The codec's
// functions are pure. Locks: docs/locks.md.
//
// # Metrics
//
// The package owns these families (Metrics, built by NewMetrics in the
// router's component scope; names in metrics/names.go, docs/metrics.md):
// dynamo_component_kv_cache_events_applied (by event_type and status),
// dynamo_component_kv_event_decode_errors_total (by reason),
// dynamo_component_kv_event_queue_depth,
// dynamo_component_kv_events_dropped_total (by reason),
// dynamo_component_kv_events_missed_total,
// dynamo_component_kv_event_id_resets_total,
// dynamo_component_kv_event_apply_lag_seconds, and the index's
// dynamo_component_kv_index_entries, _nodes, _workers and
// _evictions_total, and dynamo_router_index_diverging. The Writer, the index's one writer, is the one owner of
// the index gauges: it sets them after every batch it applies. It also
// times each batch into dynamo_router_event_apply_seconds, a histogram of
// package overhead.
package events
