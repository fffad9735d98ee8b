// Package active is the router's bookkeeping of active sequences: which
// requests are booked on which worker ranks, the prefill tokens they have
// yet to compute, and the KV blocks they hold (docs/compat.md §5).
// The scheduler predicts each rank's load from it.
//
// Its parts: Sequences, the requests and each rank's counters in a slot
// (slots are reused as ranks come and go); the tree of active blocks
// (activetree.go), which counts blocks shared by a rank's requests once;
// and the tree's edge table (childtable.go). Nothing here knows of
// candidates, costs, metrics or locks.
//
// No type of the package is safe for concurrent use, and it starts no
// goroutine: its owner (the scheduler's Router) locks around every call.
package active
