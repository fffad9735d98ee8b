package overhead

import "time"

// Phases are the timestamps of one routing decision, each measured from its
// start, the way Dynamo measures them. Route.Observe turns them into the
// five histograms.
type Phases struct {
	// BlockHashed is when block hashing ended.
	BlockHashed time.Duration
	// SeqHashed is when sequence hashing ended (after block hashing).
	SeqHashed time.Duration
	// FindMatches is how long the index lookup itself took.
	FindMatches time.Duration
	// Matched is when the lookup ended.
	Matched time.Duration
	// Total is when the decision was made.
	Total time.Duration
}

// Timer times the phases of one routing decision. The zero Timer is not
// started; use Start. A Timer is not safe for concurrent use.
type Timer struct {
	start time.Time
	p     Phases
	// lookup is when the index lookup started.
	lookup time.Duration
}

// Start returns a Timer started now.
func Start() Timer { return Timer{start: time.Now()} }

// BlockHashed marks the end of block hashing.
func (t *Timer) BlockHashed() { t.p.BlockHashed = time.Since(t.start) }

// SeqHashed marks the end of sequence hashing; the index lookup starts.
func (t *Timer) SeqHashed() {
	d := time.Since(t.start)
	t.p.SeqHashed, t.lookup = d, d
}

// Matched marks the end of the index lookup.
func (t *Timer) Matched() {
	d := time.Since(t.start)
	t.p.FindMatches, t.p.Matched = d-t.lookup, d
}

// Done marks the end of the decision and returns the timings, each
// measured from Start.
func (t *Timer) Done() Phases {
	t.p.Total = time.Since(t.start)
	return t.p
}
