package events

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"
)

// cutWait bounds how long Snapshot waits for the connection's subscriptions
// to hand over what NATS delivered before the request.
const cutWait = 5 * time.Second

// ErrDurable is returned by Snapshot in durable mode: a durable router's
// index follows its JetStream consumer, not the live subjects a joining
// replica subscribes to, so its event_ids are no cut of those.
var ErrDurable = errors.New("kv events: durable mode serves no snapshots to peers")

// Snapshot takes a consistent cut of the index for a peer that is joining
// (package warmstart serves it) and encodes it as encodeSnapshot does, over
// every worker: the bytes and the number of events. It must not run on a
// NATS callback of the subscriber's connection (see (a)).
//
// The cut, for a request that reached this router on the subscriber's
// connection:
//
//	(a) Every KV event NATS delivered to the connection before the request
//	    is handed to the Writer. nc.Barrier runs a function once every
//	    asynchronous subscription of the connection has handed every message
//	    queued before the barrier to its callback and the callback returned;
//	    the KV-event callbacks return after queueing the event. The server
//	    writes to one connection in order, and the client's read loop sorts
//	    each message into its subscription's list in that order, so an event
//	    the server sent before the request is in its list before the barrier.
//	    (Subscription.Delivered and Pending cannot give this: they are read
//	    under two separate locks, and nats.go counts a message as pending
//	    until after its callback returns, so their sum is off by the message
//	    in flight.) The wait is bounded by cutWait; a subscription stuck past
//	    it is logged, and the joiner's event_id checks find whatever the cut
//	    missed (a gap clears the rank; nothing is claimed that is not held).
//	(b) Writer.baselines, a barrier through every shard queue, behind those
//	    events: each rank's last applied event_id.
//	(c) The index dump.
//
// The baselines are read before the dump, so the dump holds at least what
// the baselines say; events applied between (b) and (c) are in the dump and
// are applied again by the joiner, whose held events at or above a
// baseline are all applied. That is harmless: stored, removed and cleared
// set a (rank, block) entry to present or absent, so replaying a suffix of
// a rank's events in order on a state that already reflects some of them
// ends in the state of the last event touching each entry, the same as
// replaying them on the state before.
//
// Why a joiner misses nothing: it subscribed (and flushed, so the server
// has its interest) before sending the request on the same connection.
// An event the server handled before the subscription went to this router
// before the request, so it is in the cut; any later one reaches the joiner
// live. In a NATS cluster the servers' interest propagation weakens this,
// and the joiner's event_id checks are what catch the rest.
func (s *Subscriber) Snapshot(ctx context.Context) ([]byte, int, error) {
	if s.cfg.Durable {
		return nil, 0, ErrDurable
	}
	handed := make(chan struct{})
	if err := s.nc.Barrier(func() { close(handed) }); err != nil {
		return nil, 0, fmt.Errorf("kv events: snapshot: barrier: %w", err)
	}
	t := time.NewTimer(cutWait)
	defer t.Stop()
	select {
	case <-handed:
	case <-t.C:
		s.log.Warn("kv events: snapshot for a peer: the connection's subscriptions did not hand over their messages in time; the peer's event_id checks catch what the cut lacks",
			slog.Duration("waited", cutWait))
	case <-ctx.Done():
		return nil, 0, ctx.Err()
	}
	data, n, err := s.w.snapshot(ctx, nil)
	if err != nil {
		return nil, 0, fmt.Errorf("kv events: snapshot: %w", err)
	}
	return data, n, nil
}
