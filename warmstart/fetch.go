package warmstart

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
)

// Snapshot is a peer's index snapshot, whole.
type Snapshot struct {
	// Data is the snapshot: a JSON list of RouterEvents.
	Data []byte
	// Events is the number of events the peer announced.
	Events int
	// Chunks is the number of messages it came in.
	Chunks int
	// Peer is the serving router's id, as it sent it ("" if it did not).
	Peer string
}

// Fetch asks a peer on nc for a snapshot and returns it once every chunk
// has arrived, or an error wrapping ErrNoPeer (no responders), ErrPeer,
// ErrChunk, or ErrTimeout when ctx's deadline passes first; ctx's
// cancellation is returned as it is. Nothing of an incomplete snapshot is
// returned. nc must be the connection of the router's KV-event
// subscriptions, and they must be live: see events.Subscriber.Snapshot for
// why that makes the snapshot and the live events meet.
func Fetch(ctx context.Context, nc *nats.Conn, cfg Config) (*Snapshot, error) {
	start := time.Now()
	inbox := nc.NewRespInbox()
	sub, err := nc.SubscribeSync(inbox)
	if err != nil {
		return nil, fmt.Errorf("subscribe to the reply inbox: %w", err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	// The joiner reads as fast as chunks come; the bound is the largest
	// snapshot it takes. What NATS would drop past it shows as a missing
	// chunk.
	if err := sub.SetPendingLimits(-1, MaxSnapshotBytes); err != nil {
		return nil, fmt.Errorf("reply inbox: %w", err)
	}
	req := nats.NewMsg(Subject(cfg.Namespace, cfg.Component))
	req.Reply = inbox
	req.Header.Set(HeaderRouter, strconv.FormatUint(cfg.RouterID, 10))
	if err := nc.PublishMsg(req); err != nil {
		return nil, fmt.Errorf("request %s: %w", req.Subject, err)
	}
	var c collector
	for {
		msg, err := sub.NextMsgWithContext(ctx)
		switch {
		case errors.Is(err, nats.ErrNoResponders):
			return nil, fmt.Errorf("%w on %s", ErrNoPeer, req.Subject)
		case errors.Is(err, context.DeadlineExceeded):
			return nil, fmt.Errorf("%w after %v: %s", ErrTimeout, time.Since(start).Round(time.Millisecond), c.progress())
		case err != nil && ctx.Err() != nil:
			return nil, ctx.Err()
		case err != nil:
			return nil, fmt.Errorf("read the reply: %w", err)
		}
		done, err := c.add(msg.Header, msg.Data)
		if err != nil {
			return nil, err
		}
		if done {
			return &Snapshot{Data: c.buf, Events: c.events, Chunks: c.chunks, Peer: c.peer}, nil
		}
	}
}
