// Package service answers the router's endpoints: Handler does each
// endpoint's work whatever the transport (decode the JSON body, ask the
// scheduler, encode the reply), and Service puts it on NATS, the
// request/reply endpoints of docs/api.md §3, with the replica-sync events
// of §4. The HTTP API (package httpapi, docs/api.md §7) answers through the
// same Handler, so a body gets the same reply on either transport.
//
// # Endpoints
//
// Each endpoint answers on namespace.{ns}.component.{router}.{endpoint}
// in the queue group {router}, so that router replicas share the load:
// route, mark_prefill, mark_free, overlap_scores, potential_loads. A
// service with a RouterID also answers mark_prefill and mark_free on its
// own subjects, ReplicaSubject (the endpoint's subject and the id in
// lower-case hex), with as many subscriptions, in the queue group too.
// Route replies carry the RouterID as router_id, so that a request's marks
// can find the replica that booked it, and each named worker's URL
// (worker_url, and in disaggregated replies prefill_worker_url and
// decode_worker_url) when the WorkerURLs given to New know it: the worker
// registry, which reads it from the workers file. The look-up is an
// atomic load and a map read on the routing path, with no allocation.
//
// # Several replicas
//
// A mark whose router_id names another replica, for a request id this
// replica does not know, is forwarded once to that replica's subject with
// the header HeaderForwarded, and answered with its answer (forward.go);
// a forwarded mark is never forwarded again. Over NATS the forward runs on
// a goroutine of its own, at most maxForwarding at once and past that on
// the handler's, bounded by ForwardTimeout; over HTTP (Handler.Serve) on
// the caller's. A mark nobody knew is counted in
// dynamo_router_marks_unknown_total and logged at debug level. A route
// with "retry": true whose request_id is booked is answered from the
// booking (scheduler.Request.Retry).
// Requests and replies are JSON exactly as docs/api.md §3 shows them;
// an error is {"error":{"code","message"}} with one of the codes
// bad_request, no_workers, overloaded, queue_full, queue_rejected, timeout,
// internal. route's router_config_override also takes newer Dynamo's
// overlap_score_credit and prefill_load_scale.
//
// Decoding is strict (decode.go, with the router's one JSON scanner,
// internal/jsonscan, which the KV-event decoder shares): a request is one
// JSON object; unknown or repeated fields, a wrong type, invalid UTF-8,
// both or neither of token_ids and block_hashes, an unknown worker_type,
// negative or absurd numbers (more than scheduler.MaxTokens tokens, a
// priority_jump over a day, an empty allowed_worker_ids, a payload over
// MaxRequestBytes) are a bad_request whose message names the field,
// counted in dynamo_component_router_bad_requests_total{reason}: malformed
// for what is not JSON or of the wrong type, out_of_range for a number the
// field does not take, too_large for a list or payload over its limit. A null field counts
// as absent. A bad request changes nothing. block_hashes may be written as
// signed 64-bit integers; their bits are the hash.
//
// The requests and replies as Go types with JSON tags are the client
// package's (client/messages.go); the tests hold the decoder and the
// encoder to them.
//
// # Transports
//
// Handler.Serve answers one request, given its body and a Sender that
// delivers the reply; it returns once the reply is sent, a route that waits
// in the queue included (it leaves the queue if the caller's context ends).
// The NATS transport does not wait: a route request is handed to the
// scheduler with Router.Submit, so that a request waiting in the queue
// holds no handler goroutine, and is answered from the goroutine that
// releases it.
//
// Every endpoint records Dynamo's work-handler families
// (dynamo_component_requests_total, inflight, request and response bytes,
// errors_total{error_type}, request_duration_seconds), whichever transport
// carried the request: error_type is the reply's error code, or
// publish_response when the reply could not be sent.
//
// # Replica sync
//
// When the router's configuration has replica sync on, New makes the
// router publish its bookkeeping changes through the service, in batches
// of up to 256 events or 1 ms (Dynamo's limits), on
// namespace.{ns}.component.{router}.active_sequences_events, and Run
// subscribes to that subject (a plain subscription: every replica needs
// every event) and applies the events of other replicas, ignoring its own
// echo by router_id. replica.go documents the wire format.
//
// # Workers
//
// Fleet adapts the worker registry (workers.Registry) to the scheduler's
// Fleet, and Remover is the index remover to give the registry so that a
// leaving worker also leaves the router's bookkeeping.
//
// # Metrics
//
// The package owns the endpoint families (Metrics, built by NewMetrics
// below the router's component scope; names in metrics/names.go,
// docs/metrics.md): for each endpoint, dynamo_component_requests_total,
// _inflight_requests, _request_bytes_total, _response_bytes_total,
// _errors_total (by error_type), _request_duration_seconds, and ours,
// dynamo_component_router_bad_requests_total (by reason); and, unscoped,
// dynamo_router_marks_unknown_total (by endpoint).
//
// # Goroutines and shutdown
//
// NATS runs each subscription's handler on a goroutine of its own;
// Config.Handlers subscriptions per endpoint set how many requests are
// handled at once. A route request that must wait in the scheduler's queue
// does not hold a handler: it is answered from the goroutine that releases
// it. Run owns one goroutine, the replica batch sender, and the goroutines
// of marks being forwarded, which it counts with the routes it has handed
// over. When Run's context ends it drains the subscriptions (requests
// received are answered), closes the router (requests still waiting in its
// queue are routed at once, as if no worker were busy), waits
// for every answer, forwarded marks included (each within ForwardTimeout),
// flushes the connection and returns. The caller owns the NATS connection and closes it
// after Run returns. Handler starts no goroutine: Serve runs on its
// caller's, and is safe to call from many at once.
package service
