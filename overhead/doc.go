// Package overhead times the router's paths, phase by phase, and owns the
// histograms those timings feed:
//
//   - the route decision (Timer, Route): block hashing, sequence hashing,
//     the index lookup (find_matches), scheduling and the total, into
//     Dynamo's five dynamo_router_overhead_*_ms histograms (docs/metrics.md),
//     names and buckets unchanged;
//   - the index writer's apply of one batch of KV events (NewApply), into
//     dynamo_router_event_apply_seconds (ours);
//   - the scheduler's handling of mark_prefill and mark_free (NewMarks),
//     into dynamo_router_mark_seconds{mark} (ours).
//
// All are unscoped with the router_id constant label and measured in
// milliseconds, like Dynamo's overhead histograms, so that one panel shows
// every path's cost. The constructors take the router's *metrics.Router and
// create the families there, with the names of metrics/names.go; building
// them twice on one registry returns the same collectors. The scheduler and
// the events writer hold these types; neither needs a type of package
// metrics to time itself.
//
// A Timer is a small value on the caller's stack: Start it when the
// decision starts, mark each phase as it ends, and pass Done's Phases to
// Route.Observe. Marks read the monotonic clock (time.Since); nothing
// allocates, so timing costs a handful of clock reads per decision and
// never a garbage collection.
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
// making the decision; Route, Span and Marks are safe for concurrent use
// (Prometheus histograms are).
package overhead
