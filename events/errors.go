package events

import (
	"errors"
	"fmt"

	"github.com/kvrouter/router/metrics"
)

// Sentinels of decoding, one per reason a message is rejected. A
// *DecodeError wraps exactly one of them; test with errors.Is.
var (
	// ErrMalformedJSON: the message is not well-formed JSON.
	ErrMalformedJSON = errors.New("malformed json")
	// ErrMalformedMsgpack: the message is not well-formed MessagePack.
	ErrMalformedMsgpack = errors.New("malformed msgpack")
	// ErrSchema: well-formed, but not a RouterEvent: a required field is
	// missing, a field has the wrong type or is out of range, a variant is
	// unknown.
	ErrSchema = errors.New("not a router event")
	// ErrTooLarge: the message or one of its lists is over the limits
	// (MaxMessageBytes, MaxBlocksPerEvent, maxDepth).
	ErrTooLarge = errors.New("too large")
)

// ErrQueueFull is returned when a shard's bounded queue has no room.
var ErrQueueFull = errors.New("event queue full")

// ReasonTooLarge is the reason label of dynamo_component_kv_event_decode_errors_total
// for messages over the size limits (ours; metrics/names.go lacks it).
const ReasonTooLarge = "too_large"

// Reasons of dynamo_component_kv_events_dropped_total this package adds to
// those of metrics/names.go.
const (
	// DropStorageTier: a well-formed event for a cache tier other than the
	// device (GPU) cache, or for a residency domain other than the worker's;
	// the device index does not hold it, so it never counts as a device hit.
	DropStorageTier = "storage_tier"
	// DropDuplicate: a JetStream message delivered again after it was
	// applied (durable mode).
	DropDuplicate = "duplicate"
)

// DecodeError says why a message was rejected, where, and with which label
// value it is counted.
type DecodeError struct {
	// Field is the path of the offending field, e.g. "event.data.stored.blocks[3].block_hash";
	// empty when the message as a whole is at fault.
	Field string
	// Offset is the byte offset in the message where decoding stopped.
	Offset int
	// Msg says what was wrong.
	Msg string
	// Err is one of ErrMalformedJSON, ErrMalformedMsgpack, ErrSchema,
	// ErrTooLarge.
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

// Reason returns the reason label value of
// dynamo_component_kv_event_decode_errors_total.
func (e *DecodeError) Reason() string { return reasonOf(e.Err) }

func reasonOf(err error) string {
	switch {
	case errors.Is(err, ErrMalformedJSON):
		return metrics.DecodeJSON
	case errors.Is(err, ErrMalformedMsgpack):
		return metrics.DecodeMsgpack
	case errors.Is(err, ErrTooLarge):
		return ReasonTooLarge
	default:
		return metrics.DecodeSchema
	}
}
