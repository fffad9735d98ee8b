// Package sim simulates vLLM-like inference workers without GPUs, so that
// the router can be evaluated (and compared with round-robin and random
// routing) on real request traces: many workers in one process, each
// speaking Dynamo's wire formats exactly as a real worker does.
//
// # Parts
//
//   - Cache: a paged KV cache with prefix caching: blocks keyed by sequence
//     hash, reference counts, an LRU list of unreferenced blocks evicted
//     leaves first, and the KV events (stored, removed) that describe every
//     change, with Dynamo's semantics. A pure data structure.
//   - Engine: a scheduler over a Cache (waiting and running queues,
//     max_num_seqs, max_num_batched_tokens with chunked prefill) and a cost
//     model (Timing) that says how long each step takes. A pure state
//     machine driven by explicit simulated times: deterministic.
//   - Worker: one Engine with its presence: an etcd instance and model card
//     on its own lease (instance id = lease id), KV events on
//     namespace.{ns}.component.{component}.kv-events, load messages on
//     namespace.{ns}.kv_metrics, and the generate protocol on
//     GenerateSubject (docs/replay.md).
//   - Fleet: N workers on one NATS connection and one etcd client, with
//     Run(ctx) error.
//
// # Time
//
// Simulated time is a Clock. In real-time mode (WallClock) it runs Speedup
// times as fast as the wall clock and each worker's step loop sleeps until
// its step ends. In lockstep mode (ManualClock) it stands still until
// Fleet.AdvanceTo moves it, which completes every step due by then: a
// client that also waits for the router to take in the published events
// before each decision (package replay) gets the same decisions, hit rates
// and latencies on every run.
//
// # Goroutines and concurrency
//
// Cache and Engine are not safe for concurrent use and start nothing.
// Fleet.Run owns every goroutine of the fleet (per worker: the lease
// keep-alive, and in real-time mode the step loop and the load publisher)
// and returns after they exit; NATS runs the generate handlers on the
// connection's goroutines. Each worker's engine sits behind its own mutex.
package sim
