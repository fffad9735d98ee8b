package events

import (
	"errors"
	"fmt"
	"strconv"
	"unicode/utf8"

	"github.com/kvrouter/router/indexer"
)

// DecodeJSON decodes a RouterEvent in Dynamo's JSON encoding (serde's names,
// dynamo-compat.md §3):
//
//	{"worker_id": 7, "storage_tier": "device",
//	 "event": {"event_id": 12, "dp_rank": 0,
//	           "data": {"stored": {"parent_hash": null, "blocks": [{"block_hash": 100, "tokens_hash": 5}]}}}}
//
// Rules, as serde applies them to Dynamo's types unless said otherwise:
// worker_id, event, event.event_id and event.data are required; dp_rank
// defaults to 0; data is externally tagged ({"stored": ...}, {"removed":
// ...}, the bare string "cleared" or {"cleared": null}), any other variant
// is rejected; unknown fields are skipped, a known field given twice is
// rejected. Hash fields (block_hash, parent_hash, block_hashes, tokens_hash)
// and worker_id accept negative i64 values and keep their bits as u64
// (Python publishers emit signed hashes). Numbers with a fraction or an
// exponent are not integers and are rejected. The message is rejected whole
// if it is over MaxMessageBytes, a list over MaxBlocksPerEvent or a skipped
// value nested deeper than 64 levels.
//
// It never panics, whatever the input; the event does not alias msg.
func DecodeJSON(msg []byte) (indexer.Event, Meta, error) {
	if len(msg) > MaxMessageBytes {
		return indexer.Event{}, Meta{}, &DecodeError{Msg: fmt.Sprintf("message of %d bytes is over the limit of %d", len(msg), MaxMessageBytes), Err: ErrTooLarge}
	}
	d := jsonDecoder{b: msg}
	ev, meta, err := d.routerEvent()
	if err == nil {
		d.ws()
		if d.i != len(d.b) {
			err = d.syntax("", "data after the event")
		}
	}
	if err != nil {
		return indexer.Event{}, Meta{}, classifyJSON(msg, err)
	}
	return ev, meta, nil
}

// classifyJSON replaces a schema error by the syntax error of the message
// when it is not well-formed JSON at all: the decoder stops at the first
// problem it meets, which may be a wrong type before a syntax error further
// on.
func classifyJSON(msg []byte, err error) error {
	if errors.Is(err, ErrSchema) {
		if serr := checkJSON(msg); serr != nil {
			return serr
		}
	}
	return err
}

// checkJSON returns the syntax error of msg, nil if it is one well-formed
// JSON value (values nested deeper than maxDepth count as well-formed: they
// are too large, not malformed).
func checkJSON(msg []byte) error {
	d := jsonDecoder{b: msg}
	d.ws()
	if err := d.skip("", 0); err != nil {
		if errors.Is(err, ErrTooLarge) {
			return nil
		}
		return err
	}
	d.ws()
	if d.i != len(d.b) {
		return d.syntax("", "data after the value")
	}
	return nil
}

// jsonDecoder reads one JSON document from b, front to back.
type jsonDecoder struct {
	b []byte
	i int
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
	fMMExtra
	fBlockHashes
)

func (d *jsonDecoder) routerEvent() (indexer.Event, Meta, error) {
	var ev indexer.Event
	meta := Meta{Encoding: EncodingJSON}
	if err := d.open('{', "", "a RouterEvent object"); err != nil {
		return ev, meta, err
	}
	var seen uint32
	for first := true; ; first = false {
		key, ok, err := d.key("", first)
		if err != nil {
			return ev, meta, err
		}
		if !ok {
			break
		}
		switch string(key) {
		case "worker_id":
			err = d.once(&seen, fWorkerID, "worker_id")
			if err == nil {
				var id uint64
				id, err = d.integer("worker_id", true)
				ev.Worker.ID = indexer.WorkerID(id)
			}
		case "storage_tier":
			if err = d.once(&seen, fStorageTier, "storage_tier"); err == nil {
				meta.StorageTier, err = d.tier()
			}
		case "residency_domain":
			if err = d.once(&seen, fResidency, "residency_domain"); err == nil {
				meta.CacheOwner, err = d.residency()
			}
		case "event":
			if err = d.once(&seen, fEvent, "event"); err == nil {
				err = d.event(&ev, &meta)
			}
		default:
			err = d.skipField("", key)
		}
		if err != nil {
			return ev, meta, err
		}
	}
	if seen&fWorkerID == 0 {
		return ev, meta, d.schema("worker_id", "missing field")
	}
	if seen&fEvent == 0 {
		return ev, meta, d.schema("event", "missing field")
	}
	return ev, meta, nil
}

func (d *jsonDecoder) tier() (StorageTier, error) {
	if d.null() {
		return TierDevice, nil
	}
	s, err := d.str("storage_tier")
	if err != nil {
		return 0, err
	}
	t, ok := parseTier(s)
	if !ok {
		return 0, d.schema("storage_tier", fmt.Sprintf("unknown variant %q, expected device, host_pinned, disk or external", s))
	}
	return t, nil
}

// residency reads residency_domain and reports whether it names the
// cache_owner domain. Dynamo rejects null and unknown domains; so do we.
func (d *jsonDecoder) residency() (bool, error) {
	s, err := d.str("residency_domain")
	if err != nil {
		return false, err
	}
	switch string(s) {
	case "worker":
		return false, nil
	case "cache_owner":
		return true, nil
	}
	return false, d.schema("residency_domain", fmt.Sprintf("unsupported domain %q", s))
}

func (d *jsonDecoder) event(ev *indexer.Event, meta *Meta) error {
	if err := d.open('{', "event", "an object"); err != nil {
		return err
	}
	var seen uint32
	for first := true; ; first = false {
		key, ok, err := d.key("event", first)
		if err != nil {
			return err
		}
		if !ok {
			break
		}
		switch string(key) {
		case "event_id":
			if err = d.once(&seen, fEventID, "event.event_id"); err == nil {
				meta.EventID, err = d.integer("event.event_id", false)
			}
		case "dp_rank":
			if err = d.once(&seen, fDPRank, "event.dp_rank"); err == nil && !d.null() {
				var r uint64
				r, err = d.integer("event.dp_rank", false)
				if err == nil && r > 1<<32-1 {
					err = d.schema("event.dp_rank", fmt.Sprintf("%d is out of the range of u32", r))
				}
				ev.Worker.DPRank = indexer.DPRank(r)
			}
		case "data":
			if err = d.once(&seen, fData, "event.data"); err == nil {
				err = d.data(ev)
			}
		default:
			err = d.skipField("event", key)
		}
		if err != nil {
			return err
		}
	}
	if seen&fEventID == 0 {
		return d.schema("event.event_id", "missing field")
	}
	if seen&fData == 0 {
		return d.schema("event.data", "missing field")
	}
	return nil
}

// data reads the externally tagged KvCacheEventData.
func (d *jsonDecoder) data(ev *indexer.Event) error {
	const field = "event.data"
	d.ws()
	if d.i < len(d.b) && d.b[d.i] == '"' {
		s, err := d.str(field)
		if err != nil {
			return err
		}
		if string(s) != "cleared" {
			return d.schema(field, fmt.Sprintf("unknown variant %q, expected stored, removed or cleared", s))
		}
		ev.Kind = indexer.KindCleared
		return nil
	}
	if err := d.open('{', field, `an object or "cleared"`); err != nil {
		return err
	}
	key, ok, err := d.key(field, true)
	if err != nil {
		return err
	}
	if !ok {
		return d.schema(field, "empty object, expected one variant")
	}
	switch string(key) {
	case "stored":
		ev.Kind = indexer.KindStored
		err = d.stored(ev)
	case "removed":
		ev.Kind = indexer.KindRemoved
		err = d.removed(ev)
	case "cleared":
		ev.Kind = indexer.KindCleared
		if !d.null() {
			err = d.schema(field+".cleared", "expected null")
		}
	default:
		return d.schema(field, fmt.Sprintf("unknown variant %q, expected stored, removed or cleared", key))
	}
	if err != nil {
		return err
	}
	if _, more, err := d.key(field, false); err != nil {
		return err
	} else if more {
		return d.schema(field, "more than one variant")
	}
	return nil
}

func (d *jsonDecoder) stored(ev *indexer.Event) error {
	const field = "event.data.stored"
	if err := d.open('{', field, "an object"); err != nil {
		return err
	}
	var seen uint32
	for first := true; ; first = false {
		key, ok, err := d.key(field, first)
		if err != nil {
			return err
		}
		if !ok {
			break
		}
		switch string(key) {
		case "parent_hash":
			if err = d.once(&seen, fParent, field+".parent_hash"); err == nil && !d.null() {
				var p uint64
				p, err = d.integer(field+".parent_hash", true)
				ev.HasParent, ev.Parent = true, indexer.BlockHash(p)
			}
		case "start_position":
			if err = d.once(&seen, fStart, field+".start_position"); err == nil && !d.null() {
				var p uint64
				p, err = d.integer(field+".start_position", false)
				if err == nil && p > 1<<32-1 {
					err = d.schema(field+".start_position", fmt.Sprintf("%d is out of the range of u32", p))
				}
			}
		case "blocks":
			if err = d.once(&seen, fBlocks, field+".blocks"); err == nil {
				err = d.blocks(ev)
			}
		default:
			err = d.skipField(field, key)
		}
		if err != nil {
			return err
		}
	}
	if seen&fBlocks == 0 {
		return d.schema(field+".blocks", "missing field")
	}
	return nil
}

func (d *jsonDecoder) blocks(ev *indexer.Event) error {
	const field = "event.data.stored.blocks"
	if err := d.open('[', field, "an array"); err != nil {
		return err
	}
	for first := true; ; first = false {
		more, err := d.elem(field, first)
		if err != nil {
			return err
		}
		if !more {
			return nil
		}
		if len(ev.Blocks) == MaxBlocksPerEvent {
			return d.tooLarge(field, fmt.Sprintf("more than %d blocks", MaxBlocksPerEvent))
		}
		b, err := d.block(len(ev.Blocks))
		if err != nil {
			return err
		}
		ev.Blocks = append(ev.Blocks, b)
	}
}

func (d *jsonDecoder) block(n int) (indexer.Block, error) {
	var b indexer.Block
	d.ws()
	if d.i >= len(d.b) || d.b[d.i] != '{' {
		return b, d.open('{', blockField(n, ""), "an object")
	}
	d.i++
	var seen uint32
	for first := true; ; first = false {
		key, ok, err := d.key("event.data.stored.blocks", first)
		if err != nil {
			return b, err
		}
		if !ok {
			break
		}
		if err := blockKey(d, key, n, &b, &seen); err != nil {
			return b, err
		}
	}
	return b, blockComplete(d, n, seen)
}

// fieldDecoder is what the JSON and MessagePack decoders share for reading
// the fields of a stored block.
type fieldDecoder interface {
	integer(field string, signed bool) (uint64, error)
	skipField(prefix string, key []byte) error
	schema(field, msg string) error
}

// blockKey reads the value of field key of the n-th stored block into b;
// seen records the fields read so far, to reject repeats.
func blockKey(d fieldDecoder, key []byte, n int, b *indexer.Block, seen *uint32) error {
	switch string(key) {
	case "block_hash":
		if *seen&fBlockHash != 0 {
			return d.schema(blockField(n, ".block_hash"), "duplicate field")
		}
		*seen |= fBlockHash
		h, err := d.integer("", true)
		setField(err, n, ".block_hash")
		b.Hash = indexer.BlockHash(h)
		return err
	case "tokens_hash":
		if *seen&fTokensHash != 0 {
			return d.schema(blockField(n, ".tokens_hash"), "duplicate field")
		}
		*seen |= fTokensHash
		h, err := d.integer("", true)
		setField(err, n, ".tokens_hash")
		b.Tokens = indexer.LocalHash(h)
		return err
	default:
		// mm_extra_info and anything newer: the engine folded it into
		// tokens_hash already.
		return d.skipField("event.data.stored.blocks[]", key)
	}
}

// blockComplete reports a required field of the n-th stored block that
// was not there.
func blockComplete(d fieldDecoder, n int, seen uint32) error {
	if seen&fBlockHash == 0 {
		return d.schema(blockField(n, ".block_hash"), "missing field")
	}
	if seen&fTokensHash == 0 {
		return d.schema(blockField(n, ".tokens_hash"), "missing field")
	}
	return nil
}

// blockField is the path of field name of the n-th stored block, built only
// for errors.
func blockField(n int, name string) string {
	return "event.data.stored.blocks[" + strconv.Itoa(n) + "]" + name
}

// setField names the field of a decode error whose path would have cost an
// allocation to build before it was needed.
func setField(err error, n int, name string) {
	if err == nil {
		return
	}
	if de := (*DecodeError)(nil); errors.As(err, &de) {
		de.Field = blockField(n, name)
	}
}

func (d *jsonDecoder) removed(ev *indexer.Event) error {
	const field = "event.data.removed"
	if err := d.open('{', field, "an object"); err != nil {
		return err
	}
	var seen uint32
	for first := true; ; first = false {
		key, ok, err := d.key(field, first)
		if err != nil {
			return err
		}
		if !ok {
			break
		}
		if string(key) != "block_hashes" {
			if err := d.skipField(field, key); err != nil {
				return err
			}
			continue
		}
		if err := d.once(&seen, fBlockHashes, field+".block_hashes"); err != nil {
			return err
		}
		if err := d.open('[', field+".block_hashes", "an array"); err != nil {
			return err
		}
		for first := true; ; first = false {
			more, err := d.elem(field+".block_hashes", first)
			if err != nil {
				return err
			}
			if !more {
				break
			}
			if len(ev.Removed) == MaxBlocksPerEvent {
				return d.tooLarge(field+".block_hashes", fmt.Sprintf("more than %d hashes", MaxBlocksPerEvent))
			}
			h, err := d.integer(field+".block_hashes[]", true)
			if err != nil {
				return err
			}
			ev.Removed = append(ev.Removed, indexer.BlockHash(h))
		}
	}
	if seen&fBlockHashes == 0 {
		return d.schema(field+".block_hashes", "missing field")
	}
	return nil
}

// ws skips white space.
func (d *jsonDecoder) ws() {
	for d.i < len(d.b) {
		switch d.b[d.i] {
		case ' ', '\t', '\r', '\n':
			d.i++
		default:
			return
		}
	}
}

// open consumes the opening c of an object or array.
func (d *jsonDecoder) open(c byte, field, want string) error {
	d.ws()
	if d.i >= len(d.b) {
		return d.syntax(field, "unexpected end of input")
	}
	if d.b[d.i] != c {
		return d.schema(field, "expected "+want+", found "+d.found())
	}
	d.i++
	return nil
}

// key reads the next key of an object whose '{' is consumed, and the ':'
// after it; ok is false at the closing '}'.
func (d *jsonDecoder) key(field string, first bool) (key []byte, ok bool, err error) {
	d.ws()
	if d.i >= len(d.b) {
		return nil, false, d.syntax(field, "unexpected end of input in an object")
	}
	if d.b[d.i] == '}' {
		d.i++
		return nil, false, nil
	}
	if !first {
		if d.b[d.i] != ',' {
			return nil, false, d.syntax(field, "expected ',' or '}' in an object")
		}
		d.i++
		d.ws()
	}
	if d.i >= len(d.b) {
		return nil, false, d.syntax(field, "unexpected end of input in an object")
	}
	if d.b[d.i] != '"' {
		return nil, false, d.syntax(field, "expected a string key")
	}
	key, err = d.str(field)
	if err != nil {
		return nil, false, err
	}
	d.ws()
	if d.i >= len(d.b) || d.b[d.i] != ':' {
		return nil, false, d.syntax(field, "expected ':' after a key")
	}
	d.i++
	return key, true, nil
}

// elem moves to the next element of an array whose '[' is consumed; more is
// false at the closing ']'.
func (d *jsonDecoder) elem(field string, first bool) (more bool, err error) {
	d.ws()
	if d.i >= len(d.b) {
		return false, d.syntax(field, "unexpected end of input in an array")
	}
	if d.b[d.i] == ']' {
		d.i++
		return false, nil
	}
	if !first {
		if d.b[d.i] != ',' {
			return false, d.syntax(field, "expected ',' or ']' in an array")
		}
		d.i++
	}
	return true, nil
}

// once records field bit f, failing if it was seen before.
func (d *jsonDecoder) once(seen *uint32, f uint32, field string) error {
	if *seen&f != 0 {
		return d.schema(field, "duplicate field")
	}
	*seen |= f
	return nil
}

// null consumes a null if one comes next.
func (d *jsonDecoder) null() bool {
	d.ws()
	if len(d.b)-d.i >= 4 && string(d.b[d.i:d.i+4]) == "null" {
		d.i += 4
		return true
	}
	return false
}

// integer reads a JSON integer that fits u64; with signed, also a negative
// one that fits i64, whose bits it returns.
func (d *jsonDecoder) integer(field string, signed bool) (uint64, error) {
	d.ws()
	if d.i >= len(d.b) {
		return 0, d.syntax(field, "unexpected end of input")
	}
	start := d.i
	neg := d.b[d.i] == '-'
	if neg {
		d.i++
	}
	if d.i >= len(d.b) || d.b[d.i] < '0' || d.b[d.i] > '9' {
		d.i = start
		return 0, d.schema(field, "expected an integer, found "+d.found())
	}
	var v uint64
	digits := 0
	overflow := false
	for d.i < len(d.b) && d.b[d.i] >= '0' && d.b[d.i] <= '9' {
		c := uint64(d.b[d.i] - '0')
		if v > (1<<64-1-c)/10 {
			overflow = true
		} else {
			v = v*10 + c
		}
		d.i++
		digits++
	}
	if digits > 1 && d.b[start+b2i(neg)] == '0' {
		return 0, d.syntax(field, "number with a leading zero")
	}
	if d.i < len(d.b) && (d.b[d.i] == '.' || d.b[d.i] == 'e' || d.b[d.i] == 'E') {
		d.i = start
		if err := d.skipNumber(field); err != nil {
			return 0, err
		}
		return 0, d.schemaAt(start, field, "expected an integer, found a number with a fraction or exponent")
	}
	switch {
	case neg && !signed:
		return 0, d.schemaAt(start, field, "expected an unsigned integer, found "+string(d.b[start:d.i]))
	case overflow, neg && v > 1<<63:
		return 0, d.schemaAt(start, field, string(d.b[start:d.i])+" is out of the range of u64 and i64")
	case neg:
		return -v, nil // two's complement: the bits of the i64
	}
	return v, nil
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// str reads a string and returns its contents, unescaped. Without escapes
// the result aliases the input.
func (d *jsonDecoder) str(field string) ([]byte, error) {
	d.ws()
	if d.i >= len(d.b) || d.b[d.i] != '"' {
		if d.i >= len(d.b) {
			return nil, d.syntax(field, "unexpected end of input")
		}
		return nil, d.schema(field, "expected a string, found "+d.found())
	}
	d.i++
	start := d.i
	escaped := false
	for {
		if d.i >= len(d.b) {
			return nil, d.syntax(field, "unterminated string")
		}
		c := d.b[d.i]
		switch {
		case c == '"':
			s := d.b[start:d.i]
			d.i++
			if escaped {
				return unescape(s), nil
			}
			return s, nil
		case c == '\\':
			escaped = true
			if d.i+1 >= len(d.b) {
				return nil, d.syntax(field, "unterminated string")
			}
			switch d.b[d.i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				d.i += 2
			case 'u':
				if d.i+6 > len(d.b) || !isHex4(d.b[d.i+2:d.i+6]) {
					return nil, d.syntax(field, `invalid \u escape`)
				}
				d.i += 6
			default:
				return nil, d.syntax(field, "invalid escape")
			}
		case c < 0x20:
			return nil, d.syntax(field, "control character in a string")
		default:
			d.i++
		}
	}
}

func isHex4(b []byte) bool {
	for _, c := range b {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F') {
			return false
		}
	}
	return true
}

// unescape decodes the escapes of a string body already checked by str.
func unescape(s []byte) []byte {
	out := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		if s[i] != '\\' {
			out = append(out, s[i])
			continue
		}
		i++
		switch s[i] {
		case 'b':
			out = append(out, '\b')
		case 'f':
			out = append(out, '\f')
		case 'n':
			out = append(out, '\n')
		case 'r':
			out = append(out, '\r')
		case 't':
			out = append(out, '\t')
		case 'u':
			r, _ := strconv.ParseUint(string(s[i+1:i+5]), 16, 32)
			i += 4
			if r >= 0xD800 && r < 0xDC00 && i+6 < len(s) && s[i+1] == '\\' && s[i+2] == 'u' {
				if lo, err := strconv.ParseUint(string(s[i+3:i+7]), 16, 32); err == nil && lo >= 0xDC00 && lo < 0xE000 {
					r = 0x10000 + (r-0xD800)<<10 + (lo - 0xDC00)
					i += 6
				}
			}
			out = utf8.AppendRune(out, rune(r))
		default: // '"', '\\', '/'
			out = append(out, s[i])
		}
	}
	return out
}

// skipField skips the value of an unknown field; the field's path is built
// only for an error.
func (d *jsonDecoder) skipField(prefix string, key []byte) error {
	err := d.skip("", 0)
	if err != nil {
		nameField(err, prefix, key)
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

// skip skips one value, checking its syntax.
func (d *jsonDecoder) skip(field string, depth int) error {
	if depth > maxDepth {
		return d.tooLarge(field, fmt.Sprintf("values nested deeper than %d levels", maxDepth))
	}
	d.ws()
	if d.i >= len(d.b) {
		return d.syntax(field, "unexpected end of input")
	}
	switch c := d.b[d.i]; {
	case c == '{':
		d.i++
		for first := true; ; first = false {
			_, ok, err := d.key(field, first)
			if err != nil || !ok {
				return err
			}
			if err := d.skip(field, depth+1); err != nil {
				return err
			}
		}
	case c == '[':
		d.i++
		for first := true; ; first = false {
			more, err := d.elem(field, first)
			if err != nil || !more {
				return err
			}
			if err := d.skip(field, depth+1); err != nil {
				return err
			}
		}
	case c == '"':
		_, err := d.str(field)
		return err
	case c == '-' || c >= '0' && c <= '9':
		return d.skipNumber(field)
	case c == 't':
		return d.literal(field, "true")
	case c == 'f':
		return d.literal(field, "false")
	case c == 'n':
		return d.literal(field, "null")
	}
	return d.syntax(field, "unexpected "+d.found())
}

func (d *jsonDecoder) literal(field, lit string) error {
	if len(d.b)-d.i >= len(lit) && string(d.b[d.i:d.i+len(lit)]) == lit {
		d.i += len(lit)
		return nil
	}
	return d.syntax(field, "invalid literal")
}

// skipNumber skips a number per the JSON grammar.
func (d *jsonDecoder) skipNumber(field string) error {
	digits := func() int {
		n := 0
		for d.i < len(d.b) && d.b[d.i] >= '0' && d.b[d.i] <= '9' {
			d.i++
			n++
		}
		return n
	}
	if d.i < len(d.b) && d.b[d.i] == '-' {
		d.i++
	}
	start := d.i
	if n := digits(); n == 0 || n > 1 && d.b[start] == '0' {
		return d.syntax(field, "invalid number")
	}
	if d.i < len(d.b) && d.b[d.i] == '.' {
		d.i++
		if digits() == 0 {
			return d.syntax(field, "invalid number")
		}
	}
	if d.i < len(d.b) && (d.b[d.i] == 'e' || d.b[d.i] == 'E') {
		d.i++
		if d.i < len(d.b) && (d.b[d.i] == '+' || d.b[d.i] == '-') {
			d.i++
		}
		if digits() == 0 {
			return d.syntax(field, "invalid number")
		}
	}
	return nil
}

// found names what comes next, for error messages.
func (d *jsonDecoder) found() string {
	if d.i >= len(d.b) {
		return "end of input"
	}
	switch c := d.b[d.i]; {
	case c == '{':
		return "an object"
	case c == '[':
		return "an array"
	case c == '"':
		return "a string"
	case c == '-' || c >= '0' && c <= '9':
		return "a number"
	case c == 't' || c == 'f':
		return "a boolean"
	case c == 'n':
		return "null"
	default:
		return strconv.QuoteRune(rune(c))
	}
}

func (d *jsonDecoder) syntax(field, msg string) error {
	return &DecodeError{Field: field, Offset: d.i, Msg: msg, Err: ErrMalformedJSON}
}

func (d *jsonDecoder) schema(field, msg string) error {
	return &DecodeError{Field: field, Offset: d.i, Msg: msg, Err: ErrSchema}
}

func (d *jsonDecoder) schemaAt(at int, field, msg string) error {
	return &DecodeError{Field: field, Offset: at, Msg: msg, Err: ErrSchema}
}

func (d *jsonDecoder) tooLarge(field, msg string) error {
	return &DecodeError{Field: field, Offset: d.i, Msg: msg, Err: ErrTooLarge}
}
