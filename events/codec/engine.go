package codec

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"strconv"

	"github.com/kvrouter/router/indexer"
)

// This file decodes the KV event batches that vLLM and SGLang publish on
// their own ZMQ sockets (docs/compat.md §11): the payload frame of one
// message, a MessagePack EventBatch whose events come in the legacy
// positional encoding or the current map encoding. EngineConverter
// (engine_convert.go) turns the decoded events into index events.

// MaxEventsPerBatch caps the events of one engine batch. An engine publishes
// the events of one scheduler step in a batch: a few per request at most.
const MaxEventsPerBatch = 65536

// maxInterned caps the strings a batch keeps for reuse (LoRA names, media,
// KV-cache kinds): past it a new string is allocated each time it is seen.
const maxInterned = 256

// EngineBatch is one decoded engine batch: the payload frame of one ZMQ
// message of vLLM or SGLang. DecodeEngineBatch fills it, reusing its slices,
// so a caller that keeps one EngineBatch per connection decodes without
// allocating once the slices have grown to the traffic. It does not alias
// the payload.
type EngineBatch struct {
	// TS is the batch's timestamp, Unix seconds (0 when absent or nil).
	TS float64
	// DPRank is the data-parallel rank the publisher reports
	// (data_parallel_rank, SGLang's attn_dp_rank); HasDPRank is false when
	// the batch has two elements or the rank is nil.
	DPRank    indexer.DPRank
	HasDPRank bool
	// Events are the batch's events, in order.
	Events []EngineEvent

	// names interns the strings of the events, so that steady-state
	// decoding allocates none.
	names map[string]string
}

// EngineEvent is one decoded engine event. Fields the event did not carry
// (a short legacy array, an absent key, nil) are zero. Hashes and token ids
// are as sent; nothing is checked against the router's block size here
// (EngineConverter does that).
type EngineEvent struct {
	// Kind is BlockStored (and SGLang's BlockStoredWithMetadata), BlockRemoved
	// or AllBlocksCleared; 0 when the tag is unknown.
	Kind indexer.Kind
	// Skip is why the decoder marked the event not to be indexed
	// (OutcomeUnknownTag, OutcomeEagle); OutcomeOK otherwise. A skipped
	// event keeps only its Kind.
	Skip Outcome
	// Hashes are block_hashes, the engine's block ids in chain order.
	// Negative integers keep their bits; a bin hash is read as a big-endian
	// integer and keeps its last 8 bytes (a shorter one is zero-extended).
	Hashes []uint64
	// HasParent says parent_block_hash was given (not nil); Parent is it.
	HasParent bool
	Parent    uint64
	// TokenIDs are token_ids: the tokens of the stored blocks, concatenated.
	TokenIDs []uint32
	// BlockSize is block_size, tokens per block.
	BlockSize int
	// LoraName is lora_name, the adapter the blocks were computed under.
	LoraName string
	// Medium is medium, as sent ("GPU", "CPU", ...).
	Medium string
	// HasGroup says group_idx was given; GroupIdx is it (hybrid models'
	// KV-cache group).
	HasGroup bool
	GroupIdx int
	// SpecKind is kv_cache_spec_kind ("full_attention", "sliding_window", ...).
	SpecKind string
	// Opaque says that from block OpaqueFrom on the engine's hashes cover
	// keys besides the tokens and the LoRA name: an extra_keys entry with a
	// multimodal hash, a cache salt or prompt embeddings, or a cache_salt
	// of the event (SGLang's metadata.cache_salt), from block 0.
	Opaque     bool
	OpaqueFrom int
}

// reset empties ev for reuse, keeping the capacity of its slices.
func (ev *EngineEvent) reset() {
	*ev = EngineEvent{Hashes: ev.Hashes[:0], TokenIDs: ev.TokenIDs[:0]}
}

// reset empties b for reuse, keeping its slices and interned names.
func (b *EngineBatch) reset() {
	b.TS, b.DPRank, b.HasDPRank = 0, 0, false
	b.Events = b.Events[:0]
}

// next appends an event, reusing the slot's slices, and returns it reset.
func (b *EngineBatch) next() *EngineEvent {
	n := len(b.Events)
	if n < cap(b.Events) {
		b.Events = b.Events[:n+1]
	} else {
		b.Events = append(b.Events, EngineEvent{})
	}
	ev := &b.Events[n]
	ev.reset()
	return ev
}

// intern returns s as a string, from the batch's table when it was seen
// before.
func (b *EngineBatch) intern(s []byte) string {
	if len(s) == 0 {
		return ""
	}
	if v, ok := b.names[string(s)]; ok {
		return v
	}
	v := string(s)
	if b.names == nil {
		b.names = make(map[string]string)
	}
	if len(b.names) < maxInterned {
		b.names[v] = v
	}
	return v
}

// DecodeEngineBatch decodes the payload frame of one engine ZMQ message into
// dst (docs/compat.md §11):
//
//	batch: [ts, events] | [ts, events, dp_rank] | {ts, events, data_parallel_rank | attn_dp_rank}
//	event: [tag, field...] | {type: tag, field: value, ...}
//
// A batch array may have more elements and a map other keys; they are
// skipped. Positional events are read by position in the order of vLLM's
// declarations (missing trailing fields are nil, extra ones are skipped);
// map events by key, unknown keys skipped. The tags are BlockStored,
// BlockStoredWithMetadata, BlockRemoved and AllBlocksCleared; an event of
// another tag is kept with Skip = OutcomeUnknownTag, as is one whose
// token_ids are EAGLE pairs with OutcomeEagle.
//
// A payload that is not exactly one well-formed MessagePack value, has a
// field of the wrong type or out of range, a known field twice, or is over
// the limits (MaxMessageBytes, MaxEventsPerBatch, MaxBlocksPerEvent hashes
// or extra_keys entries, MaxBlocksPerEvent × block_size token ids, values
// nested deeper than 64 levels) is rejected whole: the error is a
// *DecodeError naming the field (e.g. "events[2].token_ids[5]") and wrapping
// ErrMalformedMsgpack, ErrSchema or ErrTooLarge, and dst is left empty.
//
// It never panics. dst is the caller's: not safe for concurrent use.
func DecodeEngineBatch(payload []byte, dst *EngineBatch) error {
	dst.reset()
	err := checkSize(payload)
	if err == nil {
		d := engDecoder{mpDecoder: mpDecoder{b: payload}, dst: dst}
		err = d.batch()
		if err == nil && d.i != len(d.b) {
			err = d.malformed("", "data after the batch")
		}
	}
	if err != nil {
		dst.reset()
		return classifyMsgpack(payload, "", err)
	}
	return nil
}

// engDecoder reads one engine batch into dst.
type engDecoder struct {
	mpDecoder
	dst *EngineBatch
}

func (d *engDecoder) batch() error {
	if d.i >= len(d.b) {
		return d.malformed("", "unexpected end of input")
	}
	c := d.b[d.i]
	if isMapType(c) {
		return d.batchMap()
	}
	if !isArrayType(c) {
		return d.schemaOr("", "expected a batch array or map, found "+d.found())
	}
	n, err := d.arrayLen("")
	if err != nil {
		return err
	}
	if n < 2 {
		return d.schema("", fmt.Sprintf("batch array of %d elements, expected [ts, events] or [ts, events, dp_rank]", n))
	}
	if err := d.ts(); err != nil {
		return err
	}
	if err := d.events(); err != nil {
		return err
	}
	if n > 2 {
		if err := d.dpRank("data_parallel_rank"); err != nil {
			return err
		}
	}
	for range n - 3 {
		if err := d.skip("", 1); err != nil {
			return err
		}
	}
	return nil
}

// Batch map fields, to reject one given twice.
const (
	bTS = 1 << iota
	bEvents
	bRank
)

func (d *engDecoder) batchMap() error {
	n, err := d.mapLen("")
	if err != nil {
		return err
	}
	var seen uint8
	twice := func(f uint8, field string) error {
		if seen&f != 0 {
			return d.schema(field, "duplicate field")
		}
		seen |= f
		return nil
	}
	for range n {
		key, err := d.str("batch key")
		if err != nil {
			return err
		}
		switch k := string(key); k {
		case "ts":
			if err = twice(bTS, k); err == nil {
				err = d.ts()
			}
		case "events":
			if err = twice(bEvents, k); err == nil {
				err = d.events()
			}
		case "data_parallel_rank", "attn_dp_rank":
			if err = twice(bRank, k); err == nil {
				err = d.dpRank(k)
			}
		default:
			err = d.skipField("", key)
		}
		if err != nil {
			return err
		}
	}
	if seen&bEvents == 0 {
		return d.schema("events", "missing field")
	}
	return nil
}

// ts reads the timestamp: a float (msgspec writes float64), an integer or nil.
func (d *engDecoder) ts() error {
	if d.i >= len(d.b) {
		return d.malformed("ts", "unexpected end of input")
	}
	switch c := d.b[d.i]; {
	case c == 0xc0:
		d.i++
	case c == 0xcb:
		if !d.need(9) {
			return d.malformed("ts", "unexpected end of input")
		}
		d.dst.TS = math.Float64frombits(binary.BigEndian.Uint64(d.b[d.i+1:]))
		d.i += 9
	case c == 0xca:
		if !d.need(5) {
			return d.malformed("ts", "unexpected end of input")
		}
		d.dst.TS = float64(math.Float32frombits(binary.BigEndian.Uint32(d.b[d.i+1:])))
		d.i += 5
	case isIntType(c):
		v, err := d.integer("ts", true)
		if err != nil {
			return err
		}
		if c >= 0xe0 || c >= 0xd0 && c <= 0xd3 {
			d.dst.TS = float64(int64(v))
		} else {
			d.dst.TS = float64(v)
		}
	default:
		return d.schemaOr("ts", "expected a number, found "+d.found())
	}
	return nil
}

// dpRank reads the publisher's rank: nil or an integer that fits u32.
func (d *engDecoder) dpRank(field string) error {
	if d.null() {
		return nil
	}
	v, err := d.u32(field)
	if err != nil {
		return err
	}
	d.dst.DPRank, d.dst.HasDPRank = indexer.DPRank(v), true
	return nil
}

// u32 reads an unsigned integer that fits u32.
func (d *engDecoder) u32(field string) (uint64, error) {
	v, err := d.integer(field, false)
	if err == nil && v > math.MaxUint32 {
		return 0, d.schema(field, fmt.Sprintf("%d is out of the range of u32", v))
	}
	return v, err
}

func (d *engDecoder) events() error {
	n, err := d.arrayLen("events")
	if err != nil {
		return err
	}
	if n > MaxEventsPerBatch {
		return d.tooLarge("events", fmt.Sprintf("%d events, more than %d", n, MaxEventsPerBatch))
	}
	for i := range n {
		if err := d.event(i, d.dst.next()); err != nil {
			return err
		}
	}
	return nil
}

// evField is the path "events[i].name[j]" of a field of event i (name
// empty: the event itself; j < 0: no index), built only for errors.
func evField(i int, name string, j int) string {
	s := "events[" + strconv.Itoa(i) + "]"
	if name != "" {
		s += "." + name
	}
	if j >= 0 {
		s += "[" + strconv.Itoa(j) + "]"
	}
	return s
}

// named sets the field of a decode error to evField(i, name, j).
func named(err error, i int, name string, j int) error {
	if err == nil {
		return nil
	}
	if de := (*DecodeError)(nil); errors.As(err, &de) {
		de.Field = evField(i, name, j)
	}
	return err
}
