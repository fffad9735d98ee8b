// Package httpapi serves the router's endpoints over HTTP, for frontends
// that do not speak NATS: POST /v1/route, /v1/mark_prefill, /v1/mark_free,
// /v1/overlap_scores and /v1/potential_loads, whose request and reply
// bodies are the JSON of the NATS endpoints, byte for byte (docs/api.md §7;
// docs/openapi.yaml describes every path, schema and status, and a test
// holds it to this package and to the client package's wire types).
//
// The work is not done here: each request's body goes to
// service.Handler, the same code that answers on NATS, and its reply's
// error code becomes the HTTP status (Status): 200 for every reply that is
// not an error, {"success":false} of a mark included; 400 bad_request; 503
// no_workers and overloaded; 429 queue_full and queue_rejected; 504
// timeout; 500 internal. What the HTTP layer refuses itself (a path that is
// no endpoint, another method, a body that is not JSON or over the size
// limit of the NATS path, service.MaxRequestBytes) gets the same error
// body, code bad_request, with 404, 405, 415 or 413.
//
// A mark naming another router replica (router_id) for a request this
// router does not know is forwarded to that replica over NATS by the
// service.Handler, on the connection's goroutine, within
// service.ForwardTimeout, and answered with that replica's answer
// (docs/api.md §3, "Several replicas").
//
// # Limits
//
// Config bounds every stage of a connection: the headers' size and reading
// time, the whole request's reading time, the write deadline (which leaves
// room for a route's wait in the scheduler's queue), and keep-alive idling.
// The defaults and the reason for each are in config.go.
//
// # Metrics
//
// The package owns dynamo_router_http_requests_total{endpoint,code} and
// dynamo_router_http_request_duration_seconds{endpoint} (Metrics; ours).
// Requests that reach an endpoint are also counted in Dynamo's endpoint
// families by service.Handler, whatever the transport: those families keep
// Dynamo's label set, and these give the HTTP share.
//
// # Goroutines and shutdown
//
// Run owns the net/http server: one goroutine accepting connections and
// one per connection, each answering its requests in turn; a route that
// waits in the scheduler's queue holds its connection's goroutine until it
// is answered, and leaves the queue if the client goes away. When Run's
// context ends, the server stops accepting, closes idle connections, and
// waits for the requests in flight within DrainTimeout and the router's
// shutdown deadline; Run returns once the server has stopped. The Server is
// safe for concurrent use.
package httpapi
