// Package status serves the router's system status endpoints, as Dynamo's
// system status server does (DYN_SYSTEM_PORT): /metrics in the Prometheus
// text format, /health and /live with Dynamo's JSON, and 404 elsewhere.
//
// Readiness is the conjunction of named checks registered before Run; each
// check is a function called on every probe, so it must be cheap and safe
// for concurrent use. The server owns one goroutine per connection (from
// net/http) and its Run returns once they have finished.
package status
