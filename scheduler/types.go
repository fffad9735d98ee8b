package scheduler

import (
	"fmt"

	"github.com/kvrouter/router/indexer"
	"github.com/kvrouter/router/metrics"
)

// MaxTokens bounds every token count the router accepts: a prompt's
// length, isl, a threshold. Larger values are mistakes, not prompts (the
// longest context windows are about a million tokens).
const MaxTokens = 1_000_000

// Kind is the role of a worker: a decode worker (aggregated workers
// included) or a prefill worker of disaggregated serving.
type Kind uint8

// The kinds of worker.
const (
	KindDecode Kind = iota + 1
	KindPrefill
)

// numKinds sizes arrays indexed by Kind.
const numKinds = 3

// String returns the worker_type label value: "decode" or "prefill".
func (k Kind) String() string {
	switch k {
	case KindDecode:
		return metrics.WorkerTypeDecode
	case KindPrefill:
		return metrics.WorkerTypePrefill
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// Candidate is one (worker, dp_rank) the scheduler may choose, with the
// numbers of its worker that scheduling needs. Zero limits mean unknown:
// the thresholds based on them do not apply.
type Candidate struct {
	Worker              indexer.Worker
	TotalKVBlocks       int
	MaxNumBatchedTokens int
	// OverlapTrusted is false when the worker's block size differs from the
	// router's: its KV events name other blocks than the router's queries,
	// so it is scored as if it held nothing.
	OverlapTrusted bool
}

// Index is the KV index as the scheduler reads it. FindMatches runs
// concurrently from routing goroutines, with the Router's lock held while
// the queue is released. *indexer.Index implements it.
type Index interface {
	// FindMatches appends to dst[:0] each rank's count of leading query
	// blocks it holds.
	FindMatches(query []indexer.LocalHash, earlyExit bool, dst []indexer.Match) []indexer.Match
}

var _ Index = (*indexer.Index)(nil)

// IndexWriter applies index changes in order with every other change of
// the index, asynchronously: approximate mode (--no-router-kv-events)
// stores the prompts it routes and removes its expired and pruned entries
// through it, so that they are ordered with the worker registry's removals
// and clears, and nothing else writes the index. Write is called from
// routing goroutines one at a time (approximate mode's own lock is held,
// the Router's is not); it must not call back into the Router and must not
// block for long. ev and its slices belong to the writer once Write is
// called. The writer counts what its applies evict and publishes the index
// gauges.
type IndexWriter interface {
	Write(ev indexer.Event)
}

// WorkerType is what a request asks to be routed to (route's worker_type).
type WorkerType uint8

// The worker types of a request.
const (
	// WorkerTypeAuto is disaggregated when prefill workers are registered,
	// aggregated otherwise.
	WorkerTypeAuto WorkerType = iota
	// WorkerTypeAggregated chooses one decode (aggregated) worker, KV-aware.
	WorkerTypeAggregated
	// WorkerTypePrefill chooses one prefill worker, KV-aware.
	WorkerTypePrefill
	// WorkerTypeDecode chooses one decode worker by load only.
	WorkerTypeDecode
	// WorkerTypeDisaggregated chooses a prefill worker KV-aware and a decode
	// worker by load, in one decision; without prefill workers it falls back
	// to aggregated.
	WorkerTypeDisaggregated
)

// String returns the wire name of the worker type.
func (t WorkerType) String() string {
	switch t {
	case WorkerTypeAuto:
		return "auto"
	case WorkerTypeAggregated:
		return "aggregated"
	case WorkerTypePrefill:
		return "prefill"
	case WorkerTypeDecode:
		return "decode"
	case WorkerTypeDisaggregated:
		return "disaggregated"
	}
	return fmt.Sprintf("worker_type(%d)", uint8(t))
}

// ParseWorkerType parses a wire worker_type; the empty string is auto.
func ParseWorkerType(s string) (WorkerType, bool) {
	switch s {
	case "", "auto":
		return WorkerTypeAuto, true
	case "aggregated":
		return WorkerTypeAggregated, true
	case "prefill":
		return WorkerTypePrefill, true
	case "decode":
		return WorkerTypeDecode, true
	case "disaggregated":
		return WorkerTypeDisaggregated, true
	}
	return 0, false
}

// Override changes the cost parameters for one request
// (router_config_override). Nil fields keep the configuration's.
type Override struct {
	OverlapScoreWeight *float64
	OverlapScoreCredit *float64
	PrefillLoadScale   *float64
	Temperature        *float64
}

// Request is one routing request. Exactly one of Tokens and BlockHashes is
// set (a Request with neither is a prompt of no blocks).
type Request struct {
	// ID names the request for MarkPrefill and Free; empty means the router
	// generates one (when it books).
	ID string
	// Tokens is the prompt.
	Tokens []uint32
	// BlockHashes are the prompt's LocalBlockHashes, computed by the caller.
	BlockHashes []indexer.LocalHash
	// ISL is the prompt length in tokens; 0 means len(Tokens), or
	// len(BlockHashes) × block size.
	ISL int
	// LoRAName salts the block hashes of Tokens.
	LoRAName string
	// Type is what to route to.
	Type WorkerType
	// QueryOnly answers without booking anything (Dynamo's best_worker_id;
	// the wire's "book": false). A query-only request never waits.
	QueryOnly bool
	// PriorityJump moves the request this many seconds earlier in the queue.
	PriorityJump float64
	// DoNotQueue fails the request with ErrQueueRejected instead of waiting.
	DoNotQueue bool
	// AllowedWorkerIDs, when not nil, restricts every choice of the request
	// (prefill and decode) to these workers.
	AllowedWorkerIDs []indexer.WorkerID
	// Override changes the cost parameters; nil keeps the configuration's.
	Override *Override
	// Retry says the request is a client's retry of a route whose reply it
	// did not get (the wire's "retry": true): when ID is active already,
	// the router answers with the decision of that booking instead of
	// refusing the id as a duplicate.
	Retry bool
}

// Choice is one chosen rank.
type Choice struct {
	Worker indexer.Worker
	// OverlapBlocks is the number of leading prompt blocks the rank holds.
	OverlapBlocks int
}

// Decision is the answer to a Request.
type Decision struct {
	// RequestID is the request's id, generated when the request had none
	// and was booked.
	RequestID string
	// Worker is the rank to send the request to: the prefill rank of a
	// disaggregated decision.
	Choice
	// NumBlocks is the number of full blocks of the prompt.
	NumBlocks int
	// Type is what was routed to: aggregated, prefill, decode or
	// disaggregated, never auto; a disaggregated request without prefill
	// workers says aggregated.
	Type WorkerType
	// Prefill and Decode are the two ranks of a disaggregated decision.
	Prefill, Decode Choice
	// Waited says the request waited in the queue before this decision.
	Waited bool
}

// Overlap is one rank's overlap with a prompt (OverlapScores).
type Overlap struct {
	Worker indexer.Worker
	Kind   Kind
	// OverlapBlocks is the number of leading prompt blocks the rank holds,
	// on any storage tier.
	OverlapBlocks int
	// Host, Disk and External count those of them whose fastest copy is
	// on that tier; the rest are on the device. All are 0 on a fleet that
	// reports no other tier.
	Host, Disk, External int
}

// DeviceBlocks returns the overlap's blocks on the device.
func (o Overlap) DeviceBlocks() int { return o.OverlapBlocks - o.Host - o.Disk - o.External }

// Load is one rank's load if a prompt were routed to it (PotentialLoads).
type Load struct {
	Worker indexer.Worker
	Kind   Kind
	// PotentialPrefillTokens are the rank's active prefill tokens plus the
	// prompt's tokens it does not hold.
	PotentialPrefillTokens int
	// PotentialDecodeBlocks are the rank's active blocks plus the prompt's
	// blocks not active on it.
	PotentialDecodeBlocks int
	// ActiveRequests counts the requests booked on the rank.
	ActiveRequests int
}

// Pending summarises the queue.
type Pending struct {
	Requests  int
	ISLTokens int
}
