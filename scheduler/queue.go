package scheduler

import (
	"fmt"
	"slices"
	"time"
)

// Queue holds the requests that wait because every eligible rank is busy,
// in the order they are to be served. It is a plain data structure: the
// Router holds its lock around every call, decides when to wait and when
// to release, and owns the timers.
//
// Order: a request that has waited the aging limit or longer goes first,
// in arrival order, whatever the policy; the others follow the policy:
// FCFS by arrival time less priority_jump, WSPT by (1 + priority_jump) /
// new prompt tokens, larger first. Equal keys keep arrival order.
type Queue struct {
	policy   QueuePolicy
	capacity int
	aging    time.Duration
	epoch    time.Time

	byKey     []*waiter // ascending key, then arrival
	byArrival []*waiter
	count     [numKinds]int
	isl       [numKinds]int
	seq       uint64
	order     []*waiter // scratch of Order
}

// waiter is one waiting request and what its decision needs again when it
// is released.
type waiter struct {
	req     *Request
	kind    Kind // the kind of rank it waits for
	isl     int
	arrival time.Time
	seq     uint64
	key     float64
	// done receives the decision, or ch when done is nil (Route).
	done   func(Decision, error)
	ch     chan result
	timer  *time.Timer
	queued bool
	// The prompt, owned: the routing scratch went back to its pool.
	locals, seqHashes []uint64
	numBlocks         int
}

// result is a decision delivered to a waiting Route.
type result struct {
	d   Decision
	err error
}

// NewQueue returns an empty queue; epoch is the time origin of FCFS keys.
func NewQueue(policy QueuePolicy, capacity int, aging time.Duration, epoch time.Time) *Queue {
	return &Queue{policy: policy, capacity: capacity, aging: aging, epoch: epoch}
}

// Len returns the number of waiting requests.
func (q *Queue) Len() int { return len(q.byKey) }

// Pending returns the waiting requests and prompt tokens of one kind of
// rank, or of all kinds when kind is 0.
func (q *Queue) Pending(kind Kind) Pending {
	if kind != 0 {
		return Pending{Requests: q.count[kind], ISLTokens: q.isl[kind]}
	}
	var p Pending
	for k := range q.count {
		p.Requests += q.count[k]
		p.ISLTokens += q.isl[k]
	}
	return p
}

// key computes w's policy key, lower first. newTokens are the prompt's
// tokens not covered by its best overlap.
func (q *Queue) key(w *waiter, newTokens int) float64 {
	jump := w.req.PriorityJump
	if q.policy == PolicyWSPT {
		return -(1 + jump) / float64(max(newTokens, 1))
	}
	return w.arrival.Sub(q.epoch).Seconds() - jump
}

// Push adds w, arrived at w.arrival; it fails with ErrQueueFull at
// capacity.
func (q *Queue) Push(w *waiter, newTokens int) error {
	if len(q.byKey) >= q.capacity {
		return fmt.Errorf("%w: %d requests waiting (--router-queue-capacity)", ErrQueueFull, len(q.byKey))
	}
	q.seq++
	w.seq = q.seq
	w.key = q.key(w, newTokens)
	i, _ := slices.BinarySearchFunc(q.byKey, w, compareWaiters)
	q.byKey = slices.Insert(q.byKey, i, w)
	q.byArrival = append(q.byArrival, w) // arrivals are pushed in time order
	q.count[w.kind]++
	q.isl[w.kind] += w.isl
	w.queued = true
	return nil
}

func compareWaiters(a, b *waiter) int {
	switch {
	case a.key < b.key:
		return -1
	case a.key > b.key:
		return 1
	case a.seq < b.seq:
		return -1
	case a.seq > b.seq:
		return 1
	}
	return 0
}

// Remove takes w out of the queue and reports whether it was in it.
func (q *Queue) Remove(w *waiter) bool {
	if !w.queued {
		return false
	}
	w.queued = false
	if i, ok := slices.BinarySearchFunc(q.byKey, w, compareWaiters); ok {
		q.byKey = slices.Delete(q.byKey, i, i+1)
	}
	if i, ok := slices.BinarySearchFunc(q.byArrival, w.seq, func(x *waiter, seq uint64) int {
		return int64Compare(x.seq, seq)
	}); ok {
		q.byArrival = slices.Delete(q.byArrival, i, i+1)
	}
	q.count[w.kind]--
	q.isl[w.kind] -= w.isl
	return true
}

func int64Compare(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// Order returns the waiting requests in service order at now: those that
// have waited the aging limit first, by arrival, then the others by
// policy. The slice is scratch, valid until the next call.
func (q *Queue) Order(now time.Time) []*waiter {
	q.order = q.order[:0]
	cutoff := now.Add(-q.aging)
	aged := 0
	for _, w := range q.byArrival {
		if w.arrival.After(cutoff) {
			break
		}
		q.order = append(q.order, w)
		aged++
	}
	if aged == 0 {
		return append(q.order, q.byKey...)
	}
	for _, w := range q.byKey {
		if w.arrival.After(cutoff) {
			q.order = append(q.order, w)
		}
	}
	return q.order
}
