package zmqtest

import (
	"github.com/vmihailenco/msgpack/v5"
)

// Event is one engine KV event, encoded by Batch in vLLM's current map form
// (or its legacy positional form with Legacy).
type Event struct {
	Type        string // BlockStored, BlockRemoved, AllBlocksCleared
	BlockHashes []uint64
	// Parent is the parent block's hash; nil for a chain from the root.
	Parent    *uint64
	TokenIDs  []uint32
	BlockSize int
	Medium    string // "" encodes nil
	LoraName  string // "" encodes nil
}

// Stored is a BlockStored event on the GPU.
func Stored(parent *uint64, hashes []uint64, tokens []uint32, blockSize int) Event {
	return Event{Type: "BlockStored", BlockHashes: hashes, Parent: parent, TokenIDs: tokens, BlockSize: blockSize, Medium: "GPU"}
}

// Removed is a BlockRemoved event on the GPU.
func Removed(hashes ...uint64) Event {
	return Event{Type: "BlockRemoved", BlockHashes: hashes, Medium: "GPU"}
}

// Cleared is an AllBlocksCleared event.
func Cleared() Event { return Event{Type: "AllBlocksCleared"} }

// Parent returns a pointer to h, for Event.Parent.
func Parent(h uint64) *uint64 { return &h }

// Batch encodes events as one vLLM batch of data-parallel rank dpRank:
// [ts, [events...], dp_rank], events as maps with a type key.
func Batch(dpRank int, events ...Event) []byte {
	return encode(dpRank, false, events)
}

// LegacyBatch encodes events as vLLM did before mid-2026: each event a
// positional array [tag, fields...].
func LegacyBatch(dpRank int, events ...Event) []byte {
	return encode(dpRank, true, events)
}

func encode(dpRank int, legacy bool, events []Event) []byte {
	evs := make([]any, len(events))
	for i, e := range events {
		if legacy {
			evs[i] = e.array()
		} else {
			evs[i] = e.kv()
		}
	}
	b, err := msgpack.Marshal([]any{1767225600.5, evs, dpRank})
	if err != nil {
		panic(err) // only values this file builds
	}
	return b
}

func opt[T comparable](v T) any {
	var zero T
	if v == zero {
		return nil
	}
	return v
}

func (e Event) parent() any {
	if e.Parent == nil {
		return nil
	}
	return *e.Parent
}

// kv is the event as an ordered map (msgpack encodes a slice of key-value
// pairs through msgpack.Marshal of an ordered type).
func (e Event) kv() any {
	m := orderedMap{{"type", e.Type}}
	switch e.Type {
	case "BlockStored":
		m = append(m, kv{"block_hashes", e.BlockHashes}, kv{"parent_block_hash", e.parent()}, kv{"token_ids", tokens(e.TokenIDs)},
			kv{"block_size", e.BlockSize}, kv{"lora_id", nil}, kv{"medium", opt(e.Medium)}, kv{"lora_name", opt(e.LoraName)})
	case "BlockRemoved":
		m = append(m, kv{"block_hashes", e.BlockHashes}, kv{"medium", opt(e.Medium)})
	}
	return m
}

func (e Event) array() []any {
	switch e.Type {
	case "BlockStored":
		return []any{e.Type, e.BlockHashes, e.parent(), tokens(e.TokenIDs), e.BlockSize, nil, opt(e.Medium), opt(e.LoraName)}
	case "BlockRemoved":
		return []any{e.Type, e.BlockHashes, opt(e.Medium)}
	}
	return []any{e.Type}
}

func tokens(t []uint32) []uint32 {
	if t == nil {
		return []uint32{}
	}
	return t
}

type kv struct {
	k string
	v any
}

// orderedMap encodes as a MessagePack map in its order.
type orderedMap []kv

var _ msgpack.CustomEncoder = orderedMap(nil)

// EncodeMsgpack writes the map header and the pairs in order.
func (m orderedMap) EncodeMsgpack(enc *msgpack.Encoder) error {
	if err := enc.EncodeMapLen(len(m)); err != nil {
		return err
	}
	for _, p := range m {
		if err := enc.EncodeString(p.k); err != nil {
			return err
		}
		if err := enc.Encode(p.v); err != nil {
			return err
		}
	}
	return nil
}
