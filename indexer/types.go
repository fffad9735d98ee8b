package indexer

import "fmt"

// WorkerID identifies a worker instance (its etcd lease id in Dynamo).
type WorkerID uint64

// DPRank is a data-parallel rank inside one worker.
type DPRank uint32

// Worker is the unit that is scored: one data-parallel rank of one worker.
type Worker struct {
	ID     WorkerID
	DPRank DPRank
}

// String renders the worker as "id/rank" for logs.
func (w Worker) String() string { return fmt.Sprintf("%d/%d", w.ID, w.DPRank) }

// LocalHash is Dynamo's LocalBlockHash (tokens_hash): the hash of the tokens
// inside one block. The tree is keyed by it.
type LocalHash uint64

// BlockHash is the engine's own chained hash of a block
// (ExternalSequenceBlockHash): opaque to the router, unique per worker.
type BlockHash uint64

// Block is one stored block: the engine's hash and the hash of its tokens.
type Block struct {
	Hash   BlockHash
	Tokens LocalHash
}

// Tier is the storage tier a rank holds a copy of a block on, fastest first.
// An engine loads a cached prefix from whichever tier holds each block, so a
// prefix matches across tiers; the cost credits each block by its fastest
// tier.
type Tier uint8

// The storage tiers, as Dynamo's StorageTier names them.
const (
	// TierDevice is the GPU's own KV cache: the tier every event is about
	// unless it says otherwise.
	TierDevice Tier = iota
	// TierHost is host memory (CPU, pinned).
	TierHost
	// TierDisk is local disk or NVMe.
	TierDisk
	// TierExternal is storage outside the worker (network, shared).
	TierExternal
	// NumTiers counts the tiers.
	NumTiers
)

// String returns the tier's name in overlap_scores.
func (t Tier) String() string {
	switch t {
	case TierDevice:
		return "device"
	case TierHost:
		return "host"
	case TierDisk:
		return "disk"
	case TierExternal:
		return "external"
	}
	return fmt.Sprintf("tier(%d)", uint8(t))
}

// Kind is the kind of a KV event.
type Kind uint8

// The kinds of KV event, as Dynamo names them.
const (
	KindStored Kind = iota + 1
	KindRemoved
	KindCleared
)

// String returns Dynamo's name for the kind (the event_type label).
func (k Kind) String() string {
	switch k {
	case KindStored:
		return "stored"
	case KindRemoved:
		return "removed"
	case KindCleared:
		return "cleared"
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// Event is one KV event of one worker rank, decoded from the wire.
type Event struct {
	Worker Worker
	Kind   Kind
	// HasParent says Parent is set (stored only). Without a parent the
	// blocks hang from the root.
	HasParent bool
	Parent    BlockHash
	// Blocks are the stored blocks, parent first (stored only).
	Blocks []Block
	// Removed are the hashes of removed blocks (removed only).
	Removed []BlockHash
	// Tier is the storage tier the event is about (stored and removed):
	// a store adds that tier's copy (a block the rank already holds under
	// the same hash at the same place just gains the tier; a new one holds
	// that tier alone); a removal drops only that tier's copy, and the rank
	// keeps the block while another tier holds it. Cleared drops every
	// tier. A Tier past NumTiers makes the event invalid.
	Tier Tier
	// ByHash says the stored blocks are named by engine hash only, as an
	// engine's offloading connector names a copy of blocks the rank already
	// holds on another tier: Tokens and Parent are ignored and each hash is
	// resolved through the rank's own blocks; a hash the rank does not hold
	// is skipped and counted in Result.Missing.
	ByHash bool
}

// Status is the outcome of applying an event, as Dynamo counts it (the status
// label of dynamo_component_kv_cache_events_applied).
type Status uint8

// The outcomes of an event.
const (
	StatusOK Status = iota
	// StatusParentNotFound: a stored event's parent is unknown for that
	// worker; nothing of the event was applied.
	StatusParentNotFound
	// StatusBlockNotFound: a removed event named blocks the worker does not
	// hold, or holds but not on the event's tier; the other blocks were
	// removed. Also a stored event by hash (Event.ByHash) that named blocks
	// the worker does not hold; the others gained the tier.
	StatusBlockNotFound
	// StatusInvalidBlock: a stored event would make a block its own
	// ancestor, or an event was otherwise malformed (an unknown kind, a
	// tier past NumTiers); nothing was applied.
	StatusInvalidBlock
)

// String returns Dynamo's label value for the status.
func (s Status) String() string {
	switch s {
	case StatusOK:
		return "ok"
	case StatusParentNotFound:
		return "parent_block_not_found"
	case StatusBlockNotFound:
		return "block_not_found"
	case StatusInvalidBlock:
		return "invalid_block"
	}
	return fmt.Sprintf("status(%d)", uint8(s))
}

// Result tells what applying one event did.
type Result struct {
	Status Status
	// Missing counts the hashes of a removed event that the worker did not
	// hold, or held but not on the event's tier, and those of a stored
	// event by hash that it did not hold.
	Missing int
	// Evicted counts (worker, block) entries dropped by the memory cap
	// while applying the event.
	Evicted int
}

// Match is one worker rank's score for a query: how many leading blocks of
// the query it holds contiguously from the first.
//
// Blocks counts the matched blocks on every tier. Host, Disk and External
// count those of them whose fastest copy is on that tier; the rest are on
// the device. A fleet that never reports another tier has them all zero.
//
// The tier counts sit in a struct of their own so that Match has four
// fields: the compiler keeps a struct of at most four fields and 32 bytes
// in registers, and builds a larger one on the stack and copies it. With
// the counts as three more fields, the appends of FindMatches made the
// index's query replay a quarter slower (TestLayoutSizes holds the shape).
type Match struct {
	Worker Worker
	Blocks uint32
	TierBlocks
}

// TierBlocks counts a match's blocks whose fastest copy is on each tier
// off the device.
type TierBlocks struct {
	Host, Disk, External uint32
}

// Stats are the index's sizes, for gauges.
type Stats struct {
	// Entries counts (worker rank, block) pairs held.
	Entries int
	// Nodes counts tree nodes, the root excluded.
	Nodes int
	// Workers counts worker ranks that hold at least one block or were seen.
	Workers int
	// Evicted counts entries dropped by the memory cap since the start.
	Evicted uint64
}
