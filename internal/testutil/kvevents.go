package testutil

import (
	"bytes"
	"encoding/binary"
	"testing"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/kvrouter/router/indexer"
)

// This file writes KV events in Dynamo's MessagePack encoding for the tests
// of the decoder (events/codec) and of ingestion (events): with a
// MessagePack library in the shapes rmp_serde::to_vec_named writes, and by
// hand for benchmarks, where the library would cost the publisher more than
// the router spends decoding.

// MessagePack shapes of Dynamo's types, as rmp_serde::to_vec_named writes
// them (maps keyed by field name).
type (
	mpBlock struct {
		BlockHash  uint64 `msgpack:"block_hash"`
		TokensHash uint64 `msgpack:"tokens_hash"`
		MMExtra    any    `msgpack:"mm_extra_info"`
	}
	mpStored struct {
		ParentHash    *uint64   `msgpack:"parent_hash"`
		StartPosition *uint32   `msgpack:"start_position"`
		Blocks        []mpBlock `msgpack:"blocks"`
	}
	mpRemoved struct {
		BlockHashes []uint64 `msgpack:"block_hashes"`
	}
	mpEvent struct {
		EventID uint64 `msgpack:"event_id"`
		Data    any    `msgpack:"data"`
		DPRank  uint32 `msgpack:"dp_rank"`
	}
	mpRouterEvent struct {
		WorkerID        uint64  `msgpack:"worker_id"`
		StorageTier     string  `msgpack:"storage_tier"`
		ResidencyDomain string  `msgpack:"residency_domain,omitempty"`
		Event           mpEvent `msgpack:"event"`
	}
	mpEnvelope struct {
		PublisherID   uint64 `msgpack:"publisher_id"`
		Sequence      uint64 `msgpack:"sequence"`
		PublishedAt   uint64 `msgpack:"published_at"`
		Topic         string `msgpack:"topic"`
		Payload       []byte `msgpack:"payload"`
		PublishedAtNs uint64 `msgpack:"published_at_ns"`
	}
)

// mpData is the externally tagged data of ev.
func mpData(ev indexer.Event) any {
	switch ev.Kind {
	case indexer.KindStored:
		st := mpStored{Blocks: []mpBlock{}}
		if ev.HasParent {
			p := uint64(ev.Parent)
			st.ParentHash = &p
		}
		for _, b := range ev.Blocks {
			st.Blocks = append(st.Blocks, mpBlock{BlockHash: uint64(b.Hash), TokensHash: uint64(b.Tokens)})
		}
		return map[string]any{"stored": st}
	case indexer.KindRemoved:
		r := mpRemoved{BlockHashes: []uint64{}}
		for _, h := range ev.Removed {
			r.BlockHashes = append(r.BlockHashes, uint64(h))
		}
		return map[string]any{"removed": r}
	}
	return "cleared"
}

// MsgpackRouterEvent encodes ev as a MessagePack RouterEvent with the
// given event_id, storage tier (Dynamo's name, e.g. "device") and, with
// cacheOwner, residency_domain "cache_owner"; compact writes every integer
// in its smallest type, as rmp_serde does, and otherwise in 64 bits.
func MsgpackRouterEvent(t testing.TB, ev indexer.Event, eventID uint64, tier string, cacheOwner, compact bool) []byte {
	t.Helper()
	var buf bytes.Buffer
	enc := msgpack.NewEncoder(&buf)
	enc.UseCompactInts(compact)
	re := mpRouterEvent{
		WorkerID:    uint64(ev.Worker.ID),
		StorageTier: tier,
		Event:       mpEvent{EventID: eventID, Data: mpData(ev), DPRank: uint32(ev.Worker.DPRank)},
	}
	if cacheOwner {
		re.ResidencyDomain = "cache_owner"
	}
	if err := enc.Encode(re); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// MsgpackEnvelope wraps a payload in Dynamo's event-plane envelope
// (publisher 42, sequence seq), integers compact or not as for
// MsgpackRouterEvent.
func MsgpackEnvelope(t testing.TB, payload []byte, seq uint64, compact bool) []byte {
	t.Helper()
	var buf bytes.Buffer
	enc := msgpack.NewEncoder(&buf)
	enc.UseCompactInts(compact)
	if err := enc.Encode(mpEnvelope{PublisherID: 42, Sequence: seq, PublishedAt: 1700000000000, Topic: "kv-events", Payload: payload, PublishedAtNs: 1700000000000000000}); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// AppendMsgpackEnvelope writes ev with event_id id, about ev's tier, as
// Dynamo's MessagePack envelope by hand
// (the reflection-based library costs the publisher more than the router
// spends decoding). The payload is a bin8/bin16 of a RouterEvent map.
func AppendMsgpackEnvelope(dst []byte, ev indexer.Event, id uint64) []byte {
	var p [256]byte
	payload := appendMsgpackRouterEvent(p[:0], ev, id)
	dst = append(dst, 0x85)
	dst = mpStr(dst, "publisher_id")
	dst = mpUint(dst, 42)
	dst = mpStr(dst, "sequence")
	dst = mpUint(dst, id)
	dst = mpStr(dst, "published_at")
	dst = mpUint(dst, 1700000000000)
	dst = mpStr(dst, "topic")
	dst = mpStr(dst, "kv-events")
	dst = mpStr(dst, "payload")
	if len(payload) < 256 {
		dst = append(dst, 0xc4, byte(len(payload)))
	} else {
		dst = append(dst, 0xc5, byte(len(payload)>>8), byte(len(payload)))
	}
	return append(dst, payload...)
}

// storageTiers are Dynamo's names of the index's tiers, as storage_tier
// spells them.
var storageTiers = [indexer.NumTiers]string{
	indexer.TierDevice:   "device",
	indexer.TierHost:     "host_pinned",
	indexer.TierDisk:     "disk",
	indexer.TierExternal: "external",
}

func appendMsgpackRouterEvent(dst []byte, ev indexer.Event, id uint64) []byte {
	dst = append(dst, 0x83)
	dst = mpStr(dst, "worker_id")
	dst = mpUint(dst, uint64(ev.Worker.ID))
	dst = mpStr(dst, "storage_tier")
	dst = mpStr(dst, storageTiers[ev.Tier])
	dst = mpStr(dst, "event")
	dst = append(dst, 0x83)
	dst = mpStr(dst, "event_id")
	dst = mpUint(dst, id)
	dst = mpStr(dst, "data")
	switch ev.Kind {
	case indexer.KindStored:
		dst = append(dst, 0x81)
		dst = mpStr(dst, "stored")
		dst = append(dst, 0x83)
		dst = mpStr(dst, "parent_hash")
		if ev.HasParent {
			dst = mpUint(dst, uint64(ev.Parent))
		} else {
			dst = append(dst, 0xc0)
		}
		dst = mpStr(dst, "start_position")
		dst = append(dst, 0xc0)
		dst = mpStr(dst, "blocks")
		dst = append(dst, 0x90|byte(len(ev.Blocks))) // fixarray: benchmark events have few blocks
		for _, b := range ev.Blocks {
			dst = append(dst, 0x83)
			dst = mpStr(dst, "block_hash")
			dst = mpUint(dst, uint64(b.Hash))
			dst = mpStr(dst, "tokens_hash")
			dst = mpUint(dst, uint64(b.Tokens))
			dst = mpStr(dst, "mm_extra_info")
			dst = append(dst, 0xc0)
		}
	case indexer.KindRemoved:
		dst = append(dst, 0x81)
		dst = mpStr(dst, "removed")
		dst = append(dst, 0x81)
		dst = mpStr(dst, "block_hashes")
		dst = append(dst, 0x90|byte(len(ev.Removed)))
		for _, h := range ev.Removed {
			dst = mpUint(dst, uint64(h))
		}
	default:
		dst = mpStr(dst, "cleared")
	}
	dst = mpStr(dst, "dp_rank")
	return mpUint(dst, uint64(ev.Worker.DPRank))
}

func mpStr(dst []byte, s string) []byte { return append(append(dst, 0xa0|byte(len(s))), s...) }

func mpUint(dst []byte, v uint64) []byte {
	if v < 128 {
		return append(dst, byte(v))
	}
	return binary.BigEndian.AppendUint64(append(dst, 0xcf), v)
}
