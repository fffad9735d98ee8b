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
// Families are owned where they are produced. Each package that measures
// something builds its own collectors, from the *Router that New returns
// (its Registry, its component scope, its router_id and clock), in a
// constructor of its own: events.NewMetrics (KV events and the index
// gauges), workers.NewMetrics (registered workers, kvstats, discovery,
// etcd), scheduler.NewMetrics (router requests, per-worker load, queue,
// bookings), service.NewMetrics (the endpoint families), and package
// overhead for the timing of every path (route decisions, event apply,
// marks). The components call these constructors themselves (NewWriter,
// NewRegistry, scheduler.New, service.New), so building the router (package
// stack) registers every family, and every scalar family is in the
// exposition from the first scrape (vectors appear with their first label
// set, as in Dynamo). Asking the Registry twice for a family returns the
// same collectors, so a test reads what a component counts by building the
// component's families again.
//
// This package keeps what is shared: names.go, the one catalogue of every
// family name, label name and bounded label value, which every owner takes
// its names from; the Registry and its Scopes; sanitising; the handler; the
// bucket layouts; Builder; Worker, the label values of a worker rank; and
// the process's uptime gauge, the one family Router holds. A family's
// fields and methods live with its owner, which alone writes it and, for per-worker series, deletes it (the worker
// registry its families when a worker leaves, the scheduler its
// dynamo_frontend_worker_* series when a rank stops being a candidate), so
// a series is never re-created after its owner deleted it. Label values
// come from bounded sets only: the constants of names.go, worker ids and
// ranks, model names. Never request ids or hashes.
//
// The router's own families (names in names.go under "ours") use the
// dynamo_component_kv_, dynamo_component_router_ and dynamo_router_
// prefixes so one selector finds everything, and are documented in docs/metrics.md as ours, not
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
// scraping goroutine. A Builder is for one goroutine.
//
// # Prometheus naming advice
//
// Dynamo's names win where they break promlint's advice: the _ms overhead
// histograms and the counter dynamo_component_kv_cache_events_applied
// without _total. Our own families follow the advice: the path timings
// dynamo_router_event_apply_seconds and dynamo_router_mark_seconds are in
// seconds, not in the overhead histograms' milliseconds. The lint
// test of the whole router (stack/metrics_test.go, with the golden
// expositions of testdata/metrics) keeps that list explicit and fails on
// anything else.
package metrics
