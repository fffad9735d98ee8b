package scheduler

import (
	"fmt"

	"github.com/kvrouter/router/indexer"
)

// SyncKind is the kind of a replica-sync event (Dynamo's
// ActiveSequenceEventData).
type SyncKind uint8

// The kinds of replica-sync event.
const (
	// SyncAdd books a request on one rank (AddRequest).
	SyncAdd SyncKind = iota + 1
	// SyncPrefill marks a request's prefill completed (MarkPrefillCompleted).
	SyncPrefill
	// SyncFree frees a request (Free).
	SyncFree
)

// String returns Dynamo's name of the kind.
func (k SyncKind) String() string {
	switch k {
	case SyncAdd:
		return "AddRequest"
	case SyncPrefill:
		return "MarkPrefillCompleted"
	case SyncFree:
		return "Free"
	}
	return fmt.Sprintf("sync(%d)", uint8(k))
}

// SyncEvent is one change of the bookkeeping that router replicas share
// (--router-replica-sync, docs/compat.md §5). A disaggregated request is
// added by two events, its prefill rank first.
type SyncEvent struct {
	Kind      SyncKind
	RequestID string
	// Worker is the rank of an add; for a mark or a free, the request's
	// first rank when known (receivers go by the request id).
	Worker indexer.Worker
	// SeqHashes, ISL and Overlap describe an add: the prompt's sequence
	// hashes (nil when not tracked), its length, and the rank's overlap in
	// blocks. TrackPrefill is false for the decode rank of a disaggregated
	// request, which computes no prefill.
	SeqHashes    []uint64
	ISL          int
	Overlap      int
	TrackPrefill bool
}

// Publisher shares this router's bookkeeping changes with its replicas.
// The Router calls Publish while holding its lock, so that events of one
// request leave in order: it must not block and must not call back into
// the Router. The event and its slices are valid only during the call.
type Publisher interface {
	Publish(ev SyncEvent)
}
