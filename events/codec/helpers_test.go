package codec

import (
	"errors"
	"testing"

	"github.com/kvrouter/router/indexer"
	"github.com/kvrouter/router/internal/testutil"
	"github.com/kvrouter/router/metrics"
)

// reasonOf is the decode-error label the events package counts err under.
func reasonOf(err error) string {
	switch {
	case errors.Is(err, ErrMalformedJSON):
		return metrics.DecodeJSON
	case errors.Is(err, ErrMalformedMsgpack):
		return metrics.DecodeMsgpack
	case errors.Is(err, ErrTooLarge):
		return reasonTooLarge
	case errors.Is(err, ErrFrame):
		return metrics.DecodeZMQFrame
	}
	return metrics.DecodeSchema
}

// reasonTooLarge is events.ReasonTooLarge (events imports this package).
const reasonTooLarge = "too_large"

// jsonEvent encodes an event as JSON.
func jsonEvent(ev indexer.Event, id uint64) []byte { return AppendJSON(nil, ev, Meta{EventID: id}) }

// mpPayload encodes ev as a MessagePack RouterEvent.
func mpPayload(t testing.TB, ev indexer.Event, meta Meta, compact bool) []byte {
	return testutil.MsgpackRouterEvent(t, ev, meta.EventID, meta.StorageTier.String(), meta.CacheOwner, compact)
}

// mpEnvelopeOf wraps a payload in Dynamo's event-plane envelope.
func mpEnvelopeOf(t testing.TB, payload []byte, seq uint64, compact bool) []byte {
	return testutil.MsgpackEnvelope(t, payload, seq, compact)
}

// msgpackEvent encodes an event as Dynamo's MessagePack envelope.
func msgpackEvent(t testing.TB, ev indexer.Event, id uint64) []byte {
	return mpEnvelopeOf(t, mpPayload(t, ev, Meta{EventID: id}, true), id, true)
}
