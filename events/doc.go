// Package events ingests the workers' KV events from NATS into the index:
// the only way the router learns what every worker caches. An event lost,
// misread or applied out of order degrades every routing decision silently,
// so ingestion here is exact (per-rank order, whole-or-nothing decoding),
// accounted for (every message is applied or counted by reason) and
// recoverable (durable mode rebuilds the index after a restart).
//
// # Wire
//
// Workers publish one RouterEvent per message on
// namespace.{ns}.component.{component}.kv-events (older builds: kv_events),
// for the aggregated/decode component and the prefill component. Decode
// tells the two encodings of dynamo-compat.md §3 apart by the first byte:
// '{' is JSON (DecodeJSON), anything else the MessagePack envelope whose
// payload is a MessagePack RouterEvent (DecodeMsgpack). Both decoders are
// hand-written, pure and allocation-light (the event's block list is the
// only allocation of a well-formed message); they never panic, reject a
// message whole or not at all, and say why with a *DecodeError wrapping one
// of ErrMalformedJSON, ErrMalformedMsgpack, ErrSchema, ErrTooLarge, whose
// Reason is the label value of dynamo_component_kv_event_decode_errors_total.
// Negative i64 hashes keep their bits as u64. A message is rejected if it is
// over MaxMessageBytes or lists more than MaxBlocksPerEvent blocks.
// AppendJSON is the inverse of DecodeJSON, used for snapshots.
//
// # Storage tiers
//
// Events about a tier other than the device (host_pinned, disk, external),
// or about the cache_owner residency domain, are decoded and validated but
// not applied: the index is the device-cache index that routing scores, so
// an offloaded block must not count as a device hit. They are counted in
// dynamo_component_kv_events_dropped_total{reason="storage_tier"} and do not
// take part in event_id tracking (each tier numbers its own events). A
// per-tier index can be added later behind the same decoder.
//
// # Goroutines and order
//
// Run owns every goroutine the package starts and returns after all have
// exited. Config.EventThreads shard goroutines apply events; a worker rank
// (worker_id, dp_rank) is hashed to one of them, so its events apply in the
// order NATS delivered them while ranks on different shards apply in
// parallel. Each shard has a bounded queue (Config.QueueCapacity) that
// producers append to under a mutex and the shard swaps out whole; it
// applies what it took in slices of up to 256 events per ApplyBatch, so the
// index's write lock is taken once per slice, not per event.
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
// At start, Run loads the snapshot into the index, seeds the event_id
// baselines from it, deletes any consumer of its name and creates a fresh
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
// # Workers seen
//
// A WorkerObserver (WithObserver), the worker registry, hears of every
// worker id whose events reach the index, once, and again after Forget(id).
// The check costs a map lookup only when a shard meets a rank it does not
// track.
//
// # Concurrency
//
// NewSubscriber starts nothing. Run may be called once. Ready, Forget and
// Stats are safe for concurrent use with Run and each other. Decode,
// DecodeJSON, DecodeMsgpack and AppendJSON are pure functions.
//
// # Metrics
//
// Every count goes through the metrics package: the fields of
// *metrics.Router (events applied by event_type and status, decode errors by
// reason, queue depth, drops by reason, missed events, apply lag, index
// size gauges, evictions) and one family of ours created through its
// registry at the router component's scope,
// dynamo_component_kv_event_id_resets_total.
package events
