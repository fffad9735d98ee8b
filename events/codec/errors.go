package codec

import (
	"errors"
	"fmt"

	"github.com/kvrouter/router/internal/jsonscan"
)

// Sentinels of decoding, one per reason a message is rejected. A
// *DecodeError wraps exactly one of them; test with errors.Is. Callers that
// count rejections count them by sentinel.
var (
	// ErrMalformedJSON: the message is not well-formed JSON.
	ErrMalformedJSON = errors.New("malformed json")
	// ErrMalformedMsgpack: the message is not well-formed MessagePack.
	ErrMalformedMsgpack = errors.New("malformed msgpack")
	// ErrSchema: well-formed, but not what the decoder reads (a RouterEvent,
	// an engine event batch): a required field is missing, a field has the
	// wrong type or is out of range, a variant is unknown.
	ErrSchema = errors.New("schema violation")
	// ErrTooLarge: the message or one of its lists is over the limits
	// (MaxMessageBytes, MaxBlocksPerEvent, MaxEventsPerBatch, maxDepth).
	ErrTooLarge = errors.New("too large")
	// ErrFrame: a ZMQ frame around a payload is not laid out as expected:
	// a sequence or id frame that is not 8 bytes, an event-plane frame
	// with another version byte or a length that disagrees with its size.
	// Counted as the zmq_frame reason.
	ErrFrame = errors.New("malformed zmq frame")
)

// DecodeError says why a message was rejected and where. Its sentinel Err
// is the reason: the events package maps it onto the reason label of
// dynamo_component_kv_event_decode_errors_total.
type DecodeError struct {
	// Field is the path of the offending field, e.g. "event.data.stored.blocks[3].block_hash";
	// empty when the message as a whole is at fault.
	Field string
	// Offset is the byte offset in the message where decoding stopped.
	Offset int
	// Msg says what was wrong.
	Msg string
	// Err is one of ErrMalformedJSON, ErrMalformedMsgpack, ErrSchema,
	// ErrTooLarge, ErrFrame.
	Err error
}

// Error says what was rejected, where and why, prefixed with the operation.
func (e *DecodeError) Error() string {
	if e.Field == "" {
		return fmt.Sprintf("decode kv event: %v at byte %d: %s", e.Err, e.Offset, e.Msg)
	}
	return fmt.Sprintf("decode kv event: %v: %s at byte %d: %s", e.Err, e.Field, e.Offset, e.Msg)
}

// Unwrap returns the sentinel.
func (e *DecodeError) Unwrap() error { return e.Err }

// fromScan turns an error of the JSON scanner into a *DecodeError: a
// syntax error is malformed JSON, a value of the wrong type or range is not
// a RouterEvent, a nesting past the limit is too large.
func fromScan(err error) error {
	se, ok := err.(*jsonscan.Error)
	if !ok {
		return err
	}
	de := &DecodeError{Field: se.Field, Offset: se.Offset, Msg: se.Msg, Err: ErrSchema}
	switch se.Kind {
	case jsonscan.Syntax:
		de.Err = ErrMalformedJSON
	case jsonscan.Limit:
		de.Err = ErrTooLarge
	}
	return de
}
