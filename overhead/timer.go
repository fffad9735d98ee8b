package overhead

import (
	"time"

	"github.com/kvrouter/router/metrics"
)

// Observer records the timings of one routing decision. It is called from
// many routing goroutines at once. *metrics.Router implements it.
type Observer interface {
	ObserveOverhead(o metrics.Overhead)
}

var _ Observer = (*metrics.Router)(nil)

// Timer times the phases of one routing decision. The zero Timer is not
// started; use Start. A Timer is not safe for concurrent use.
type Timer struct {
	start time.Time
	o     metrics.Overhead
	// lookup is when the index lookup started.
	lookup time.Duration
}

// Start returns a Timer started now.
func Start() Timer { return Timer{start: time.Now()} }

// BlockHashed marks the end of block hashing.
func (t *Timer) BlockHashed() { t.o.BlockHashed = time.Since(t.start) }

// SeqHashed marks the end of sequence hashing; the index lookup starts.
func (t *Timer) SeqHashed() {
	d := time.Since(t.start)
	t.o.SeqHashed, t.lookup = d, d
}

// Matched marks the end of the index lookup.
func (t *Timer) Matched() {
	d := time.Since(t.start)
	t.o.FindMatches, t.o.Matched = d-t.lookup, d
}

// Done marks the end of the decision and returns the timings, each
// measured from Start.
func (t *Timer) Done() metrics.Overhead {
	t.o.Total = time.Since(t.start)
	return t.o
}
