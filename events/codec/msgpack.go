package codec

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"

	"github.com/kvrouter/router/indexer"
)

// DecodeMsgpack decodes a KV event in the MessagePack encoding of current
// Dynamo builds (docs/compat.md §3.4): an envelope map
//
//	{publisher_id u64, sequence u64, published_at u64 (ms), topic str, payload bin}
//
// (rmp_serde::to_vec_named, so field names are keys; unknown keys such as
// published_at_ns are skipped) whose payload is a RouterEvent, itself a
// MessagePack map read by the same schema as DecodeJSON's (schema.go). A
// payload whose first byte is '{' is decoded as JSON. A map whose first key
// is a RouterEvent field (worker_id, event, ...) is taken as a RouterEvent
// without envelope.
//
// Beyond the JSON rules: integers may come in any MessagePack integer type,
// negative ones keeping their bits for hash fields and worker_id; the data
// variant may be named by string or by serde's variant index (0 stored,
// 1 removed, 2 cleared), as rmp_serde accepts both; a unit "cleared" may be
// nil or an empty array; the payload may be bin, str or an array of bytes.
// Structs encoded positionally (arrays, rmp_serde::to_vec) are rejected:
// their field order changed between Dynamo versions.
//
// It never panics, whatever the input; the event does not alias msg.
func DecodeMsgpack(msg []byte) (indexer.Event, Meta, error) {
	if err := checkSize(msg); err != nil {
		return indexer.Event{}, Meta{}, err
	}
	d := mpDecoder{b: msg}
	var (
		ev   indexer.Event
		meta Meta
		err  error
	)
	if d.bareRouterEvent() {
		ev, meta, err = readEvent(&d)
		meta.Encoding = EncodingMsgpack
	} else {
		ev, meta, err = d.envelope()
	}
	if err == nil && d.i != len(d.b) {
		err = d.malformed("", "data after the event")
	}
	if err != nil {
		return indexer.Event{}, Meta{}, classifyMsgpack(msg, "", err)
	}
	return ev, meta, nil
}

// classifyMsgpack replaces a schema error by the format error of msg when
// msg is not well-formed MessagePack at all.
func classifyMsgpack(msg []byte, field string, err error) error {
	if errors.Is(err, ErrSchema) {
		if ferr := checkMsgpack(msg, field); ferr != nil {
			return ferr
		}
	}
	return err
}

// checkMsgpack returns the format error of msg, nil if it is exactly one
// well-formed MessagePack value (nesting deeper than maxDepth counts as
// well-formed).
func checkMsgpack(msg []byte, field string) error {
	d := mpDecoder{b: msg}
	if err := d.skip(field, 0); err != nil {
		if errors.Is(err, ErrTooLarge) {
			return nil
		}
		return err
	}
	if d.i != len(d.b) {
		return d.malformed(field, "data after the value")
	}
	return nil
}

// mpDecoder reads one MessagePack value from b, front to back.
type mpDecoder struct {
	b []byte
	i int
}

// bareRouterEvent peeks at the first key of the top-level map.
func (d *mpDecoder) bareRouterEvent() bool {
	p := mpDecoder{b: d.b}
	n, err := p.mapLen("")
	if err != nil || n == 0 {
		return false
	}
	k, err := p.str("")
	if err != nil {
		return false
	}
	switch string(k) {
	case "worker_id", "event", "storage_tier", "residency_domain", "state_source":
		return true
	}
	return false
}

func (d *mpDecoder) envelope() (indexer.Event, Meta, error) {
	meta := Meta{Encoding: EncodingMsgpack}
	n, err := d.mapLen("envelope")
	if err != nil {
		return indexer.Event{}, meta, err
	}
	var payload []byte
	havePayload := false
	for range n {
		key, err := d.str("envelope key")
		if err != nil {
			return indexer.Event{}, meta, err
		}
		switch string(key) {
		case "publisher_id":
			meta.PublisherID, err = d.integer("envelope.publisher_id", false)
		case "sequence":
			meta.Sequence, err = d.integer("envelope.sequence", false)
		case "published_at":
			meta.PublishedAtMs, err = d.integer("envelope.published_at", false)
		case "topic":
			_, err = d.str("envelope.topic")
		case "payload":
			if havePayload {
				return indexer.Event{}, meta, d.schema("envelope.payload", "duplicate field")
			}
			havePayload = true
			payload, err = d.bytes("envelope.payload")
		default:
			err = d.skipField("envelope", key)
		}
		if err != nil {
			return indexer.Event{}, meta, err
		}
	}
	if !havePayload {
		return indexer.Event{}, meta, d.schema("envelope.payload", "missing field")
	}
	var (
		ev    indexer.Event
		inner Meta
	)
	if isJSONPayload(payload) {
		ev, inner, err = DecodeJSON(payload)
	} else {
		// The payload is read by this decoder, moved onto it: a second
		// decoder would cost a second allocation, as a reader escapes.
		envelope := *d
		d.b, d.i = payload, 0
		ev, inner, err = readEvent(d)
		if err == nil && d.i != len(d.b) {
			err = d.malformed("", "data after the event")
		}
		if err != nil {
			err = classifyMsgpack(payload, "", err)
		}
		*d = envelope
	}
	if err != nil {
		var de *DecodeError
		if errors.As(err, &de) {
			// Positions and fields are the payload's.
			de.Field = strings.TrimSuffix("payload."+de.Field, ".")
		}
		return indexer.Event{}, meta, err
	}
	meta.EventID, meta.StorageTier, meta.CacheOwner = inner.EventID, inner.StorageTier, inner.CacheOwner
	return ev, meta, nil
}

func isJSONPayload(p []byte) bool {
	for _, c := range p {
		switch c {
		case ' ', '\t', '\r', '\n':
			continue
		}
		return c == '{'
	}
	return false
}

var _ reader = (*mpDecoder)(nil)

func (d *mpDecoder) enterMap(field, _ string) (int, error) {
	// Fast path: a fixmap whose entries fit in the message (two bytes
	// each at least), the shape of every map of Dynamo's types.
	if d.i < len(d.b) && d.b[d.i]&0xf0 == 0x80 {
		if n := int(d.b[d.i] & 0x0f); len(d.b)-d.i-1 >= 2*n {
			d.i++
			return n, nil
		}
	}
	return d.mapLen(field)
}

// key reads a key as a string; its errors name the map's field + " key".
func (d *mpDecoder) key(field string, n, i int) ([]byte, bool, error) {
	if i >= n {
		return nil, false, nil
	}
	// Fast path: a fixstr, the shape of every key of Dynamo's types.
	if d.i < len(d.b) && d.b[d.i]&0xe0 == 0xa0 {
		if end := d.i + 1 + int(d.b[d.i]&0x1f); end <= len(d.b) {
			k := d.b[d.i+1 : end]
			d.i = end
			return k, true, nil
		}
	}
	k, err := d.str("")
	if err != nil {
		// The path is built only for an error: keys are the hot path.
		if de := (*DecodeError)(nil); errors.As(err, &de) {
			de.Field = strings.TrimPrefix(field+" key", " ")
		}
		return nil, false, err
	}
	return k, true, nil
}

func (d *mpDecoder) enterArray(field string) (int, error) { return d.arrayLen(field) }

func (d *mpDecoder) elem(_ string, n, i int) (bool, error) { return i < n, nil }

// variant reads the data: a map of one entry keyed by the variant, or a
// bare variant (cleared). A variant is named by string or by serde's
// variant index (0 stored, 1 removed, 2 cleared), as rmp_serde accepts
// both.
func (d *mpDecoder) variant(field string) (indexer.Kind, bool, error) {
	if d.i >= len(d.b) {
		return 0, false, d.malformed(field, "unexpected end of input")
	}
	if c := d.b[d.i]; !isMapType(c) {
		if !isStrType(c) && !isIntType(c) {
			return 0, false, d.schema(field, "expected a map or a variant name, found "+d.found())
		}
		k, err := d.variantName(field)
		return k, false, err
	}
	n, err := d.mapLen(field)
	if err != nil {
		return 0, false, err
	}
	if n != 1 {
		return 0, false, d.schema(field, fmt.Sprintf("map of %d entries, expected exactly one variant", n))
	}
	k, err := d.variantName(field)
	return k, true, err
}

func (d *mpDecoder) variantName(field string) (indexer.Kind, error) {
	if d.i < len(d.b) && isIntType(d.b[d.i]) {
		v, err := d.integer(field, false)
		if err != nil {
			return 0, err
		}
		if v > 2 {
			return 0, d.schema(field, fmt.Sprintf("unknown variant index %d, expected 0 (stored), 1 (removed) or 2 (cleared)", v))
		}
		return indexer.KindStored + indexer.Kind(v), nil
	}
	s, err := d.str(field)
	if err != nil {
		return 0, err
	}
	return kindOf(d, field, s)
}

// unit reads the value of a tagged cleared: nil, or an empty array (a unit
// as a tuple).
func (d *mpDecoder) unit(field string) error {
	if d.null() {
		return nil
	}
	if d.i < len(d.b) && d.b[d.i] == 0x90 {
		d.i++
		return nil
	}
	return d.schema(field, "expected nil, found "+d.found())
}

// variantEnd has nothing to check: variant read a map of one entry.
func (d *mpDecoder) variantEnd(string) error { return nil }

func (d *mpDecoder) offset() int { return d.i }

func isArrayType(c byte) bool { return c&0xf0 == 0x90 || c == 0xdc || c == 0xdd }
func isMapType(c byte) bool   { return c&0xf0 == 0x80 || c == 0xde || c == 0xdf }
func isStrType(c byte) bool   { return c&0xe0 == 0xa0 || c == 0xd9 || c == 0xda || c == 0xdb }
func isIntType(c byte) bool {
	return c <= 0x7f || c >= 0xe0 || c >= 0xcc && c <= 0xcf || c >= 0xd0 && c <= 0xd3
}

// need reports whether n more bytes are there.
func (d *mpDecoder) need(n int) bool { return n >= 0 && len(d.b)-d.i >= n }

// length reads a big-endian length of size bytes after the type byte.
func (d *mpDecoder) length(size int, field string) (int, error) {
	if !d.need(1 + size) {
		return 0, d.malformed(field, "unexpected end of input")
	}
	p := d.b[d.i+1 : d.i+1+size]
	var n uint64
	switch size {
	case 1:
		n = uint64(p[0])
	case 2:
		n = uint64(binary.BigEndian.Uint16(p))
	case 4:
		n = uint64(binary.BigEndian.Uint32(p))
	}
	d.i += 1 + size
	if n > uint64(len(d.b)) {
		return 0, d.malformed(field, fmt.Sprintf("length %d is longer than the message", n))
	}
	return int(n), nil
}

// mapLen reads a map header. Each entry takes at least two bytes, so a count
// the rest of the message cannot hold is malformed, whatever it claims.
func (d *mpDecoder) mapLen(field string) (int, error) {
	return d.containerLen(field, 0x80, 0xde, 2, "a map", "map of %d entries")
}

// arrayLen reads an array header; each element takes at least a byte.
func (d *mpDecoder) arrayLen(field string) (int, error) {
	return d.containerLen(field, 0x90, 0xdc, 1, "an array", "array of %d elements")
}

// containerLen reads a map or array header: fix is its fixed-size code (the
// count in the low nibble), code16 its 16-bit code (code16+1 the 32-bit one),
// minBytes the least an item can take; what and sized name it in errors.
func (d *mpDecoder) containerLen(field string, fix, code16 byte, minBytes int, what, sized string) (int, error) {
	if d.i >= len(d.b) {
		return 0, d.malformed(field, "unexpected end of input")
	}
	var (
		n   int
		err error
	)
	switch c := d.b[d.i]; {
	case c&0xf0 == fix:
		n = int(c & 0x0f)
		d.i++
	case c == code16:
		n, err = d.length(2, field)
	case c == code16+1:
		n, err = d.length(4, field)
	default:
		return 0, d.schemaOr(field, "expected "+what+", found "+d.found())
	}
	if err != nil {
		return 0, err
	}
	if !d.need(minBytes * n) {
		return 0, d.malformed(field, fmt.Sprintf(sized, n)+" is longer than the message")
	}
	return n, nil
}

// str reads a string; the result aliases the input.
func (d *mpDecoder) str(field string) ([]byte, error) {
	if d.i >= len(d.b) {
		return nil, d.malformed(field, "unexpected end of input")
	}
	var (
		n   int
		err error
	)
	switch c := d.b[d.i]; {
	case c&0xe0 == 0xa0:
		n = int(c & 0x1f)
		d.i++
	case c == 0xd9:
		n, err = d.length(1, field)
	case c == 0xda:
		n, err = d.length(2, field)
	case c == 0xdb:
		n, err = d.length(4, field)
	default:
		return nil, d.schemaOr(field, "expected a string, found "+d.found())
	}
	if err != nil {
		return nil, err
	}
	if !d.need(n) {
		return nil, d.malformed(field, "string longer than the message")
	}
	s := d.b[d.i : d.i+n]
	d.i += n
	return s, nil
}

// bytes reads bin, str or an array of byte-sized integers. The result aliases
// the input for bin and str.
func (d *mpDecoder) bytes(field string) ([]byte, error) {
	if d.i >= len(d.b) {
		return nil, d.malformed(field, "unexpected end of input")
	}
	c := d.b[d.i]
	switch {
	case isStrType(c):
		return d.str(field)
	case isArrayType(c):
		n, err := d.arrayLen(field)
		if err != nil {
			return nil, err
		}
		out := make([]byte, 0, n)
		for range n {
			v, err := d.integer(field+"[]", false)
			if err != nil {
				return nil, err
			}
			if v > 255 {
				return nil, d.schema(field+"[]", fmt.Sprintf("%d is not a byte", v))
			}
			out = append(out, byte(v))
		}
		return out, nil
	}
	var (
		n   int
		err error
	)
	switch c {
	case 0xc4:
		n, err = d.length(1, field)
	case 0xc5:
		n, err = d.length(2, field)
	case 0xc6:
		n, err = d.length(4, field)
	default:
		return nil, d.schemaOr(field, "expected bin, found "+d.found())
	}
	if err != nil {
		return nil, err
	}
	if !d.need(n) {
		return nil, d.malformed(field, "bin longer than the message")
	}
	s := d.b[d.i : d.i+n]
	d.i += n
	return s, nil
}

// null consumes a nil if one comes next.
func (d *mpDecoder) null() bool {
	if d.i < len(d.b) && d.b[d.i] == 0xc0 {
		d.i++
		return true
	}
	return false
}

// integer reads any MessagePack integer that fits u64; with signed, also a
// negative one, whose i64 bits it returns.
func (d *mpDecoder) integer(field string, signed bool) (uint64, error) {
	if d.i >= len(d.b) {
		return 0, d.malformed(field, "unexpected end of input")
	}
	c := d.b[d.i]
	if c == 0xcf && len(d.b)-d.i >= 9 {
		// Fast path: a uint64, how rmp_serde writes every hash from 2⁶².
		d.i += 9
		return binary.BigEndian.Uint64(d.b[d.i-8 : d.i]), nil
	}
	var (
		v    uint64
		neg  bool
		size int
	)
	switch {
	case c <= 0x7f:
		d.i++
		return uint64(c), nil
	case c >= 0xe0:
		v, neg = uint64(int64(int8(c))), true
		size = 0
	case c >= 0xcc && c <= 0xcf:
		size = 1 << (c - 0xcc)
	case c >= 0xd0 && c <= 0xd3:
		size = 1 << (c - 0xd0)
	default:
		return 0, d.schemaOr(field, "expected an integer, found "+d.found())
	}
	if size > 0 {
		if !d.need(1 + size) {
			return 0, d.malformed(field, "unexpected end of input")
		}
		p := d.b[d.i+1 : d.i+1+size]
		unsigned := c <= 0xcf
		switch size {
		case 1:
			if unsigned {
				v = uint64(p[0])
			} else {
				v = uint64(int64(int8(p[0])))
			}
		case 2:
			if unsigned {
				v = uint64(binary.BigEndian.Uint16(p))
			} else {
				v = uint64(int64(int16(binary.BigEndian.Uint16(p))))
			}
		case 4:
			if unsigned {
				v = uint64(binary.BigEndian.Uint32(p))
			} else {
				v = uint64(int64(int32(binary.BigEndian.Uint32(p))))
			}
		case 8:
			v = binary.BigEndian.Uint64(p)
		}
		neg = !unsigned && int64(v) < 0
	}
	if neg && !signed {
		return 0, d.schema(field, fmt.Sprintf("expected an unsigned integer, found %d", int64(v)))
	}
	d.i += 1 + size
	return v, nil
}

// skipField skips the value of an unknown field; the field's path is built
// only for an error.
func (d *mpDecoder) skipField(prefix string, key []byte) error {
	err := d.skip("", 0)
	if err != nil {
		nameField(err, prefix, key)
	}
	return err
}

// skip skips one value, checking that it is well formed.
func (d *mpDecoder) skip(field string, depth int) error {
	if depth > maxDepth {
		return d.tooLarge(field, fmt.Sprintf("values nested deeper than %d levels", maxDepth))
	}
	if d.i >= len(d.b) {
		return d.malformed(field, "unexpected end of input")
	}
	c := d.b[d.i]
	switch {
	case c <= 0x7f || c >= 0xe0 || c == 0xc0 || c == 0xc2 || c == 0xc3:
		d.i++
		return nil
	case isIntType(c):
		_, err := d.integer(field, true)
		return err
	case c == 0xca:
		return d.fixed(field, 4)
	case c == 0xcb:
		return d.fixed(field, 8)
	case c >= 0xd4 && c <= 0xd8: // fixext: type byte and 1, 2, 4, 8 or 16 bytes
		return d.fixed(field, 1+1<<(c-0xd4))
	case c >= 0xc7 && c <= 0xc9: // ext 8, 16, 32: length, type byte, data
		n, err := d.length(1<<(c-0xc7), field)
		if err != nil {
			return err
		}
		if !d.need(1 + n) {
			return d.malformed(field, "ext longer than the message")
		}
		d.i += 1 + n
		return nil
	case isStrType(c):
		_, err := d.str(field)
		return err
	case c >= 0xc4 && c <= 0xc6:
		_, err := d.bytes(field)
		return err
	case isMapType(c):
		n, err := d.mapLen(field)
		if err != nil {
			return err
		}
		for range 2 * n {
			if err := d.skip(field, depth+1); err != nil {
				return err
			}
		}
		return nil
	case isArrayType(c):
		n, err := d.arrayLen(field)
		if err != nil {
			return err
		}
		for range n {
			if err := d.skip(field, depth+1); err != nil {
				return err
			}
		}
		return nil
	}
	return d.malformed(field, fmt.Sprintf("invalid type byte 0x%02x", c))
}

// fixed skips a type byte and n bytes of data.
func (d *mpDecoder) fixed(field string, n int) error {
	if !d.need(1 + n) {
		return d.malformed(field, "unexpected end of input")
	}
	d.i += 1 + n
	return nil
}

// found names the type that comes next, for error messages.
func (d *mpDecoder) found() string {
	if d.i >= len(d.b) {
		return "end of input"
	}
	switch c := d.b[d.i]; {
	case isMapType(c):
		return "a map"
	case isArrayType(c):
		return "an array"
	case isStrType(c):
		return "a string"
	case isIntType(c):
		return "an integer"
	case c == 0xc0:
		return "nil"
	case c == 0xc2 || c == 0xc3:
		return "a boolean"
	case c == 0xca || c == 0xcb:
		return "a float"
	case c >= 0xc4 && c <= 0xc6:
		return "bin"
	case c == 0xc1:
		return "the invalid type byte 0xc1"
	}
	return "ext"
}

// schemaOr is a schema error, or a malformed one where the type byte is not
// MessagePack at all.
func (d *mpDecoder) schemaOr(field, msg string) error {
	if d.i < len(d.b) && d.b[d.i] == 0xc1 {
		return d.malformed(field, "invalid type byte 0xc1")
	}
	return d.schema(field, msg)
}

func (d *mpDecoder) malformed(field, msg string) error {
	return &DecodeError{Field: field, Offset: d.i, Msg: msg, Err: ErrMalformedMsgpack}
}

func (d *mpDecoder) schema(field, msg string) error {
	return &DecodeError{Field: field, Offset: d.i, Msg: msg, Err: ErrSchema}
}

func (d *mpDecoder) tooLarge(field, msg string) error {
	return &DecodeError{Field: field, Offset: d.i, Msg: msg, Err: ErrTooLarge}
}
