package codec

import (
	"strconv"

	"github.com/kvrouter/router/indexer"
)

// AppendJSON appends ev as a RouterEvent in Dynamo's JSON encoding, the
// shape DecodeJSON reads and Dynamo's routers read: u64 values as unsigned
// decimals, parent_hash null when the event has no parent, storage_tier
// from the event's Tier (StorageTierOf; meta.StorageTier is not read),
// residency_domain and event_id from meta. Events of the three kinds only:
// any other kind is written as "cleared". A stored event by hash
// (ev.ByHash) has no RouterEvent form: it is written as the stored event
// its Blocks and Parent make, so callers must not pass one.
func AppendJSON(dst []byte, ev indexer.Event, meta Meta) []byte {
	dst = append(dst, `{"worker_id":`...)
	dst = strconv.AppendUint(dst, uint64(ev.Worker.ID), 10)
	dst = append(dst, `,"storage_tier":"`...)
	dst = append(dst, StorageTierOf(ev.Tier).String()...)
	if meta.CacheOwner {
		dst = append(dst, `","residency_domain":"cache_owner`...)
	}
	dst = append(dst, `","event":{"event_id":`...)
	dst = strconv.AppendUint(dst, meta.EventID, 10)
	dst = append(dst, `,"dp_rank":`...)
	dst = strconv.AppendUint(dst, uint64(ev.Worker.DPRank), 10)
	dst = append(dst, `,"data":`...)
	switch ev.Kind {
	case indexer.KindStored:
		dst = append(dst, `{"stored":{"parent_hash":`...)
		if ev.HasParent {
			dst = strconv.AppendUint(dst, uint64(ev.Parent), 10)
		} else {
			dst = append(dst, "null"...)
		}
		dst = append(dst, `,"blocks":[`...)
		for i, b := range ev.Blocks {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = append(dst, `{"block_hash":`...)
			dst = strconv.AppendUint(dst, uint64(b.Hash), 10)
			dst = append(dst, `,"tokens_hash":`...)
			dst = strconv.AppendUint(dst, uint64(b.Tokens), 10)
			dst = append(dst, `,"mm_extra_info":null}`...)
		}
		dst = append(dst, "]}}"...)
	case indexer.KindRemoved:
		dst = append(dst, `{"removed":{"block_hashes":[`...)
		for i, h := range ev.Removed {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = strconv.AppendUint(dst, uint64(h), 10)
		}
		dst = append(dst, "]}}"...)
	default:
		dst = append(dst, `"cleared"`...)
	}
	return append(dst, "}}"...)
}
