package events

import (
	"errors"

	"github.com/kvrouter/router/events/codec"
	"github.com/kvrouter/router/metrics"
)

// ErrQueueFull is returned when a shard's bounded queue has no room.
var ErrQueueFull = errors.New("event queue full")

// ReasonTooLarge is the reason label of dynamo_component_kv_event_decode_errors_total
// for messages over the size limits: metrics.DecodeTooLarge, named here too
// for the codec's tests.
const ReasonTooLarge = metrics.DecodeTooLarge

// Reason returns the reason label of dynamo_component_kv_event_decode_errors_total
// for an error of the codec's decoders (NATS's and ZMQ's alike): the codec
// names the reason by sentinel, and the labels are the metrics' business.
func Reason(err error) string {
	switch {
	case errors.Is(err, codec.ErrFrame):
		return metrics.DecodeZMQFrame
	case errors.Is(err, codec.ErrMalformedJSON):
		return metrics.DecodeJSON
	case errors.Is(err, codec.ErrMalformedMsgpack):
		return metrics.DecodeMsgpack
	case errors.Is(err, codec.ErrTooLarge):
		return ReasonTooLarge
	default:
		return metrics.DecodeSchema
	}
}
