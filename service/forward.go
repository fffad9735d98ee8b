package service

import (
	"bytes"
	"context"
	"errors"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
)

// Forwarding of marks (docs/api.md §3, "Several replicas"). A route reply
// names the replica that booked the request (router_id), and a mark may
// carry that router_id back. A replica that takes such a mark, through the
// queue group or the HTTP API, for an id it does not know, sends it once
// to the named replica's own subject (ReplicaSubject) and answers with that
// replica's answer: without replica sync only the replica that booked a
// request knows it. The forwarded mark carries the header HeaderForwarded,
// so that it is never forwarded again, whatever the replica that receives
// it knows.

// HeaderForwarded is the NATS header of a mark one replica forwarded to
// another, with the value "1": the receiver answers it from its own
// bookkeeping and never forwards it again.
const HeaderForwarded = "Kvr-Forwarded"

// ForwardTimeout bounds the wait for the named replica's answer to a
// forwarded mark. A replica answers a mark in microseconds; one that has
// not answered in seconds is stuck or gone, and the mark is answered
// {"success":false}.
const ForwardTimeout = 2 * time.Second

// maxForwarding bounds the marks forwarded at once on goroutines of their
// own (the NATS transport). Past it, a mark is forwarded on the handler
// goroutine that took it, which then takes no other request until the
// answer comes: backpressure through NATS's pending limits, rather than
// goroutines without bound or marks answered unknown.
const maxForwarding = 1024

// forwarder sends marks to the replica they name. Safe for concurrent use;
// a nil *forwarder forwards nothing.
type forwarder struct {
	nc                   *nats.Conn
	namespace, component string
	// slots holds a token per mark being forwarded on its own goroutine.
	slots chan struct{}
}

// newForwarder returns the forwarder of the router component's replicas
// on nc.
func newForwarder(nc *nats.Conn, namespace, component string) *forwarder {
	return &forwarder{nc: nc, namespace: namespace, component: component, slots: make(chan struct{}, maxForwarding)}
}

// owns reports whether a mark naming replica routerID, taken by replica
// self, is to be forwarded: it names a replica, and another one.
func (f *forwarder) owns(routerID, self uint64) bool {
	return f != nil && routerID != 0 && routerID != self
}

// isForwarded reports whether msg is a mark another replica forwarded.
func isForwarded(msg *nats.Msg) bool {
	return msg.Header != nil && msg.Header.Get(HeaderForwarded) == "1"
}

// successTrue is a mark's reply for a known request.
var successTrue = appendSuccess(nil, true)

// forwardMark forwards mark m, whose request is body, to the replica it
// names and answers with that replica's answer: with pending (the NATS
// transport) on a goroutine that pending counts, while a slot is free,
// else before it returns.
func (h *Handler) forwardMark(ctx context.Context, ep *Endpoint, m markRequest, body []byte, to Sender, start time.Time, pending *sync.WaitGroup) {
	if pending != nil {
		select {
		case h.fwd.slots <- struct{}{}:
			pending.Add(1)
			go func() {
				defer pending.Done()
				defer func() { <-h.fwd.slots }()
				h.forwardNow(ctx, ep, m, body, to, start)
			}()
			return
		default:
		}
	}
	h.forwardNow(ctx, ep, m, body, to, start)
}

// forwardNow forwards m and answers to: success when the named replica
// answered that it knew the request, else {"success":false}, counted as
// an unknown mark (a replica that does not answer, or none subscribed to
// its subject, knew nothing that the caller could use).
func (h *Handler) forwardNow(ctx context.Context, ep *Endpoint, m markRequest, body []byte, to Sender, start time.Time) {
	ctx, cancel := context.WithTimeout(ctx, ForwardTimeout)
	defer cancel()
	msg := nats.NewMsg(ReplicaSubject(h.fwd.namespace, h.fwd.component, ep.Name, m.routerID))
	msg.Header.Set(HeaderForwarded, "1")
	msg.Data = body
	rep, err := h.fwd.nc.RequestMsgWithContext(ctx, msg)
	ok := err == nil && bytes.Equal(bytes.TrimSpace(rep.Data), successTrue)
	if !ok {
		why := "unknown there"
		switch {
		case errors.Is(err, nats.ErrNoResponders):
			why = "no such replica"
		case err != nil:
			why = err.Error()
		}
		h.unknown(ep, m, why)
	}
	h.answerMark(ep, to, start, len(body), ok)
}
