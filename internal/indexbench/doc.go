// Package indexbench replays a Mooncake trace against the KV index
// (package indexer) and measures it, the way Dynamo's mooncake_bench and its
// peers do, so that figures are comparable.
//
// # Model
//
// Config.Workers simulated workers each keep an LRU cache of
// Config.CacheBlocks router blocks. Every 512-token trace block becomes
// Config.KeysPerBlock router blocks (16 by default, i.e. 32-token router
// blocks). The trace is replayed Config.Duplicate times over, as if by that
// many times the users: copy d of trace block id b yields router keys
// LocalHash = mix(b, j, d) for j < KeysPerBlock, so copies share nothing.
// Each worker's engine hash (BlockHash) of a key chains the previous block's
// engine hash with the key, from a per-worker seed, so engine hashes name a
// whole prefix and differ between workers, as a real engine's do.
//
// Requests go to workers by a hash of their first two hash ids and the copy
// number. Every request of the conversation trace starts with id 0, a shared
// system prompt, so the second id is what tells conversations apart; sending
// a conversation to one worker stands in for a KV-aware router's affinity,
// without which there would be almost no cache hits to index.
//
// For each request (and copy) in file order the stream gets, in this order:
//   - a find_matches query for all the request's keys, as a router asks
//     before it routes;
//   - a Removed event for the blocks the worker's LRU evicts to make room,
//     least recently used first;
//   - a Stored event for the request's blocks that were not cached, under
//     the engine hash of the last cached one (no parent if none was).
//
// The cache is touched tail first, so a prompt's head is its most recently
// used part; a block is therefore always more recent than every block below
// it, the LRU evicts leaves before their parents, and each worker's cache
// stays prefix-closed, like a real prefix cache. A request longer than the
// cache caches only its first CacheBlocks keys.
//
// # Measurements
//
// The stream is built first, untimed. Then, in order:
//   - load: a fresh index applies every event, from one goroutine. The live
//     heap (runtime.GC, then HeapAlloc) is read before the index is created
//     and after the load; the stream is alive at both points, so the
//     difference divided by the entries is the index's bytes per entry.
//   - query: Config.Goroutines goroutines run every query against the
//     loaded final state, in whole passes until Config.MinQueryTime has
//     passed; block ops/s counts each query's length in blocks, as peers
//     do, although the walk stops where the deepest match ends.
//   - latency: a separate pass in which the goroutines run every
//     Config.LatencyEvery-th query, each timed with time.Now, for the
//     find_matches p50 and p99; the clock reads stay off the throughput
//     figure.
//   - mixed: a fresh index replays events and queries in trace order.
//     With one goroutine, events and queries are interleaved in trace
//     order. With more, each goroutine applies the events of its share of
//     the workers (worker id modulo Goroutines), in trace order, as the
//     router's event shards do, and the queries are run in order by
//     whichever goroutine finds the next one's events all applied. A
//     goroutine applies at most 16 events past those of the next query to
//     run, so a query never runs before its events but may see up to 16
//     later ones, as it may in the router while a shard applies a batch.
//     Block ops/s counts query blocks, stored blocks and removed hashes
//     over the wall time of the whole replay.
//
// # Concurrency
//
// Run starts its goroutines and waits for all of them before it returns;
// it keeps no state between calls. Separate Runs may proceed concurrently,
// but they would disturb each other's timings and memory figures.
package indexbench
