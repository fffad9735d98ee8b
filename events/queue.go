package events

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"

	"github.com/kvrouter/router/indexer"
)

// errClosed is returned by a push after the queue closed, during shutdown.
var errClosed = errors.New("event queue closed")

// item is one command on its way to a shard: a decoded event, a change of
// approximate mode, a lifecycle command or a control request (see itemKind).
type item struct {
	kind itemKind
	// ev is the event, or names the worker or rank of a command.
	ev indexer.Event
	// together says the event_ids of every tier of the event's rank are
	// one sequence (NumberedTogether), so a tier event is checked too.
	together bool
	// id is the event's event_id (itemEvent), the baseline to seed
	// (itemRestore with seed), or the last event_id a rank lost (cmdLost).
	id   uint64
	seed bool
	// warm, with seed, says the baseline is a warm start's: the rank's
	// events below it are in the index already and are skipped until one
	// at or above it arrives.
	warm bool
	// recv is when the message arrived, in nanoseconds of the writer's
	// monotonic clock (for the apply lag).
	recv int64
	// done, in durable mode, is released once the event is applied, so that
	// the fetcher acknowledges only applied messages.
	done *sync.WaitGroup
	// ctl is a control request; ev is unused then.
	ctl *control
}

// queue is a shard's bounded multi-producer, single-consumer queue, in the
// manner of nats-server's ipqueue: producers append under a mutex, the
// consumer swaps the whole slice out, so both sides pay for the lock once per
// batch rather than once per event. It never holds more than capacity items
// and never blocks a producer that asks it not to.
type queue struct {
	capacity int
	// ready holds a token while items (or the close) wait for the consumer.
	ready chan struct{}
	// depth mirrors len(items) for the queue-depth gauge.
	depth atomic.Int64

	// mu guards the fields below; a leaf lock, taken by submitters that
	// may hold the registry's or approximate mode's (docs/locks.md).
	mu     sync.Mutex
	items  []item
	closed bool
	// lost holds the ranks whose events were dropped since the last pop.
	lost map[indexer.Worker]struct{}
	// space, when not nil, is closed by the next pop to wake blocked pushers.
	space chan struct{}
}

func newQueue(capacity int) *queue {
	return &queue{capacity: capacity, ready: make(chan struct{}, 1), lost: make(map[indexer.Worker]struct{})}
}

// tryPush queues it, or returns ErrQueueFull without waiting and remembers
// that the rank lost an event. The queue only gets room again when the
// consumer pops everything, so every event of the rank queued before the
// loss is in that pop, and none after it: the consumer handles the loss
// right after applying the pop.
func (q *queue) tryPush(it item) error {
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return errClosed
	}
	if len(q.items) >= q.capacity {
		q.lost[it.ev.Worker] = struct{}{}
		q.mu.Unlock()
		return ErrQueueFull
	}
	q.appendLocked(it)
	return nil
}

// force queues it whatever the room: for commands that must not be lost
// and whose sender must not wait. It fails only after close.
func (q *queue) force(it item) error {
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return errClosed
	}
	q.appendLocked(it)
	return nil
}

// push queues it, waiting for room while the queue is full (durable mode:
// backpressure instead of loss).
func (q *queue) push(ctx context.Context, it item) error {
	for {
		q.mu.Lock()
		if q.closed {
			q.mu.Unlock()
			return errClosed
		}
		if len(q.items) < q.capacity || it.ctl != nil {
			q.appendLocked(it)
			return nil
		}
		if q.space == nil {
			q.space = make(chan struct{})
		}
		space := q.space
		q.mu.Unlock()
		select {
		case <-space:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// appendLocked appends it and unlocks, waking the consumer if the queue was
// empty.
func (q *queue) appendLocked(it item) {
	q.items = append(q.items, it)
	n := len(q.items)
	q.depth.Store(int64(n))
	q.mu.Unlock()
	if n == 1 {
		q.wake()
	}
}

func (q *queue) wake() {
	select {
	case q.ready <- struct{}{}:
	default:
	}
}

// pop takes every queued item, handing spare over as the next buffer, and the
// ranks that lost events since the last pop.
func (q *queue) pop(spare []item) (batch []item, lost []indexer.Worker, closed bool) {
	q.mu.Lock()
	batch = q.items
	q.items = spare[:0]
	for w := range q.lost {
		lost = append(lost, w)
	}
	clear(q.lost)
	closed = q.closed
	if q.space != nil {
		close(q.space)
		q.space = nil
	}
	q.depth.Store(0)
	q.mu.Unlock()
	return batch, lost, closed
}

// close rejects further pushes; the consumer drains what is queued.
func (q *queue) close() {
	q.mu.Lock()
	q.closed = true
	if q.space != nil {
		close(q.space)
		q.space = nil
	}
	q.mu.Unlock()
	q.wake()
}
