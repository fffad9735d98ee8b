// Package metrics defines the router's Prometheus metrics: Dynamo's names,
// types, labels and buckets, so that dashboards and alerts written for
// NVIDIA Dynamo's KV router work unchanged, plus a few families of our own.
//
// # Hierarchy
//
// Registry mirrors Dynamo's MetricsRegistry: runtime → namespace → component
// → endpoint. A metric created at a level carries that level's labels
// (dynamo_namespace, dynamo_component, dynamo_endpoint) as constant labels,
// and every metric created in the hierarchy gets the dynamo_component_
// prefix, at every level, as in Dynamo ("requests_total" at an endpoint is
// dynamo_component_requests_total{dynamo_namespace,dynamo_component,
// dynamo_endpoint}). Dynamo registers some families outside its hierarchy
// (dynamo_frontend_*, dynamo_router_*); Registry.Unscoped creates those, with
// the name as given and no hierarchy labels.
//
//	r := metrics.NewRegistry(reg)
//	route := r.Namespace("dynamo").Component("router").Endpoint("route")
//	c, err := route.Counter(metrics.Opts{Name: "requests_total", Help: "..."})
//
// Hierarchy names become label values after Dynamo's label sanitising
// (namespace "my-ns" is dynamo_namespace="my_ns"), metric names after its
// metric-name sanitising; see SanitizeMetricName and SanitizeLabelName.
//
// # Creating twice
//
// A Registry remembers each collector by name and constant labels. Asking
// again with the same options returns the existing collector; asking with a
// different kind, help text, label names or buckets returns an error wrapping
// ErrConflict that names the metric. Options that client_golang would panic
// on (unsorted buckets, an "le" label on a histogram) are rejected with
// ErrInvalidOpts first. Nothing here panics after start-up; nothing is
// registered on client_golang's global registry, and there is no init().
//
// # The router's families
//
// New builds a Router holding every family of dynamo-compat.md §7 that the
// router fills, and ours, registered at once so that every scalar family is
// in the exposition from the first scrape (vectors appear with their first
// label set, as in Dynamo). Later packages take a *Router and use its
// fields; the few methods (ObserveOverhead, SetWorkerLoad, DeleteWorker, ...)
// exist where label order or units are easy to get wrong. Label values come
// from bounded sets only: the constants of names.go, worker ids and ranks
// (deleted with DeleteWorker when a worker leaves), model names. Never
// request ids or hashes.
//
// The router's own families (names in names.go under "ours") use the
// dynamo_component_kv_ and dynamo_component_router_ prefixes so one selector
// finds everything, and are documented in docs/metrics.md as ours, not
// Dynamo's.
//
// # Exposition
//
// Handler serves any prometheus.Gatherer through promhttp. The uptime gauge
// is a GaugeFunc, so it is computed during each gather, that is before every
// scrape, from an injectable clock.
//
// # Concurrency
//
// The package starts no goroutines. Registry, Scope, Router and all
// collectors are safe for concurrent use; GaugeFunc functions run on the
// scraping goroutine.
//
// # Prometheus naming advice
//
// Dynamo's names win where they break promlint's advice: the _ms overhead
// histograms and the counter dynamo_component_kv_cache_events_applied
// without _total. The lint test keeps that list explicit and fails on
// anything else.
package metrics
