// Package status serves the router's system status endpoints, as Dynamo's
// system status server does (DYN_SYSTEM_PORT): /metrics in the Prometheus
// text format, /health and /live with Dynamo's JSON, and 404 elsewhere.
//
// Readiness comes from named checks registered before Run, each with three
// states: OK, Degraded (reported in the body, still ready) and Failed
// (notready). Each check is a function called on every probe, so it must be
// cheap and safe for concurrent use. The server owns one goroutine per connection (from
// net/http) and its Run returns once they have finished.
package status
