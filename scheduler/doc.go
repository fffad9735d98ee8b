// Package scheduler chooses the worker rank for each request: the part of
// the router that exists to minimise the work the fleet must do. It is pure
// Go with no NATS or etcd: the service package puts it on the wire, the
// worker registry pushes the candidates (SetCandidates), the indexer answers
// the overlaps (Index), and approximate mode writes the index through the
// one ordered writer of the index (IndexWriter).
//
// # A decision
//
// Route (or Submit) hashes the prompt into Dynamo's LocalBlockHashes and
// sequence hashes (docs/compat.md §2), asks the index how many leading
// blocks each rank holds, and scores every eligible candidate:
//
//	cost = scale × max(0, (active_prefill_tokens + isl) / block_size − credit × overlap) + decode_blocks
//
// decode_blocks being the rank's active blocks after adding the prompt's
// blocks it does not already have active. A cached block is credited by
// the storage tier of its fastest copy, as Dynamo credits it: credit ×
// overlap reads credit × device + host_weight × host + disk_weight × (disk
// + external) (--router-host-cache-hit-weight, 0.75;
// --router-disk-cache-hit-weight, 0.25; docs/compat.md §5.2). The tiers'
// shares are computed only when the index reports a block below the
// device, so that a device-only fleet is scored exactly as without them.
// The defaults are Dynamo's:
// credit 1 (--router-kv-overlap-score-credit), scale 1
// (--router-prefill-load-scale). The legacy --router-kv-overlap-score-weight
// w, when set, is mapped as newer Dynamo maps it: scale = w, and credit = 0
// if w = 0; with credit 1 the formula is then the classic
// w × (active_prefill_tokens + isl − overlap × block_size) / block_size +
// decode_blocks. Ours, off by default: the adaptive weight of prefill
// work (--router-saturation-prefill-tokens T, --router-saturation-decode-blocks
// B, kv mode only) makes the scale --router-prefill-load-scale-saturated
// instead whenever every candidate rank of the kind has more than T active
// prefill tokens or more than B active blocks (the fleet is saturated).
// The view keeps the candidates' least active prefill and blocks and the
// keys at both scales, so the test and the saturated choice cost no pass
// over the candidates (docs/replay.md, "Cost tuning"). Ours, off by
// default too: the cache affinity (--router-cache-affinity A, kv mode
// only) subtracts A × device overlap from the cost, outside the scale and
// the clamp, so that load moves a conversation off the rank holding it
// less readily; only the ranks with an overlap change cost, and they are
// scored one by one anyway.
// Temperature 0 takes the least cost, uniformly at random
// among exact ties; a temperature T > 0 samples with
// p ∝ exp(−(c − c_min) / ((c_max − c_min) × T)).
//
// Eligible means: a registered rank of the kind needed, in the request's
// allowed_worker_ids if it has them, and not over a busy threshold
// (--active-decode-blocks-threshold, --active-prefill-tokens-threshold,
// --active-prefill-tokens-threshold-frac; a threshold relative to a limit
// the worker's card does not state does not apply). No candidate at all
// is ErrNoWorkers; every candidate over a threshold is ErrOverloaded.
//
// The decision is booked in active.Sequences, the router's prediction of
// each rank's load (docs/compat.md §5): the prompt's prefill tokens less
// the overlap (its lower tiers' blocks at their weights), and a reference on its blocks in a tree of sequence hashes
// with compressed paths, so that blocks shared by requests on one rank
// count once and booking a prompt costs a step per shared run of blocks,
// not per block. MarkPrefill removes the prefill tokens, Free everything.
// --router-mode round-robin and random share all of this, only choosing
// differently among the eligible ranks, and skip the hashing and the index
// (their overhead histograms stay empty).
//
// # The peers' policies
//
// Two more modes reproduce the policies users compare a router with, fed
// by the same index, loads and filters (peer.go; sources and mappings in
// docs/replay.md). llmd-precise-prefix is llm-d's precise-prefix-cache
// scheduling profile: each eligible rank scores
//
//	2 × overlap / prompt_blocks + 1 × (1 − active_blocks / total_kv_blocks) + 1 × (q_max − q) / (q_max − q_min)
//
// q being the rank's active requests (each term clamped to [0, 1], the
// last 1 when every q is equal), and the highest score wins, uniformly at
// random among exact ties; --router-temperature does not apply.
// dynamo-current is Dynamo's current cost:
//
//	scale × max(0, (active_prefill_tokens + isl) / block_size − credit × decay × device − lower_credit) + decode_blocks + w × active_requests
//
// decay = 1 / (1 + d × excess_prefill_blocks / prompt_blocks), the excess
// over the least loaded eligible rank, d being
// --router-kv-overlap-score-credit-decay and w
// --router-decode-active-request-weight, both 0 by default as in Dynamo,
// and lower_credit the lower tiers' credit, which the decay does not fade;
// the credit may exceed 1. At the defaults it is kv's cost to the bit and
// chooses as kv does. Both modes are scored apart from kv's fast path:
// kv pays one comparison of the mode for them.
//
// Bookings nobody ends expire. One never marked prefilled is freed
// --router-prefill-timeout (5 minutes) after it was routed: the frontend
// that routed it crashed or lost it, and a first token takes seconds. Any
// other is freed --router-stale-timeout (an hour) after it was routed. Each
// timeout pops its own list of requests in routing order, so expiry costs
// a step per request expired, never a scan; expiries are counted in
// dynamo_router_bookings_expired_total{reason="no_prefill"|"stale"}.
//
// # Workers coming and going
//
// The worker registry owns every worker's life and pushes the ranks the
// router may choose with SetCandidates, each time its set changes. A rank
// that is no longer pushed is forgotten at once: its bookings released (a
// request left with no rank is forgotten), its slot in the bookkeeping
// reused by the next new rank, nothing remembered of it. So a worker id can
// leave and come back any number of times, and comes back with no load,
// routable at once; the router's memory follows the fleet, not its
// history. The rank's dynamo_frontend_worker_* series go with it, deleted
// under the Router's lock, so nothing writes them again.
//
// # Metrics
//
// The package owns these families (Metrics, built by NewMetrics from the
// router's metrics; names in metrics/names.go, docs/metrics.md): the router
// request families dynamo_component_router_requests_total,
// _time_to_first_token_seconds, _inter_token_latency_seconds,
// _input_sequence_tokens, _output_sequence_tokens and _kv_hit_rate; the
// per-worker dynamo_frontend_worker_active_decode_blocks,
// _active_prefill_tokens, _last_time_to_first_token_seconds,
// _last_input_sequence_tokens and _last_inter_token_latency_seconds; the
// queue's dynamo_frontend_router_queue_pending_requests,
// _pending_isl_tokens and _backpressure_total; and
// dynamo_router_bookings_expired_total. It times every decision into
// Dynamo's dynamo_router_overhead_*_ms histograms and every mark into
// dynamo_router_mark_seconds, both built by package overhead. Every per-worker
// series is written under the Router's lock, through gauges cached per
// rank slot, so a decision looks no label up and allocates nothing.
//
// # Disaggregated serving
//
// worker_type auto is disaggregated when prefill workers are registered,
// aggregated otherwise; disaggregated without prefill workers falls back
// to aggregated and says so in Decision.Type. A disaggregated decision is
// one decision with two choices: the prefill rank KV-aware, then the decode
// rank by load only (no overlap credit, no prefill tokens). Both are booked
// under the request id, the prefill rank first; at MarkPrefill the prefill
// rank is done with the request and drops it entirely (its blocks moved to
// the decode rank), the decode rank keeps it until Free.
//
// # The threshold queue
//
// With --router-queue-threshold t set, a rank is busy when its active
// prefill tokens exceed t × max_num_batched_tokens, and a request waits
// while every eligible rank is busy. A request is released, and scored
// afresh with a new index lookup and the current loads, when a prefill
// completes or a request is freed (here or at a replica), and at least once
// a second by Run. Once admitted it goes to the cheapest rank that is not
// busy. A request that waits is timed once, in the overhead histograms,
// for its first pass; its wait shows in the queue gauges. Order: FCFS by arrival less priority_jump seconds, or WSPT by
// (1 + priority_jump) / new prompt tokens, larger first, as Dynamo orders
// them. The queue is bounded (--router-queue-capacity: ErrQueueFull), a
// request may refuse to wait (do_not_queue: ErrQueueRejected), and a wait
// is bounded (--router-queue-timeout: ErrTimeout).
//
// Starvation. Dynamo PR #8163 measured a 4× throughput loss at threshold
// 4.0 with 8,500-token prompts: requests parked while every worker was
// over 4 × 8,192 tokens and were not dispatched. Two rules keep large
// prompts moving here:
//
//  1. A rank is busy only while its active prefill tokens strictly exceed
//     the threshold, and admission never looks at the size of the request:
//     a rank with no prefill work is never busy, so a prompt larger than
//     the whole threshold is admitted as soon as one rank drains, never
//     parked forever for being large.
//  2. A request that has waited --router-queue-aging-limit (2 s by default)
//     goes before every later arrival, in arrival order, whatever its
//     priority_jump or size. Under WSPT a stream of small prompts would
//     otherwise overtake a large one indefinitely: the policy favours the
//     small ones by design, the aging limit bounds how long.
//
// Two tests replay the PR's setting on simulated engines (threshold 4.0,
// 8,192 batched tokens). TestQueueKeepsThroughputWithLargePrompts offers
// 8,500-token prompts above capacity: every prompt is served, no engine
// ever idles while a request waits, and the last prompt ends when it does
// without the queue. TestQueueLargePromptsDoNotStarve mixes 40,000-token
// prompts into a stream of small ones under WSPT: with the aging limit a
// huge prompt waits no longer than the small ones, without it (the
// control) it waits until the stream stops.
//
// Releasing scans the queue in order and stops at the first request
// without a worker filter that still finds every rank of its kind busy:
// every later request without a filter would too, and one with a filter
// sees a subset of those ranks.
//
// # Approximate mode
//
// With --no-router-kv-events workers publish no KV events, so the router
// indexes its own decisions: the chosen rank stores the prompt's blocks
// (engine hash = sequence hash), each (rank, block) expiring
// --router-ttl-secs after it was last routed, and past
// --router-approx-max-entries the soonest to expire go until 80 % are left.
// The router never writes the index itself: stores and removals go through
// the IndexWriter, in order with every other change of the index (a
// departed worker's removal among them), and the writer counts evictions
// and publishes the index gauges. A departed rank's entries expire with
// their TTL like any other, which also undoes a store that raced with the
// departure.
//
// # Replica sync
//
// With --router-replica-sync a Router hands every booking change to a
// Publisher (AddRequest, MarkPrefillCompleted, Free, in order) and applies
// its peers' with ApplyRemote, so replicas converge on the same loads. A
// mark of a request a replica does not know is still shared (the peer
// that routed it applies it) and remembered for 30 s in case its add is
// still on the way. An add naming a rank that is not a candidate here is
// ignored. Expiry is local: each replica expires its own copy of a booking
// by its own clock and shares nothing about it. The service package
// carries the events on NATS.
//
// # Concurrency and goroutines
//
// All Router methods are safe for concurrent use. Hashing and the index
// lookup run without the Router's lock; scoring, choosing and booking run
// under it, so that concurrent decisions see each other's bookings and
// never herd onto one idle rank. A decision among a thousand ranks holds
// the lock for a few microseconds: per-candidate data is laid out once per
// SetCandidates and loads are mirrored into dense arrays (view.go), so
// scoring streams through arrays and only the few ranks with an overlap
// or active blocks are scored one by one (choose.go).
//
// Lock order (docs/locks.md): the worker registry's lock (held while it
// calls SetCandidates), then the Router's, then the index's read lock (while
// releasing the queue), then a Publisher's. Approximate mode's lock is
// taken with the Router's released, and held while calling the
// IndexWriter, which must take none of these.
//
// # Parts
//
// The bookkeeping, what is active where, is the subpackage active: the
// requests, their placements, each rank's counters in a slot, and the tree
// of active blocks with its edge table. Its API is small and speaks only
// of workers, slots, requests and loads; it knows nothing of candidates,
// costs or locks. The scoring stays here and is pure: the cost functions
// (cost.go) and the choices among costs (pickMin, fusedMin, minScan) take
// plain arrays of loads and costs, and are tested without a Router or its
// lock. The Router joins the two: under its lock, it mirrors the
// bookkeeping's loads into the views' arrays and hands them to the
// scoring. Why a subpackage and not a type: the boundary is then checked
// by the compiler, and the bookkeeping's tests (the tree against a model,
// fuzzing, slot reuse) run on it alone. Calls across it inline as they did
// within one package, so the hot path pays nothing for the split.
//
// The package starts one kind of goroutine only: the runtime's, for each
// waiting request's timeout timer (time.AfterFunc), which lives while the
// request waits. Run, owned by the caller, does the periodic maintenance and
// returns when its context ends, after Close has routed the waiting
// requests. active.Sequences and Queue are plain data structures, not
// safe for concurrent use; the Router locks around them.
package scheduler
