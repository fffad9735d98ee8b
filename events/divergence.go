package events

import (
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// The index is diverging when, over the last DivergenceWindow, at least
// DivergenceMinStored live stored events were applied and at least
// DivergenceShare of them were rejected because their parent block is not
// in the index (status parent_block_not_found). A worker stores a block
// under its parent only when it holds the parent, so a healthy index
// rejects almost none: a high share means the index lacks prefixes the
// workers hold, as after a start without a warm start, or after lost
// events. The minimum keeps a handful of events from deciding it.
const (
	DivergenceWindow    = 10 * time.Second
	DivergenceShare     = 0.10
	DivergenceMinStored = 20
)

// divergenceBuckets is the number of one-second buckets of the window.
const divergenceBuckets = int(DivergenceWindow / time.Second)

// Divergence is what the Writer saw of the stored events of the last
// DivergenceWindow.
type Divergence struct {
	// Diverging says the index is diverging (see DivergenceShare).
	Diverging bool
	// Stored counts the live stored events applied in the window;
	// UnknownParent those of them rejected for an unknown parent.
	Stored, UnknownParent uint64
}

// Share returns UnknownParent / Stored, 0 without stored events.
func (d Divergence) Share() float64 {
	if d.Stored == 0 {
		return 0
	}
	return float64(d.UnknownParent) / float64(d.Stored)
}

// String describes the figures for /health and logs.
func (d Divergence) String() string {
	return fmt.Sprintf("%d of %d stored KV events (%.0f%%) in the last %v named a parent block the index does not hold",
		d.UnknownParent, d.Stored, 100*d.Share(), DivergenceWindow)
}

// divergence keeps the counts of the window in one-second buckets and
// decides the episodes. Shards add to it after each batch; a ticker of
// Writer.Run re-evaluates it so that an episode ends when the events stop.
type divergence struct {
	// gauge is dynamo_router_index_diverging, set under mu so that two
	// changes in a row cannot land out of order.
	gauge prometheus.Gauge
	// mu guards the fields below; a leaf lock (docs/locks.md).
	mu        sync.Mutex
	buckets   [divergenceBuckets]divBucket
	diverging bool
}

type divBucket struct {
	sec            int64 // writer clock, whole seconds
	stored, orphan uint64
}

// add counts stored events applied at now (writer clock, ns) and returns
// the state after it, and whether it changed.
func (d *divergence) add(now int64, stored, orphan uint64) (Divergence, bool) {
	sec := now / int64(time.Second)
	d.mu.Lock()
	defer d.mu.Unlock()
	b := &d.buckets[sec%int64(divergenceBuckets)]
	if b.sec != sec {
		*b = divBucket{sec: sec}
	}
	b.stored += stored
	b.orphan += orphan
	return d.evaluateLocked(sec)
}

// evaluate returns the state at now, and whether it changed.
func (d *divergence) evaluate(now int64) (Divergence, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.evaluateLocked(now / int64(time.Second))
}

func (d *divergence) evaluateLocked(sec int64) (Divergence, bool) {
	var st Divergence
	for _, b := range d.buckets {
		if b.sec > sec-int64(divergenceBuckets) && b.sec <= sec {
			st.Stored += b.stored
			st.UnknownParent += b.orphan
		}
	}
	st.Diverging = st.Stored >= DivergenceMinStored && st.Share() >= DivergenceShare
	changed := st.Diverging != d.diverging
	if changed {
		d.diverging = st.Diverging
		if st.Diverging {
			d.gauge.Set(1)
		} else {
			d.gauge.Set(0)
		}
	}
	return st, changed
}

// Divergence returns the figures of the last DivergenceWindow. Safe for
// concurrent use.
func (w *Writer) Divergence() Divergence {
	st, changed := w.div.evaluate(w.now())
	if changed {
		w.divergenceChanged(st)
	}
	return st
}

// countStored adds a batch's live stored events, applied at now (writer
// clock, ns), to the window.
func (w *Writer) countStored(now int64, stored, orphan uint64) {
	if stored == 0 {
		return
	}
	if st, changed := w.div.add(now, stored, orphan); changed {
		w.divergenceChanged(st)
	}
}

// divergenceChanged logs the start or end of an episode: once each,
// whoever noticed the change (it is decided under the window's lock, so
// only one caller sees it).
func (w *Writer) divergenceChanged(st Divergence) {
	if st.Diverging {
		w.log.Warn("kv index diverging: stored events name parent blocks the index does not hold; routing predicts fewer hits than the workers have",
			slog.Uint64("stored", st.Stored), slog.Uint64("unknown_parent", st.UnknownParent),
			slog.Float64("share", st.Share()), slog.Duration("window", DivergenceWindow))
		return
	}
	w.log.Info("kv index no longer diverging", slog.Uint64("stored", st.Stored), slog.Uint64("unknown_parent", st.UnknownParent),
		slog.Duration("window", DivergenceWindow))
}
