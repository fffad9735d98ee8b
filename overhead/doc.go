// Package overhead times the phases of one routing decision, the way
// Dynamo's router measures them, into the five
// dynamo_router_overhead_*_ms histograms (dynamo-compat.md §7): block
// hashing, sequence hashing, the index lookup (find_matches), scheduling
// and the total.
//
// A Timer is a small value on the caller's stack: Start it when the
// decision starts, mark each phase as it ends, and pass Done's result to an
// Observer (*metrics.Router). Marks read the monotonic clock (time.Since);
// nothing allocates, so timing costs a handful of clock reads per decision
// and never a garbage collection.
//
// Phases are measured as Dynamo derives them: sequence hashing from the end
// of block hashing, scheduling from the end of the lookup to the end of the
// decision, each from one clock, so the five add up. A decision that skips
// a phase (block hashes given by the caller, so no block hashing) marks it
// anyway and it measures about zero.
//
// # Concurrency
//
// The package starts no goroutines. A Timer belongs to the goroutine
// making the decision; an Observer is called from many at once and must be
// safe for concurrent use (Prometheus histograms are).
package overhead
