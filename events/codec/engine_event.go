package codec

import (
	"encoding/binary"
	"fmt"
	"slices"

	"github.com/kvrouter/router/blockhash"
	"github.com/kvrouter/router/indexer"
)

// This file reads the events of an engine batch (docs/compat.md §11.3,
// §11.4): positional or keyed, into an EngineEvent.

// Event fields: what a position or a key names.
type engField uint8

const (
	efSkip engField = iota // lora_id, kv_cache_spec_sliding_window, unknown keys and positions
	efType
	efHashes
	efParent
	efTokens
	efBlockSize
	efMedium
	efLoraName // a map here is SGLang's metadata (BlockStoredWithMetadata)
	efExtraKeys
	efGroup
	efSpecKind
	efMetadata
	efSalt // cache_salt as a key of the event itself
)

// engFieldNames are the fields' keys, for errors and for map events.
var engFieldNames = [...]string{
	efSkip: "", efType: "type", efHashes: "block_hashes", efParent: "parent_block_hash",
	efTokens: "token_ids", efBlockSize: "block_size", efMedium: "medium", efLoraName: "lora_name",
	efExtraKeys: "extra_keys", efGroup: "group_idx", efSpecKind: "kv_cache_spec_kind", efMetadata: "metadata",
	efSalt: "cache_salt",
}

// Positions of the fields in the legacy array encoding, after the tag
// (docs/compat.md §11.3). SGLang's BlockStoredWithMetadata puts metadata
// where vLLM has lora_name; the value's type tells them apart.
var (
	storedFields  = [...]engField{efHashes, efParent, efTokens, efBlockSize, efSkip /* lora_id */, efMedium, efLoraName, efExtraKeys, efGroup, efSpecKind}
	removedFields = [...]engField{efHashes, efMedium, efGroup}
)

// keyField maps a map event's key to its field; unknown keys and lora_id
// are skipped.
func keyField(key []byte) engField {
	switch string(key) {
	case "type":
		return efType
	case "block_hashes":
		return efHashes
	case "parent_block_hash":
		return efParent
	case "token_ids":
		return efTokens
	case "block_size":
		return efBlockSize
	case "medium":
		return efMedium
	case "lora_name":
		return efLoraName
	case "extra_keys":
		return efExtraKeys
	case "group_idx":
		return efGroup
	case "kv_cache_spec_kind":
		return efSpecKind
	case "metadata":
		return efMetadata
	case "cache_salt":
		return efSalt
	}
	return efSkip
}

// tagKind maps an event's tag to its kind.
func tagKind(tag []byte) (indexer.Kind, bool) {
	switch string(tag) {
	case "BlockStored", "BlockStoredWithMetadata":
		return indexer.KindStored, true
	case "BlockRemoved":
		return indexer.KindRemoved, true
	case "AllBlocksCleared":
		return indexer.KindCleared, true
	}
	return 0, false
}

// evState is what reading one event gathers besides the EngineEvent.
type evState struct {
	i      int // the event's index in the batch, for errors
	extra  int // offset of extra_keys' value, -1 when absent or nil
	eagle  bool
	salted bool // a cache salt is set (metadata.cache_salt, cache_salt)
}

// event reads event i into ev.
func (d *engDecoder) event(i int, ev *EngineEvent) error {
	if d.i >= len(d.b) {
		return d.malformed(evField(i, "", -1), "unexpected end of input")
	}
	st := evState{i: i, extra: -1}
	var err error
	switch c := d.b[d.i]; {
	case isArrayType(c):
		err = d.arrayEvent(&st, ev)
	case isMapType(c):
		err = d.mapEvent(&st, ev)
	default:
		return d.schemaOr(evField(i, "", -1), "expected an event array or map, found "+d.found())
	}
	if err != nil || ev.Skip != OutcomeOK {
		return err
	}
	return d.finish(&st, ev)
}

func (d *engDecoder) arrayEvent(st *evState, ev *EngineEvent) error {
	n, err := d.arrayLen("")
	if err != nil {
		return named(err, st.i, "", -1)
	}
	if n == 0 {
		return d.schema(evField(st.i, "", -1), "empty event array, expected [tag, fields...]")
	}
	tag, err := d.str("")
	if err != nil {
		return named(err, st.i, "type", -1)
	}
	kind, ok := tagKind(tag)
	var fields []engField
	switch kind {
	case indexer.KindStored:
		fields = storedFields[:]
	case indexer.KindRemoved:
		fields = removedFields[:]
	}
	for p := 1; p < n; p++ {
		f := efSkip
		if p-1 < len(fields) {
			f = fields[p-1]
		}
		if !ok || f == efSkip {
			if err := d.skip("", 1); err != nil {
				return named(err, st.i, "", p)
			}
			continue
		}
		if err := d.field(st, ev, f); err != nil {
			return err
		}
	}
	ev.Kind = kind
	if !ok {
		ev.reset()
		ev.Skip = OutcomeUnknownTag
	}
	return nil
}

func (d *engDecoder) mapEvent(st *evState, ev *EngineEvent) error {
	start := d.i
	n, err := d.mapLen("")
	if err != nil {
		return named(err, st.i, "", -1)
	}
	// Find the tag first: msgspec writes it first, but a map has no order.
	body := d.i
	var tag []byte
	found := false
	for range n {
		key, err := d.str("")
		if err != nil {
			return named(err, st.i, "key", -1)
		}
		if string(key) == "type" {
			if tag, err = d.str(""); err != nil {
				return named(err, st.i, "type", -1)
			}
			found = true
			break
		}
		if err := d.skipField("", key); err != nil {
			return named(err, st.i, string(key), -1)
		}
	}
	if !found {
		return d.schema(evField(st.i, "type", -1), "missing field")
	}
	kind, ok := tagKind(tag)
	if !ok {
		d.i = start
		if err := d.skip("", 1); err != nil {
			return named(err, st.i, "", -1)
		}
		ev.Skip = OutcomeUnknownTag
		return nil
	}
	ev.Kind = kind
	d.i = body
	var seen uint16
	for range n {
		key, err := d.str("")
		if err != nil {
			return named(err, st.i, "key", -1)
		}
		f := keyField(key)
		if f != efSkip {
			if seen&(1<<f) != 0 {
				return d.schema(evField(st.i, engFieldNames[f], -1), "duplicate field")
			}
			seen |= 1 << f
		}
		switch f {
		case efSkip:
			if err := d.skipField("", key); err != nil {
				return named(err, st.i, string(key), -1)
			}
		case efType:
			if _, err := d.str(""); err != nil {
				return named(err, st.i, "type", -1)
			}
		case efLoraName:
			if d.i < len(d.b) && isMapType(d.b[d.i]) {
				return d.schema(evField(st.i, "lora_name", -1), "expected a string or nil, found a map")
			}
			fallthrough
		default:
			if err := d.field(st, ev, f); err != nil {
				return err
			}
		}
	}
	return nil
}

// field reads the value of field f of the event.
func (d *engDecoder) field(st *evState, ev *EngineEvent, f engField) error {
	name := engFieldNames[f]
	switch f {
	case efHashes:
		return d.hashes(st.i, ev)
	case efParent:
		if d.null() {
			return nil
		}
		h, err := d.hash()
		ev.HasParent, ev.Parent = err == nil, h
		return named(err, st.i, name, -1)
	case efTokens:
		return d.tokens(st, ev)
	case efBlockSize:
		if d.null() {
			return nil
		}
		v, err := d.integer("", false)
		if err == nil && v > blockhash.MaxBlockSize {
			err = d.schema("", fmt.Sprintf("%d is over the largest block size, %d", v, blockhash.MaxBlockSize))
		}
		ev.BlockSize = int(v)
		return named(err, st.i, name, -1)
	case efMedium, efSpecKind, efLoraName:
		if f == efLoraName && d.i < len(d.b) && isMapType(d.b[d.i]) {
			return d.metadata(st)
		}
		if d.null() {
			return nil
		}
		s, err := d.str("")
		if err != nil {
			return named(err, st.i, name, -1)
		}
		v := d.dst.intern(s)
		switch f {
		case efMedium:
			ev.Medium = v
		case efSpecKind:
			ev.SpecKind = v
		default:
			ev.LoraName = v
		}
		return nil
	case efExtraKeys:
		return d.extraKeys(st)
	case efGroup:
		if d.null() {
			return nil
		}
		v, err := d.u32("")
		ev.HasGroup, ev.GroupIdx = err == nil, int(v)
		return named(err, st.i, name, -1)
	case efMetadata:
		return d.metadata(st)
	case efSalt:
		return d.salt(st, name)
	}
	return nil
}

// hash reads a block hash: an integer, negative ones keeping their bits, or
// bin, read as a big-endian integer of which the last 8 bytes are kept
// (what vLLM's int conversion of a digest keeps); a shorter bin is
// zero-extended, an empty one rejected.
func (d *engDecoder) hash() (uint64, error) {
	if d.i < len(d.b) {
		if c := d.b[d.i]; c >= 0xc4 && c <= 0xc6 {
			b, err := d.bytes("")
			if err != nil {
				return 0, err
			}
			if len(b) == 0 {
				return 0, d.schema("", "empty bin, expected a hash")
			}
			var h uint64
			for _, x := range b[max(0, len(b)-8):] {
				h = h<<8 | uint64(x)
			}
			return h, nil
		}
	}
	return d.integer("", true)
}

func (d *engDecoder) hashes(i int, ev *EngineEvent) error {
	const name = "block_hashes"
	if d.null() {
		return nil
	}
	n, err := d.arrayLen("")
	if err != nil {
		return named(err, i, name, -1)
	}
	if n > MaxBlocksPerEvent {
		return d.tooLarge(evField(i, name, -1), fmt.Sprintf("%d hashes, more than %d", n, MaxBlocksPerEvent))
	}
	ev.Hashes = slices.Grow(ev.Hashes[:0], n)
	for j := range n {
		h, err := d.hash()
		if err != nil {
			return named(err, i, name, j)
		}
		ev.Hashes = append(ev.Hashes, h)
	}
	return nil
}

// tokens reads token_ids: unsigned integers that fit u32, or EAGLE's
// bigram pairs, which mark the event skipped.
func (d *engDecoder) tokens(st *evState, ev *EngineEvent) error {
	const name = "token_ids"
	if d.null() {
		return nil
	}
	n, err := d.arrayLen("")
	if err != nil {
		return named(err, st.i, name, -1)
	}
	ev.TokenIDs = slices.Grow(ev.TokenIDs[:0], n)
	for j := 0; j < n; j++ {
		if d.i >= len(d.b) {
			return d.malformed(evField(st.i, name, j), "unexpected end of input")
		}
		if isArrayType(d.b[d.i]) {
			// An array, not a token: EAGLE pairs. Check the rest is
			// well formed and leave the tokens out.
			st.eagle = true
			for ; j < n; j++ {
				if err := d.skip("", 1); err != nil {
					return named(err, st.i, name, j)
				}
			}
			return nil
		}
		if v, ok := d.token(); ok {
			ev.TokenIDs = append(ev.TokenIDs, v)
			continue
		}
		v, err := d.u32("")
		if err != nil {
			return named(err, st.i, name, j)
		}
		ev.TokenIDs = append(ev.TokenIDs, uint32(v))
	}
	return nil
}

// token reads a token id in the unsigned forms msgspec writes (fixint,
// uint8, uint16, uint32); ok is false, and nothing read, for anything else,
// which u32 then reads or rejects. Token ids are most of a store's bytes.
// The caller has checked that a byte is there.
func (d *engDecoder) token() (uint32, bool) {
	b, i := d.b, d.i
	switch c := b[i]; {
	case c <= 0x7f:
		d.i++
		return uint32(c), true
	case c == 0xcc && len(b)-i >= 2:
		d.i += 2
		return uint32(b[i+1]), true
	case c == 0xcd && len(b)-i >= 3:
		d.i += 3
		return uint32(binary.BigEndian.Uint16(b[i+1:])), true
	case c == 0xce && len(b)-i >= 5:
		d.i += 5
		return binary.BigEndian.Uint32(b[i+1:]), true
	}
	return 0, false
}

// extraKeys checks extra_keys (nil, or an array of one entry per block) and
// notes where it is, to be read once lora_name is known (finish).
func (d *engDecoder) extraKeys(st *evState) error {
	const name = "extra_keys"
	if d.null() {
		return nil
	}
	pos := d.i
	n, err := d.arrayLen("")
	if err != nil {
		return named(err, st.i, name, -1)
	}
	if n > MaxBlocksPerEvent {
		return d.tooLarge(evField(st.i, name, -1), fmt.Sprintf("%d entries, more than %d", n, MaxBlocksPerEvent))
	}
	for j := range n {
		if err := d.skip("", 1); err != nil {
			return named(err, st.i, name, j)
		}
	}
	st.extra = pos
	return nil
}

// metadata reads SGLang's metadata: nil or a map whose cache_salt (nil or
// a string) salts the engine's hashes of every block.
func (d *engDecoder) metadata(st *evState) error {
	const name = "metadata"
	if d.null() {
		return nil
	}
	n, err := d.mapLen("")
	if err != nil {
		return named(err, st.i, name, -1)
	}
	for range n {
		key, err := d.str("")
		if err != nil {
			return named(err, st.i, name+" key", -1)
		}
		if string(key) != "cache_salt" {
			if err := d.skipField("", key); err != nil {
				return named(err, st.i, name+"."+string(key), -1)
			}
			continue
		}
		if err := d.salt(st, name+".cache_salt"); err != nil {
			return err
		}
	}
	return nil
}

// salt reads a cache salt, nil or a string; a non-empty one salts the
// engine's hashes of every block.
func (d *engDecoder) salt(st *evState, name string) error {
	if d.null() {
		return nil
	}
	s, err := d.str("")
	if err != nil {
		return named(err, st.i, name, -1)
	}
	st.salted = st.salted || len(s) > 0
	return nil
}

// finish checks what needs the whole event and marks skips and opaque
// blocks.
func (d *engDecoder) finish(st *evState, ev *EngineEvent) error {
	if limit := MaxBlocksPerEvent * max(ev.BlockSize, 1); len(ev.TokenIDs) > limit {
		return d.tooLarge(evField(st.i, "token_ids", -1), fmt.Sprintf("%d token ids, more than %d blocks of %d", len(ev.TokenIDs), MaxBlocksPerEvent, max(ev.BlockSize, 1)))
	}
	if st.eagle {
		kind := ev.Kind
		ev.reset()
		ev.Kind, ev.Skip = kind, OutcomeEagle
		return nil
	}
	if st.salted {
		ev.Opaque, ev.OpaqueFrom = true, 0
		return nil
	}
	if st.extra >= 0 {
		from, err := opaqueFrom(d.b, st.extra, ev.LoraName)
		if err != nil {
			return named(err, st.i, "extra_keys", -1)
		}
		ev.Opaque, ev.OpaqueFrom = from >= 0, max(from, 0)
	}
	return nil
}

// opaqueFrom reads the extra_keys array at b[pos:] (already checked) and
// returns the index of the first entry that holds more than the LoRA name,
// -1 when none does.
func opaqueFrom(b []byte, pos int, lora string) (int, error) {
	d := mpDecoder{b: b, i: pos}
	n, err := d.arrayLen("")
	if err != nil {
		return -1, err
	}
	for j := range n {
		plain, err := plainEntry(&d, lora)
		if err != nil {
			return -1, err
		}
		if !plain {
			return j, nil
		}
	}
	return -1, nil
}

// plainEntry reads one extra_keys entry and reports whether it adds nothing
// the router cannot see: nil, empty, or only the LoRA name. It stops
// reading at the first item that adds something.
func plainEntry(d *mpDecoder, lora string) (bool, error) {
	if d.null() {
		return true, nil
	}
	if d.i >= len(d.b) {
		return false, d.malformed("", "unexpected end of input")
	}
	if !isArrayType(d.b[d.i]) {
		return loraItem(d, lora)
	}
	n, err := d.arrayLen("")
	if err != nil {
		return false, err
	}
	for range n {
		if ok, err := loraItem(d, lora); err != nil || !ok {
			return false, err
		}
	}
	return true, nil
}

// loraItem reads one item of an extra_keys entry and reports whether it is
// nothing or the LoRA name: a string equal to it or a tagged struct
// {"type": "lora", "name": <it>}.
func loraItem(d *mpDecoder, lora string) (bool, error) {
	if d.null() {
		return true, nil
	}
	if d.i >= len(d.b) {
		return false, d.malformed("", "unexpected end of input")
	}
	c := d.b[d.i]
	switch {
	case isStrType(c):
		s, err := d.str("")
		return err == nil && lora != "" && string(s) == lora, err
	case isMapType(c):
		n, err := d.mapLen("")
		if err != nil {
			return false, err
		}
		var isLora, sameName bool
		for range n {
			key, err := d.str("")
			if err != nil {
				return false, err
			}
			switch string(key) {
			case "type", "name":
				if d.null() {
					continue
				}
				s, err := d.str("")
				if err != nil {
					return false, err
				}
				if string(key) == "type" {
					isLora = string(s) == "lora"
				} else {
					sameName = lora != "" && string(s) == lora
				}
			default:
				if err := d.skip("", 1); err != nil {
					return false, err
				}
			}
		}
		return isLora && sameName, nil
	}
	return false, nil
}
