package codec

import (
	"fmt"

	"github.com/kvrouter/router/indexer"
	"github.com/kvrouter/router/internal/jsonscan"
)

// Limits on what a decoder accepts. A message over any of them is rejected
// whole with ErrTooLarge, before anything is allocated for it.
const (
	// MaxBlocksPerEvent caps the blocks of a stored event and the hashes of a
	// removed event. Engines publish one event per scheduler step, a few
	// hundred blocks at most (a 1M-token prompt with 16-token blocks is
	// 65,536 blocks, the cap).
	MaxBlocksPerEvent = 65536
	// MaxMessageBytes caps a message. It is above anything a NATS server
	// lets through by default (1 MiB) and what MaxBlocksPerEvent blocks
	// take in JSON.
	MaxMessageBytes = 16 << 20
	// maxDepth caps the nesting of values the decoders skip (unknown fields,
	// mm_extra_info), so a hostile message cannot recurse deeply: the JSON
	// scanner's limit, for both encodings.
	maxDepth = jsonscan.MaxDepth
)

// StorageTier is the cache tier an event is about (Dynamo's StorageTier).
type StorageTier uint8

// The storage tiers, as Dynamo names them: TierDevice is the GPU cache, the
// others hold copies that an engine can load back (StorageTier.Tier maps
// them to the index's tiers).
const (
	TierDevice StorageTier = iota
	TierHostPinned
	TierDisk
	TierExternal
)

// String returns Dynamo's name of the tier.
func (t StorageTier) String() string {
	switch t {
	case TierDevice:
		return "device"
	case TierHostPinned:
		return "host_pinned"
	case TierDisk:
		return "disk"
	case TierExternal:
		return "external"
	}
	return fmt.Sprintf("tier(%d)", uint8(t))
}

// Tier returns the index's tier for t (host_pinned is the host tier), or
// indexer.NumTiers, which the index rejects, for a value no decoder returns.
func (t StorageTier) Tier() indexer.Tier {
	switch t {
	case TierDevice:
		return indexer.TierDevice
	case TierHostPinned:
		return indexer.TierHost
	case TierDisk:
		return indexer.TierDisk
	case TierExternal:
		return indexer.TierExternal
	}
	return indexer.NumTiers
}

// StorageTierOf returns Dynamo's storage tier for the index's tier t, the
// inverse of StorageTier.Tier. A tier past the index's last has no name
// that a decoder accepts.
func StorageTierOf(t indexer.Tier) StorageTier {
	switch t {
	case indexer.TierDevice:
		return TierDevice
	case indexer.TierHost:
		return TierHostPinned
	case indexer.TierDisk:
		return TierDisk
	case indexer.TierExternal:
		return TierExternal
	}
	return StorageTier(t)
}

// parseTier maps Dynamo's name of a tier to the tier.
func parseTier(s []byte) (StorageTier, bool) {
	switch string(s) {
	case "device":
		return TierDevice, true
	case "host_pinned":
		return TierHostPinned, true
	case "disk":
		return TierDisk, true
	case "external":
		return TierExternal, true
	}
	return 0, false
}

// Encoding is the wire encoding a message came in.
type Encoding uint8

// The encodings of docs/compat.md §3.
const (
	EncodingJSON Encoding = iota + 1
	EncodingMsgpack
)

// String names the encoding.
func (e Encoding) String() string {
	switch e {
	case EncodingJSON:
		return "json"
	case EncodingMsgpack:
		return "msgpack"
	}
	return fmt.Sprintf("encoding(%d)", uint8(e))
}

// Meta is what a message says besides the index change itself.
type Meta struct {
	// EventID is the event's event_id, which increases per (worker, dp_rank).
	EventID uint64
	// StorageTier is the tier the event is about; TierDevice when absent.
	// The decoders also set the event's Tier from it.
	StorageTier StorageTier
	// CacheOwner is set when the event names the cache_owner residency
	// domain (newer Dynamo): blocks owned by a shared cache, not by the
	// worker's own device cache.
	CacheOwner bool
	// Encoding is the wire encoding.
	Encoding Encoding
	// PublisherID, Sequence and PublishedAtMs come from the MessagePack
	// envelope; zero for JSON.
	PublisherID   uint64
	Sequence      uint64
	PublishedAtMs uint64
}

// Device reports whether the event is about the worker's own device cache.
// The index holds the worker's own caches on every tier, but not the
// cache_owner residency domain (CacheOwner): those blocks are a shared
// cache's, not the worker's.
func (m Meta) Device() bool { return m.StorageTier == TierDevice && !m.CacheOwner }

// checkSize rejects a message over MaxMessageBytes, before anything is
// read or allocated for it.
func checkSize(msg []byte) error {
	if len(msg) > MaxMessageBytes {
		return &DecodeError{Msg: fmt.Sprintf("message of %d bytes is over the limit of %d", len(msg), MaxMessageBytes), Err: ErrTooLarge}
	}
	return nil
}

// Decode decodes one KV event message in either encoding: JSON when its
// first byte that is not white space is '{', the MessagePack envelope
// otherwise. It is a pure function, safe for concurrent use; the event does
// not alias msg.
func Decode(msg []byte) (indexer.Event, Meta, error) {
	for _, c := range msg {
		switch c {
		case ' ', '\t', '\r', '\n':
			continue
		case '{':
			return DecodeJSON(msg)
		}
		break
	}
	return DecodeMsgpack(msg)
}
