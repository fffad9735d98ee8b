package client

import (
	"context"
	"sync/atomic"
)

// Request is the handle of a routed request: its decision, and the marks
// that report its progress to the router that booked it. Its methods are
// safe for concurrent use. A nil *Request, as Route returns with an error,
// holds no booking: its methods do nothing and return nil.
type Request struct {
	c *Client
	d Decision
	// booked is false for a decision asked with Book false: there is
	// nothing to mark.
	booked bool
	// done is set by the first Done.
	done atomic.Bool
}

// ID returns the request's id, given to Route or made by the router.
func (r *Request) ID() string {
	if r == nil {
		return ""
	}
	return r.d.RequestID
}

// Decision returns the router's decision.
func (r *Request) Decision() Decision {
	if r == nil {
		return Decision{}
	}
	d := r.d
	if d.Prefill != nil {
		p := *d.Prefill
		d.Prefill = &p
	}
	if d.Decode != nil {
		w := *d.Decode
		d.Decode = &w
	}
	return d
}

// Prefilled reports the request's first output token (mark_prefill): its
// prefill is done, and its prompt tokens leave the worker's predicted
// load. Call it when the first token arrives. It goes where Done goes. It may be called more than
// once; after Done, and for a decision that did not book, it does
// nothing.
func (r *Request) Prefilled(ctx context.Context) error {
	if r == nil || !r.booked || r.done.Load() {
		return nil
	}
	return r.c.mark(ctx, EndpointMarkPrefill, r, r.d.RequestID, -1)
}

// Done ends the request (mark_free) and frees its booking; outputTokens is
// the number of tokens generated, negative when unknown. Only the first
// call sends anything: later calls, concurrent ones included, return nil
// at once, so that a deferred Done is safe next to an explicit one. For a
// decision that did not book it does nothing.
//
// Done does not stop when ctx is cancelled or past its deadline: the
// booking must be freed precisely when the caller's request was cancelled
// or timed out, which is when ctx ends. It keeps ctx's values and is
// bounded by the client's timeout (WithTimeout), retries included.
//
// Done's mark goes to the replica that booked the request, and to the
// queue group if that replica is gone; when the group then does not know
// the request either (no replica sync: the booking went with its replica),
// Done returns nil, since nothing is left to free (package doc, Replicas).
//
// If Done fails (no router answered within that time, or the router does
// not know the request: ErrUnknownRequest), the booking is not lost for
// good: the router frees a booking never marked prefilled after
// --router-prefill-timeout (5 min by default) and any booking after
// --router-stale-timeout (1 h), counting it in
// dynamo_router_bookings_expired_total (docs/compat.md §5.1,
// docs/metrics.md). Until then the worker looks busier than it is. There
// is nothing more to do than log the error.
func (r *Request) Done(ctx context.Context, outputTokens int) error {
	if r == nil || !r.booked || !r.done.CompareAndSwap(false, true) {
		return nil
	}
	return r.c.mark(context.WithoutCancel(ctx), EndpointMarkFree, r, r.d.RequestID, outputTokens)
}
