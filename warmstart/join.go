package warmstart

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/kvrouter/router/metrics"
)

// Index is what a warm start fills: events.Writer, holding the live events
// since before the KV-event subscriptions started. Join calls it from one
// goroutine.
type Index interface {
	// LoadSnapshot decodes a snapshot whole and, only if it decodes,
	// submits its events ahead of the held ones; it returns how many.
	LoadSnapshot(ctx context.Context, data []byte) (int, error)
	// Release applies the held events after whatever was loaded and ends
	// the hold; it returns how many it released.
	Release(ctx context.Context) (int, error)
}

// Result is how one warm start went.
type Result struct {
	// Result is the result label: metrics.WarmStartLoaded, ...
	Result string
	// Events and Bytes are what was loaded; Chunks the messages it came in;
	// Peer the serving router's id.
	Events, Bytes, Chunks int
	Peer                  string
	// Held is the number of live events held meanwhile and released.
	Held int
	// Duration runs from the request to the release.
	Duration time.Duration
	// Err says why nothing was loaded (nil when loaded or disabled).
	Err error
}

// Joiner runs a joining router's warm start.
type Joiner struct {
	cfg Config
	nc  *nats.Conn
	m   *Metrics
	log *slog.Logger
}

// NewJoiner returns the warm start of a router on nc, counting in m's
// families (NewMetrics). It starts nothing.
func NewJoiner(cfg Config, nc *nats.Conn, m *metrics.Router, log *slog.Logger) (*Joiner, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("warm start: %w", err)
	}
	if nc == nil || m == nil {
		return nil, errors.New("warm start: nil NATS connection or metrics")
	}
	wm, err := NewMetrics(m)
	if err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Joiner{cfg: cfg, nc: nc, m: wm, log: log}, nil
}

// Join fetches a peer's snapshot within Config.Timeout, loads it into idx
// and releases the events idx held meanwhile. Without a peer, or after any
// failure (logged once, as a warning), it releases the held events onto the
// index as it is: the router starts from the live events alone. It records
// the result in the warm-start families and returns it; the error is not
// nil only when ctx ended first (shutting down), and then nothing is
// recorded. With Config.Timeout 0 (warm start off) call Disabled instead.
func (j *Joiner) Join(ctx context.Context, idx Index) (Result, error) {
	start := time.Now()
	var res Result
	fctx, cancel := context.WithTimeout(ctx, j.cfg.Timeout)
	snap, err := Fetch(fctx, j.nc, j.cfg)
	cancel()
	if err == nil {
		res.Bytes, res.Chunks, res.Peer = len(snap.Data), snap.Chunks, snap.Peer
		res.Events, err = idx.LoadSnapshot(ctx, snap.Data)
		if err != nil && ctx.Err() == nil {
			// Nothing was submitted: LoadSnapshot decodes first.
			res.Events = 0
			err = fmt.Errorf("peer %s's snapshot: %w", snap.Peer, err)
		}
	}
	if ctx.Err() != nil {
		return res, ctx.Err()
	}
	switch {
	case err == nil:
		res.Result = metrics.WarmStartLoaded
	case errors.Is(err, ErrNoPeer):
		res.Result = metrics.WarmStartNoPeer
	case errors.Is(err, ErrTimeout):
		res.Result = metrics.WarmStartTimeout
	default:
		res.Result = metrics.WarmStartFailed
	}
	res.Err = err
	held, rerr := idx.Release(ctx)
	if rerr != nil {
		return res, rerr // only when ctx ended
	}
	res.Held = held
	res.Duration = time.Since(start)
	j.record(res)
	return res, nil
}

// Disabled records a start without a warm start.
func (j *Joiner) Disabled() { j.m.Total.WithLabelValues(metrics.WarmStartDisabled).Inc() }

// record counts and logs a result.
func (j *Joiner) record(res Result) {
	j.m.Total.WithLabelValues(res.Result).Inc()
	j.m.Events.Set(float64(res.Events))
	j.m.Seconds.Set(res.Duration.Seconds())
	switch res.Result {
	case metrics.WarmStartLoaded:
		j.log.Info("warm start: index loaded from a peer", slog.Int("events", res.Events), slog.Int("bytes", res.Bytes),
			slog.Int("chunks", res.Chunks), slog.String("peer_router_id", res.Peer), slog.Int("held_events", res.Held),
			slog.Duration("duration", res.Duration))
	case metrics.WarmStartNoPeer:
		j.log.Info("warm start: no peer serves index snapshots; starting from the live events alone",
			slog.String("subject", Subject(j.cfg.Namespace, j.cfg.Component)), slog.Int("held_events", res.Held))
	default:
		j.log.Warn("warm start failed; starting from the live events alone: stored events under prefixes stored before this start are rejected until the workers store them again",
			slog.String("result", res.Result), slog.Any("error", res.Err), slog.Int("held_events", res.Held),
			slog.Duration("duration", res.Duration))
	}
}
