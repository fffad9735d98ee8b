package codec

import (
	"errors"
	"fmt"

	"github.com/kvrouter/router/indexer"
	"github.com/kvrouter/router/internal/jsonscan"
)

// DecodeJSON decodes a RouterEvent in Dynamo's JSON encoding (serde's names,
// docs/compat.md §3.2):
//
//	{"worker_id": 7, "storage_tier": "device",
//	 "event": {"event_id": 12, "dp_rank": 0,
//	           "data": {"stored": {"parent_hash": null, "blocks": [{"block_hash": 100, "tokens_hash": 5}]}}}}
//
// The schema and its rules are in schema.go. Specific to JSON: data is
// externally tagged ({"stored": ...}, {"removed": ...}, the bare string
// "cleared" or {"cleared": null}); numbers with a fraction or an exponent
// are not integers and are rejected; strings are not checked for valid
// UTF-8 (serde skips unknown values unchecked, and known ones are matched
// against ASCII names). The message is rejected whole if it is over
// MaxMessageBytes, a list over MaxBlocksPerEvent or a skipped value nested
// deeper than 64 levels.
//
// It never panics, whatever the input; the event does not alias msg.
func DecodeJSON(msg []byte) (indexer.Event, Meta, error) {
	if err := checkSize(msg); err != nil {
		return indexer.Event{}, Meta{}, err
	}
	r := &jsonReader{s: jsonscan.New(msg)}
	ev, meta, err := readEvent(r)
	if err == nil {
		err = fromScan(r.s.End("the event"))
	}
	if err != nil {
		return indexer.Event{}, Meta{}, classifyJSON(msg, err)
	}
	meta.Encoding = EncodingJSON
	return ev, meta, nil
}

// classifyJSON replaces a schema error by the syntax error of the message
// when it is not well-formed JSON at all: the decoder stops at the first
// problem it meets, which may be a wrong type before a syntax error further
// on.
func classifyJSON(msg []byte, err error) error {
	if errors.Is(err, ErrSchema) {
		if serr := jsonscan.CheckSyntax(msg); serr != nil {
			return fromScan(serr)
		}
	}
	return err
}

// jsonReader reads the schema from JSON through the shared scanner.
type jsonReader struct {
	s jsonscan.Scanner
}

var _ reader = (*jsonReader)(nil)

func (r *jsonReader) enterMap(field, what string) (int, error) {
	if err := r.s.Object(field, what); err != nil {
		return 0, fromScan(err)
	}
	return -1, nil
}

func (r *jsonReader) key(field string, _, i int) ([]byte, bool, error) {
	k, ok, err := r.s.Key(field, i == 0)
	if err != nil {
		return nil, false, fromScan(err)
	}
	return k, ok, nil
}

func (r *jsonReader) enterArray(field string) (int, error) {
	if err := r.s.Array(field, "an array"); err != nil {
		return 0, fromScan(err)
	}
	return -1, nil
}

func (r *jsonReader) elem(field string, _, i int) (bool, error) {
	more, err := r.s.Elem(field, i == 0)
	if err != nil {
		return false, fromScan(err)
	}
	return more, nil
}

func (r *jsonReader) integer(field string, signed bool) (uint64, error) {
	v, err := r.s.Int(field, signed)
	if err != nil {
		return 0, fromScan(err)
	}
	return v, nil
}

func (r *jsonReader) null() bool { return r.s.Null() }

func (r *jsonReader) str(field string) ([]byte, error) {
	b, err := r.s.Bytes(field)
	if err != nil {
		return nil, fromScan(err)
	}
	return b, nil
}

func (r *jsonReader) skipField(prefix string, key []byte) error {
	if err := r.s.Skip(""); err != nil {
		err = fromScan(err)
		nameField(err, prefix, key)
		return err
	}
	return nil
}

// variant reads {"stored": ...}, {"removed": ...}, {"cleared": null} up to
// the value, or a bare "cleared".
func (r *jsonReader) variant(field string) (indexer.Kind, bool, error) {
	if r.s.Peek() == '"' {
		name, err := r.str(field)
		if err != nil {
			return 0, false, err
		}
		k, err := kindOf(r, field, name)
		return k, false, err
	}
	if err := r.s.Object(field, `an object or "cleared"`); err != nil {
		return 0, false, fromScan(err)
	}
	name, ok, err := r.key(field, -1, 0)
	if err != nil {
		return 0, false, err
	}
	if !ok {
		return 0, false, schema(r, field, "empty object, expected one variant")
	}
	k, err := kindOf(r, field, name)
	return k, true, err
}

func (r *jsonReader) unit(field string) error {
	if !r.s.Null() {
		return schema(r, field, "expected null")
	}
	return nil
}

func (r *jsonReader) variantEnd(field string) error {
	if _, more, err := r.key(field, -1, 1); err != nil {
		return err
	} else if more {
		return schema(r, field, "more than one variant")
	}
	return nil
}

func (r *jsonReader) offset() int { return r.s.Offset() }

// DecodeJSONList decodes a JSON array of RouterEvents, each as DecodeJSON
// reads it, of every storage tier: the durable mode's snapshots, which
// AppendJSON writes. It has no size limit (a snapshot holds a whole
// index); a rejected event names its position in the list.
func DecodeJSONList(msg []byte) ([]indexer.Event, []Meta, error) {
	const field = "list"
	r := &jsonReader{s: jsonscan.New(msg)}
	if err := r.s.Array(field, "a list of RouterEvents"); err != nil {
		return nil, nil, fromScan(err)
	}
	var (
		evs   []indexer.Event
		metas []Meta
	)
	for i := 0; ; i++ {
		more, err := r.elem(field, -1, i)
		if err != nil {
			return nil, nil, err
		}
		if !more {
			break
		}
		ev, meta, err := readEvent(r)
		if err != nil {
			return nil, nil, fmt.Errorf("event %d of the list: %w", i, err)
		}
		meta.Encoding = EncodingJSON
		evs = append(evs, ev)
		metas = append(metas, meta)
	}
	if err := r.s.End("the list"); err != nil {
		return nil, nil, fromScan(err)
	}
	return evs, metas, nil
}
