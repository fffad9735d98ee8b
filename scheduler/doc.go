// Package scheduler chooses the worker rank for each request: the part of
// the router that exists to minimise the work the fleet must do. It is pure
// Go with no NATS or etcd: the service package puts it on the wire, the
// workers package supplies the candidates (through Fleet), the indexer the
// overlaps (through Index).
//
// # A decision
//
// Route (or Submit) hashes the prompt into Dynamo's LocalBlockHashes and
// sequence hashes (dynamo-compat.md §2), asks the index how many leading
// blocks each rank holds, and scores every eligible candidate:
//
//	cost = scale × max(0, (active_prefill_tokens + isl) / block_size − credit × overlap) + decode_blocks
//
// decode_blocks being the rank's active blocks after adding the prompt's
// blocks it does not already have active. The defaults are Dynamo's:
// credit 1 (--router-kv-overlap-score-credit), scale 1
// (--router-prefill-load-scale). The legacy --router-kv-overlap-score-weight
// w, when set, is mapped as newer Dynamo maps it: scale = w, and credit = 0
// if w = 0; with credit 1 the formula is then the classic
// w × (active_prefill_tokens + isl − overlap × block_size) / block_size +
// decode_blocks. Temperature 0 takes the least cost, uniformly at random
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
// The decision is booked in Sequences, the router's prediction of each
// rank's load (dynamo-compat.md §5): the prompt's prefill tokens less the
// overlap, and a reference on its blocks in a tree of sequence hashes
// with compressed paths (activeTree), so that blocks shared by requests on
// one rank count once and booking a prompt costs a step per shared run of
// blocks, not per block. MarkPrefill removes the
// prefill tokens, Free everything; requests never freed expire after
// --router-stale-timeout. --router-mode round-robin and random share all of
// this, only choosing differently among the eligible ranks, and skip the
// hashing and the index (their overhead histograms stay empty).
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
//
// # Replica sync
//
// With --router-replica-sync a Router hands every booking change to a
// Publisher (AddRequest, MarkPrefillCompleted, Free, in order) and applies
// its peers' with ApplyRemote, so replicas converge on the same loads. A
// mark of a request a replica does not know is still shared (the peer
// that routed it applies it) and remembered for 30 s in case its add is
// still on the way. The service package carries the events on NATS.
//
// # Concurrency and goroutines
//
// All Router methods are safe for concurrent use. Hashing and the index
// lookup run without the Router's lock; scoring, choosing and booking run
// under it, so that concurrent decisions see each other's bookings and
// never herd onto one idle rank. A decision among a thousand ranks holds
// the lock for a few microseconds: per-candidate data is laid out once per
// fleet snapshot and loads are mirrored into dense arrays (view.go), so
// scoring streams through arrays and only the few ranks with an overlap
// or active blocks are scored one by one (choose.go). Lock order:
// Router, then the index's read lock (while releasing the queue), then a
// Publisher's; approximate mode's lock is taken with the Router's released.
//
// The package starts one kind of goroutine only: the runtime's, for each
// waiting request's timeout timer (time.AfterFunc), which lives while the
// request waits. Run, owned by the caller, does the periodic maintenance and
// returns when its context ends, after failing waiting requests with
// ErrClosed. Sequences and Queue are plain data structures, not safe for
// concurrent use; the Router locks around them.
package scheduler
