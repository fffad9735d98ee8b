package zmqevents

import (
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/kvrouter/router/events"
	"github.com/kvrouter/router/events/codec"
	"github.com/kvrouter/router/indexer"
	"github.com/kvrouter/router/metrics"
)

// decoder turns one connection's messages into index events and delivers
// them. It belongs to the connection's goroutine.
type decoder struct {
	s    *Source
	c    *conn
	conv *codec.EngineConverter
	buf  codec.EngineBatch

	lastWarn, suppressed atomic.Int64
	epoch                time.Time
}

func newDecoder(s *Source, c *conn) decoder {
	// Config.Validate checked the block size, the converter's one
	// condition.
	conv, _ := codec.NewEngineConverter(s.cfg.BlockSize)
	return decoder{s: s, c: c, conv: conv, epoch: time.Now()}
}

// batch decodes one engine batch and submits its events with seq as their
// event_id. A batch that cannot be decoded is lost: its rank is cleared, as
// for a gap.
func (d *decoder) batch(seq uint64, payload []byte) {
	rank := d.c.rank()
	if err := codec.DecodeEngineBatch(payload, &d.buf); err != nil {
		d.rejected(err)
		d.s.sink.ClearRank(rank)
		return
	}
	for i := range d.buf.Events {
		in := &d.buf.Events[i]
		var ev indexer.Event // queued: a new one each time
		apply, o := d.conv.Convert(in, rank, &ev)
		switch {
		case o == codec.OutcomeBlockSize:
			d.c.setMismatch(in.BlockSize)
		case apply && ev.Kind == indexer.KindStored && !ev.ByHash:
			d.c.setMismatch(0)
		}
		if o != codec.OutcomeOK {
			d.s.m.Skipped.WithLabelValues(o.String()).Inc()
		}
		if apply {
			// An engine's batch sequence numbers every tier's events;
			// SubmitWait fails only when the connection stops.
			_ = d.s.sink.SubmitWait(d.c.ctx, ev, seq, events.NumberedTogether)
		}
	}
}

// plane handles one message of Dynamo's event plane: [topic,
// publisher_id, sequence, frame]. Its RouterEvent carries its own worker,
// rank and event_id, which the writer checks as for NATS.
func (d *decoder) plane(frames [][]byte) {
	if len(frames) != 4 || len(frames[1]) != 8 || len(frames[2]) != 8 {
		d.badFrames("want 4 frames: topic, 8-byte publisher id, 8-byte sequence, envelope")
		return
	}
	env, err := codec.DecodeEventPlaneFrame(frames[3])
	if err != nil {
		d.rejected(err)
		return
	}
	ev, meta, err := codec.Decode(env)
	if err != nil {
		d.rejected(err)
		return
	}
	if meta.CacheOwner {
		d.s.m.Events.Dropped.WithLabelValues(metrics.DropStorageTier).Inc()
		return
	}
	_ = d.s.sink.SubmitWait(d.c.ctx, ev, meta.EventID, events.NumberedByTier)
}

// rejected counts a message the decoders refused, by reason.
func (d *decoder) rejected(err error) {
	reason := events.Reason(err)
	d.s.m.Events.DecodeErrors.WithLabelValues(reason).Inc()
	d.warn("zmq events: message rejected", slog.String("publisher", d.c.ep.String()), slog.String("reason", reason), slog.Any("error", err))
}

// badFrames counts a message whose frames are not the format's.
func (d *decoder) badFrames(msg string) {
	d.s.m.Events.DecodeErrors.WithLabelValues(metrics.DecodeZMQFrame).Inc()
	d.warn("zmq events: message rejected", slog.String("publisher", d.c.ep.String()), slog.String("reason", metrics.DecodeZMQFrame), slog.String("error", msg))
}

// warn logs at most one warning a second, with the number kept quiet.
func (d *decoder) warn(msg string, attrs ...slog.Attr) {
	events.WarnLimited(d.s.log, &d.lastWarn, &d.suppressed, int64(time.Since(d.epoch)), msg, attrs...)
}
