package codec

import (
	"errors"
	"fmt"
	"strconv"

	"github.com/kvrouter/router/indexer"
)

// This file is the RouterEvent schema, written once for both encodings
// (docs/compat.md §3.2-3.3, serde's names and rules for Dynamo's types):
//
//	RouterEvent {worker_id, storage_tier?, residency_domain?, event}
//	event       {event_id, dp_rank?, data}
//	data        stored {parent_hash?, start_position?, blocks: [{block_hash, tokens_hash, ...}]}
//	          | removed {block_hashes: [...]}
//	          | cleared
//
// Required fields: worker_id, event, event_id, data, blocks, block_hash,
// tokens_hash, block_hashes. A known field given twice is rejected; unknown
// fields are skipped (mm_extra_info and anything newer). Hash fields and
// worker_id take negative i64 values and keep their bits. The walker below
// reads it through a reader, which the JSON and MessagePack decoders
// implement; what differs between the encodings (counted or delimited
// containers, how a variant is tagged, the error vocabulary of each
// grammar) stays in the readers.

// reader is what the schema walker needs of an encoding: a cursor over one
// message, used by one goroutine. Every method fails with a *DecodeError.
// field is the path of what is being read, for errors.
type reader interface {
	// enterMap enters a map (a JSON object); what names it in a type
	// error. n is its number of entries, or -1 when the encoding tells
	// only at the end (JSON).
	enterMap(field, what string) (n int, err error)
	// key reads the key of entry i of a map of n entries; ok is false
	// after the last entry.
	key(field string, n, i int) (key []byte, ok bool, err error)
	// enterArray enters an array; n is as for enterMap.
	enterArray(field string) (n int, err error)
	// elem moves to element i of an array of n elements; more is false
	// after the last.
	elem(field string, n, i int) (more bool, err error)
	// integer reads an integer that fits u64; with signed, also a negative
	// one that fits i64, whose bits it returns.
	integer(field string, signed bool) (uint64, error)
	// null consumes a null (nil) if one comes next.
	null() bool
	// str reads a string; the result may alias the message.
	str(field string) ([]byte, error)
	// skipField skips the value of the unknown field prefix.key, naming
	// the field only on error.
	skipField(prefix string, key []byte) error
	// variant reads the tag of the externally tagged data: the variant,
	// and whether a value follows (false for a bare tag, "cleared").
	variant(field string) (kind indexer.Kind, value bool, err error)
	// unit reads the value of a tagged cleared, which carries nothing.
	unit(field string) error
	// variantEnd checks that the tagged value had one variant only.
	variantEnd(field string) error
	// offset is the byte offset reached, for errors.
	offset() int
}

// Field bits, to reject a known field given twice.
const (
	fWorkerID = 1 << iota
	fStorageTier
	fResidency
	fEvent
	fEventID
	fDPRank
	fData
	fParent
	fStart
	fBlocks
	fBlockHash
	fTokensHash
	fBlockHashes
)

// readEvent reads a RouterEvent; the event's Tier is its storage_tier.
// Meta's Encoding and envelope fields are the caller's to set.
func readEvent(r reader) (indexer.Event, Meta, error) {
	var (
		ev   indexer.Event
		meta Meta
		seen uint32
	)
	err := readMap(r, "", "a RouterEvent object", func(key []byte) (err error) {
		switch string(key) {
		case "worker_id":
			if err = once(r, &seen, fWorkerID, "worker_id"); err == nil {
				var id uint64
				id, err = r.integer("worker_id", true)
				ev.Worker.ID = indexer.WorkerID(id)
			}
		case "storage_tier":
			if err = once(r, &seen, fStorageTier, "storage_tier"); err == nil && !r.null() {
				meta.StorageTier, err = readTier(r)
			}
		case "residency_domain":
			if err = once(r, &seen, fResidency, "residency_domain"); err == nil {
				meta.CacheOwner, err = readResidency(r)
			}
		case "event":
			if err = once(r, &seen, fEvent, "event"); err == nil {
				err = readBody(r, &ev, &meta)
			}
		default:
			err = r.skipField("", key)
		}
		return err
	})
	switch {
	case err != nil:
	case seen&fWorkerID == 0:
		err = schema(r, "worker_id", "missing field")
	case seen&fEvent == 0:
		err = schema(r, "event", "missing field")
	}
	if err == nil {
		ev.Tier = meta.StorageTier.Tier()
	}
	return ev, meta, err
}

// readMap reads a map (a JSON object), what in a type error, calling each
// with the scanner on the value of every key; each must consume the value.
func readMap(r reader, field, what string, each func(key []byte) error) error {
	n, err := r.enterMap(field, what)
	if err != nil {
		return err
	}
	return readEntries(r, field, n, each)
}

// readEntries reads the entries of a map of n entries that enterMap entered.
func readEntries(r reader, field string, n int, each func(key []byte) error) error {
	for i := 0; ; i++ {
		key, ok, err := r.key(field, n, i)
		if err != nil || !ok {
			return err
		}
		if err := each(key); err != nil {
			return err
		}
	}
}

func readTier(r reader) (StorageTier, error) {
	s, err := r.str("storage_tier")
	if err != nil {
		return 0, err
	}
	t, ok := parseTier(s)
	if !ok {
		return 0, schema(r, "storage_tier", fmt.Sprintf("unknown variant %q, expected device, host_pinned, disk or external", s))
	}
	return t, nil
}

// readResidency reads residency_domain and reports whether it names the
// cache_owner domain. Dynamo rejects null and unknown domains; so do we.
func readResidency(r reader) (bool, error) {
	s, err := r.str("residency_domain")
	if err != nil {
		return false, err
	}
	switch string(s) {
	case "worker":
		return false, nil
	case "cache_owner":
		return true, nil
	}
	return false, schema(r, "residency_domain", fmt.Sprintf("unsupported domain %q", s))
}

// readBody reads the event field: event_id, dp_rank and data.
func readBody(r reader, ev *indexer.Event, meta *Meta) error {
	var seen uint32
	err := readMap(r, "event", "an object", func(key []byte) (err error) {
		switch string(key) {
		case "event_id":
			if err = once(r, &seen, fEventID, "event.event_id"); err == nil {
				meta.EventID, err = r.integer("event.event_id", false)
			}
		case "dp_rank":
			if err = once(r, &seen, fDPRank, "event.dp_rank"); err == nil && !r.null() {
				var v uint64
				v, err = readU32(r, "event.dp_rank")
				ev.Worker.DPRank = indexer.DPRank(v)
			}
		case "data":
			if err = once(r, &seen, fData, "event.data"); err == nil {
				err = readData(r, ev)
			}
		default:
			err = r.skipField("event", key)
		}
		return err
	})
	switch {
	case err != nil:
	case seen&fEventID == 0:
		err = schema(r, "event.event_id", "missing field")
	case seen&fData == 0:
		err = schema(r, "event.data", "missing field")
	}
	return err
}

// readData reads the externally tagged KvCacheEventData.
func readData(r reader, ev *indexer.Event) error {
	const field = "event.data"
	k, value, err := r.variant(field)
	if err != nil {
		return err
	}
	ev.Kind = k
	if !value {
		if k != indexer.KindCleared {
			return schema(r, field, "variant "+k.String()+" needs its data")
		}
		return nil
	}
	switch k {
	case indexer.KindStored:
		err = readStored(r, ev)
	case indexer.KindRemoved:
		err = readRemoved(r, ev)
	default:
		err = r.unit(field + ".cleared")
	}
	if err != nil {
		return err
	}
	return r.variantEnd(field)
}

// kindOf maps a variant name to its kind; the error names what is expected.
func kindOf(r reader, field string, name []byte) (indexer.Kind, error) {
	switch string(name) {
	case "stored":
		return indexer.KindStored, nil
	case "removed":
		return indexer.KindRemoved, nil
	case "cleared":
		return indexer.KindCleared, nil
	}
	return 0, schema(r, field, fmt.Sprintf("unknown variant %q, expected stored, removed or cleared", name))
}

func readStored(r reader, ev *indexer.Event) error {
	const field = "event.data.stored"
	var seen uint32
	err := readMap(r, field, "an object", func(key []byte) (err error) {
		switch string(key) {
		case "parent_hash":
			if err = once(r, &seen, fParent, field+".parent_hash"); err == nil && !r.null() {
				var p uint64
				p, err = r.integer(field+".parent_hash", true)
				ev.HasParent, ev.Parent = true, indexer.BlockHash(p)
			}
		case "start_position":
			if err = once(r, &seen, fStart, field+".start_position"); err == nil && !r.null() {
				_, err = readU32(r, field+".start_position")
			}
		case "blocks":
			if err = once(r, &seen, fBlocks, field+".blocks"); err == nil {
				err = readBlocks(r, ev)
			}
		default:
			err = r.skipField(field, key)
		}
		return err
	})
	if err == nil && seen&fBlocks == 0 {
		err = schema(r, field+".blocks", "missing field")
	}
	return err
}

func readBlocks(r reader, ev *indexer.Event) error {
	return readList(r, "event.data.stored.blocks", "blocks", func(n int) {
		ev.Blocks = make([]indexer.Block, 0, n)
	}, func(i int) error {
		b, err := readBlock(r, i)
		ev.Blocks = append(ev.Blocks, b)
		return err
	})
}

// readList reads an array of at most MaxBlocksPerEvent elements, what in
// errors: size is told the number of elements when the encoding says it
// up front (MessagePack) and it is not 0, each reads element i.
func readList(r reader, field, what string, size func(n int), each func(i int) error) error {
	n, err := r.enterArray(field)
	if err != nil {
		return err
	}
	if n > MaxBlocksPerEvent {
		return tooLarge(r, field, fmt.Sprintf("%d %s, more than %d", n, what, MaxBlocksPerEvent))
	}
	if n > 0 {
		size(n)
	}
	for i := 0; ; i++ {
		more, err := r.elem(field, n, i)
		if err != nil || !more {
			return err
		}
		if i == MaxBlocksPerEvent {
			return tooLarge(r, field, fmt.Sprintf("more than %d %s", MaxBlocksPerEvent, what))
		}
		if err := each(i); err != nil {
			return err
		}
	}
}

// readBlock reads the j-th stored block. Its fields' paths are built only
// for an error: a block is the hot path of decoding.
func readBlock(r reader, j int) (indexer.Block, error) {
	const field = "event.data.stored.blocks"
	var (
		b    indexer.Block
		seen uint32
	)
	n, err := r.enterMap(field, "an object")
	if err != nil {
		return b, nameBlock(err, j, "")
	}
	err = readEntries(r, field, n, func(key []byte) error {
		switch string(key) {
		case "block_hash":
			if seen&fBlockHash != 0 {
				return schema(r, blockField(j, ".block_hash"), "duplicate field")
			}
			seen |= fBlockHash
			h, err := r.integer("", true)
			b.Hash = indexer.BlockHash(h)
			return nameBlock(err, j, ".block_hash")
		case "tokens_hash":
			if seen&fTokensHash != 0 {
				return schema(r, blockField(j, ".tokens_hash"), "duplicate field")
			}
			seen |= fTokensHash
			h, err := r.integer("", true)
			b.Tokens = indexer.LocalHash(h)
			return nameBlock(err, j, ".tokens_hash")
		}
		// mm_extra_info and anything newer: the engine folded it into
		// tokens_hash already.
		return r.skipField(field+"[]", key)
	})
	switch {
	case err != nil:
	case seen&fBlockHash == 0:
		err = schema(r, blockField(j, ".block_hash"), "missing field")
	case seen&fTokensHash == 0:
		err = schema(r, blockField(j, ".tokens_hash"), "missing field")
	}
	return b, err
}

func readRemoved(r reader, ev *indexer.Event) error {
	const field = "event.data.removed"
	var seen uint32
	err := readMap(r, field, "an object", func(key []byte) error {
		if string(key) != "block_hashes" {
			return r.skipField(field, key)
		}
		if err := once(r, &seen, fBlockHashes, field+".block_hashes"); err != nil {
			return err
		}
		return readHashes(r, ev)
	})
	if err == nil && seen&fBlockHashes == 0 {
		err = schema(r, field+".block_hashes", "missing field")
	}
	return err
}

func readHashes(r reader, ev *indexer.Event) error {
	const field = "event.data.removed.block_hashes"
	return readList(r, field, "hashes", func(n int) {
		ev.Removed = make([]indexer.BlockHash, 0, n)
	}, func(int) error {
		h, err := r.integer(field+"[]", true)
		ev.Removed = append(ev.Removed, indexer.BlockHash(h))
		return err
	})
}

// readU32 reads an unsigned integer that fits u32 (Dynamo's u32 fields).
func readU32(r reader, field string) (uint64, error) {
	v, err := r.integer(field, false)
	if err == nil && v > 1<<32-1 {
		return 0, schema(r, field, fmt.Sprintf("%d is out of the range of u32", v))
	}
	return v, err
}

// once records field bit f, failing if it was seen before.
func once(r reader, seen *uint32, f uint32, field string) error {
	if *seen&f != 0 {
		return schema(r, field, "duplicate field")
	}
	*seen |= f
	return nil
}

// blockField is the path of field name of the j-th stored block, built only
// for errors.
func blockField(j int, name string) string {
	return "event.data.stored.blocks[" + strconv.Itoa(j) + "]" + name
}

// nameBlock names the field of a decode error in the j-th stored block,
// whose path would have cost an allocation to build before it was needed.
func nameBlock(err error, j int, name string) error {
	if err == nil {
		return nil
	}
	if de := (*DecodeError)(nil); errors.As(err, &de) {
		de.Field = blockField(j, name)
	}
	return err
}

// nameField sets the field of a decode error to prefix.key.
func nameField(err error, prefix string, key []byte) {
	if de := (*DecodeError)(nil); errors.As(err, &de) {
		if prefix == "" {
			de.Field = string(key)
		} else {
			de.Field = prefix + "." + string(key)
		}
	}
}

func schema(r reader, field, msg string) error {
	return &DecodeError{Field: field, Offset: r.offset(), Msg: msg, Err: ErrSchema}
}

func tooLarge(r reader, field, msg string) error {
	return &DecodeError{Field: field, Offset: r.offset(), Msg: msg, Err: ErrTooLarge}
}
