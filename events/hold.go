package events

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"

	"github.com/kvrouter/router/indexer"
)

// HoldCapacity bounds the transport events a Writer holds during a warm
// start (Hold). At a few hundred bytes an event it bounds the buffer to a
// few hundred MB, and it is far more than a fleet publishes during a warm
// start of the default 10 s (the busiest measured group published a few
// thousand events a second). Past it, events are dropped and counted
// (dynamo_component_kv_events_dropped_total{reason="warm_start_overflow"}),
// and their ranks cleared in order, as for a full shard queue.
const HoldCapacity = 1 << 20

// ErrNotHolding is returned by LoadSnapshot when the Writer is not holding
// the transports' events: a snapshot's baselines are only right ahead of
// every live event.
var ErrNotHolding = errors.New("kv events: writer is not holding events")

// hold is the Writer's buffer of transport events during a warm start.
type hold struct {
	// on says the Writer holds: Hold sets it and Release clears it, both
	// under mu, and add reads it under mu; offer's lock-free fast path
	// reads it alone. Once it is false it stays false.
	on atomic.Bool

	// mu guards the fields below; a leaf lock, taken by the transports'
	// delivery goroutines and by Release (docs/locks.md).
	mu   sync.Mutex
	used bool // Hold was called
	// capacity is HoldCapacity; tests set it smaller.
	capacity int
	items    []item
	events   int // events in items, markers excluded
	// lost maps each rank that lost an event since its last held one to
	// the index in items of its marker (a cmdLost item), whose id is the
	// rank's last dropped event_id.
	lost map[indexer.Worker]int
}

// Hold makes the Writer buffer the transports' events (Submit and the
// Subscriber's), in arrival order, instead of queueing them, until Release.
// A warm start loads a peer's snapshot meanwhile (LoadSnapshot) so that the
// held events apply after it. Lifecycle commands and approximate mode's
// writes are not held: they are not events of the workers' streams. Call it
// once, before the transports start.
func (w *Writer) Hold() error {
	h := &w.hold
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.used {
		return errors.New("kv events: writer: Hold called twice")
	}
	h.used = true
	if h.capacity == 0 {
		h.capacity = HoldCapacity
	}
	h.lost = make(map[indexer.Worker]int)
	h.on.Store(true)
	return nil
}

// Holding reports whether the Writer holds the transports' events.
func (w *Writer) Holding() bool { return w.hold.on.Load() }

// add holds it and returns true, or returns false when the Writer no longer
// holds (the caller queues it). A full buffer drops the event, counted, and
// leaves a marker in its place, so that the rank is handled as a loss in
// order: right after the events it held before the loss, before any it
// holds after.
func (h *hold) add(w *Writer, it item) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.on.Load() {
		return false
	}
	rank := it.ev.Worker
	if h.events >= h.capacity {
		if i, ok := h.lost[rank]; ok {
			h.items[i].id = it.id
		} else {
			// Markers go past the capacity: at most one per rank between
			// two of its held events.
			h.lost[rank] = len(h.items)
			h.items = append(h.items, item{kind: cmdLost, ev: indexer.Event{Worker: rank}, id: it.id})
		}
		w.dropped(w.dropOverflow, rank, "kv events: event dropped during the warm start, buffer of held events full; its worker rank will be cleared",
			slog.Int("capacity", h.capacity))
		return true
	}
	delete(h.lost, rank)
	h.items = append(h.items, it)
	h.events++
	return true
}

// LoadSnapshot decodes a peer's index snapshot (encodeSnapshot's format:
// one "cleared" event per rank carrying the rank's last applied event_id,
// then single-block stored events, parents first) whole, and only then
// submits its events, ahead of every held one, and returns how many it
// submitted. Each rank's event_id becomes its baseline: a held event of the
// rank below it is already in the snapshot and is skipped, counted in
// dynamo_component_kv_events_dropped_total{reason="duplicate"}; one equal
// or above is applied with the usual event_id checks. Ranks the snapshot
// gives no event_id start their baselines from their first event, as
// always.
//
// The Writer must be holding (ErrNotHolding otherwise). A snapshot that
// does not decode changes nothing; an error after it decoded comes only
// from ctx ending (shutting down).
func (w *Writer) LoadSnapshot(ctx context.Context, data []byte) (int, error) {
	if !w.Holding() {
		return 0, ErrNotHolding
	}
	evs, metas, err := decodeSnapshot(data)
	if err != nil {
		return 0, err
	}
	for i, ev := range evs {
		it := item{kind: itemRestore, ev: ev}
		if ev.Kind == indexer.KindCleared {
			// A cleared event is a no-op on the joiner's index (nothing of
			// the rank applied yet) and carries the baseline.
			it.id, it.seed, it.warm = metas[i].EventID, true, true
		}
		if err := w.push(ctx, it); err != nil {
			return i, fmt.Errorf("kv events: load snapshot: %w", err)
		}
	}
	return len(evs), nil
}

// Release ends the hold: it queues the held events in arrival order
// (waiting for room in the shards' queues) and returns how many it queued,
// then lets the transports queue directly again. Events arriving meanwhile
// are held behind the ones being queued, and the hold ends only when none is
// left, under the buffer's lock, so that every event of a rank is queued
// after those that arrived before it. Ranks that lost events to a full
// buffer are cleared right after their last event held before the loss
// (unless the snapshot loaded covers everything they lost), and their next
// event starts a new baseline. Without Hold it does nothing.
func (w *Writer) Release(ctx context.Context) (int, error) {
	h := &w.hold
	released := 0
	for {
		h.mu.Lock()
		if len(h.items) == 0 {
			h.on.Store(false)
			h.mu.Unlock()
			return released, nil
		}
		batch := h.items
		h.items, h.events = nil, 0
		clear(h.lost)
		h.mu.Unlock()
		for i, it := range batch {
			if err := w.push(ctx, it); err != nil {
				return released, fmt.Errorf("kv events: release held events: %w", err)
			}
			batch[i] = item{}
			if it.kind == itemEvent {
				released++
			}
		}
	}
}
