// Package replay is the frontend of a routing experiment: it replays a
// request trace (a Mooncake trace or a synthetic chat workload) against a
// router and simulated workers (package sim), and reports what each router
// mode does to time to first token and prefix cache hit rate.
//
// For each request it makes deterministic token ids (traces.Tokens, from
// the trace's hash ids), asks the router for a worker (route), sends the
// prompt to that worker with sim's generate protocol, and tells the router
// of the first token (mark_prefill) and of the end (mark_free), as Dynamo's
// frontend does.
//
// # Two clocks
//
// Real time: arrivals follow the wall clock, Speedup simulated seconds a
// second, against any router and any fleet (another process, another
// machine); results vary a little from run to run, as they would on GPUs.
//
// Lockstep: with an in-process sim.Fleet (the Stepper) simulated time moves
// only between arrivals. Before each request the fleet completes every
// step due, the replay handles every reply those steps produced (so the
// router has every mark it should), and a Barrier waits until the router
// has taken in every KV event the fleet published; only then is the
// request routed and submitted, at its arrival time. The router thus
// decides on exactly the state the simulation describes, and a seed gives
// the same decisions, hit rates and latencies on every run (the router's
// own random choices must be seeded too). Routing takes no simulated time:
// the router's overhead is measured apart, in wall time.
//
// # Goroutines
//
// Run owns the replay's goroutines and returns after they stop: the NATS
// handler of the reply inbox, which handles replies one at a time in
// arrival order and sends the marks, and the progress writer (one line a
// ProgressInterval). Report, Sweep, Summary, ComputeBounds and the workload
// functions are pure.
package replay
