// Package client is the Go client of the router's NATS endpoints
// (docs/api.md §3), for frontends: typed requests and replies, typed
// errors, and a handle per routed request that frees its booking once.
//
// # The lifecycle of a request
//
// A frontend asks the router where a prompt should go, sends the prompt
// there, and tells the router how the request went, so that the router's
// prediction of every worker's load stays true:
//
//  1. Route books the request on a worker and returns a *Request handle
//     with the decision (worker id, dp rank, cached blocks).
//  2. The frontend sends the prompt to that worker, in the worker's own
//     protocol; this package has no part in it.
//  3. At the first output token, Request.Prefilled (mark_prefill): the
//     prompt's prefill is done and leaves the worker's predicted load.
//  4. At the end of the stream, whether it completed, failed or was
//     cancelled, Request.Done (mark_free) frees the booking.
//
// Done frees the booking at most once whatever calls it, so that
//
//	req, err := c.Route(ctx, client.RouteRequest{Prompt: client.Prompt{TokenIDs: tokens}})
//	if err != nil {
//		return err
//	}
//	defer req.Done(ctx, -1)
//
// cannot leak a booking on any path, and a later req.Done(ctx, n) with the
// real count of output tokens is the one that counts. docs/frontend.md
// walks through a complete frontend.
//
// # Errors
//
// An error reply of the router is an *Error with its code and message;
// errors.Is matches it against the sentinel of its code (ErrNoWorkers,
// ErrOverloaded, ...). A mark the router does not know is
// ErrUnknownRequest; no router subscribed at all is ErrNoRouter; a call
// that ran out of time wraps context.DeadlineExceeded.
//
// # Retries
//
// mark_prefill and mark_free are idempotent: marking twice leaves the
// router as marking once did. They are retried, within the call's
// deadline, when no router is subscribed (a router restarting) or no reply
// comes (the replica that took the mark died before answering).
//
// route is retried, within the deadline, when no router is subscribed:
// the request reached nobody, so nothing was booked. No attempt goes out
// in the last 100 ms, where the deadline could cut its answer short and
// turn "no router" into "no reply". A route that reached
// a router and got no reply may have been booked; it is sent again only
// with WithRouteRetry, with the same request id (the client makes one when
// the request has none) and the retry flag, so that a router that holds
// the booking answers from it rather than booking again. WithRouteRetry
// says when a retry can still book twice, and what frees the extra
// booking.
//
// # Replicas
//
// Routes go to the router's queue group, so any number of router replicas
// share the load. A route's reply names the replica that booked it
// (Decision.RouterID), and the handle's marks go to that replica's own
// subject (Client.ReplicaSubject) carrying its id, so they reach the one
// replica that knows the booking, with or without replica sync
// (docs/api.md §3, "Several replicas"). When NATS says no responders there
// (the replica was stopped or killed), the mark goes on to the queue
// group: with replica sync (docs/api.md §4) a survivor knows the booking
// and frees it; without, the booking went with its replica, the survivor
// answers that it does not know the request, and Prefilled and Done return
// nil, there being nothing left to mark or free. ErrUnknownRequest from a
// handle's mark is then kept for what a caller should hear of: a request
// its replica never booked or already freed.
//
// MarkPrefill and MarkFree, by request id alone, go to the queue group:
// without replica sync, a replica that did not book the request answers
// ErrUnknownRequest and the booking stays.
//
// # Concurrency
//
// A Client is safe for concurrent use and starts no goroutine of its own
// (NATS runs the connection's). A Request is safe for concurrent use.
package client
