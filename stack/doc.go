// Package stack is the router's composition root: it builds every part of
// the router from one Config, in construction order, and runs them
// together. `router serve`, `router compare` and the end-to-end tests all
// run the router through it, so that what is tested is what is served.
//
// Construction order, each part handed what it needs and nothing attached
// afterwards (docs/architecture.md has the picture):
//
//	index → events.Writer → scheduler.Router → workers.Registry (sinks: the
//	writer and the router) → workers.Discovery (unless etcd is off),
//	workers.FileSource (with a workers file), workers.LoadSubscriber →
//	events.Subscriber (KV events on NATS) → warmstart.Joiner and
//	warmstart.Server (a peer's index at start; ours to joiners) →
//	service.Service (the NATS endpoints) → httpapi.Server (the same endpoints over HTTP, through
//	the service's Handler; with Config.HTTP) → status.Server (with
//	Config.Status)
//
// Nothing points back: the registry pushes each new set of workers to the
// scheduler (Router.FleetChanged), and the writer's notices of unregistered
// workers reach the registry through the Notices queue that Registry.Run
// consumes, a stream rather than a reference.
//
// # Metrics
//
// Each part builds its own metric families from the metrics.Router that New
// is given (metrics/doc.go), so a router built by New exposes every family
// from its first scrape; the golden expositions of testdata/metrics are
// checked here, on a router built by New. The stack owns no family itself
// (the warm start's are package warmstart's);
// it builds the HTTP API's families even when the API is off, so that the
// families are the same in every configuration.
//
// # Goroutines
//
// Run starts one goroutine per part and returns after all have exited.
// The parts that answer requests (the service, the HTTP API, the snapshot
// server) start only after the warm start (see Run), and /health's
// kv_events check is notready until then. The
// transports stop first; the index writer stops last, after applying what
// they submitted, so that no accepted event is lost at shutdown.
package stack
