package zmqevents

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"sync"
	"time"

	"github.com/go-zeromq/zmq4"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/kvrouter/router/indexer"
	"github.com/kvrouter/router/metrics"
)

// endOfReplay is the sequence frame of a replay's end marker (-1 as a signed
// 64-bit integer).
const endOfReplay = ^uint64(0)

// Bounds of one replay: a gap wider than maxReplayBatches (ten times what
// vLLM keeps by default) is not asked for, and a replay stops keeping
// batches past maxReplayBytes; either way the rest of the gap clears the
// rank.
const (
	maxReplayBatches = 100_000
	maxReplayBytes   = 256 << 20
)

// conn is the router's subscription to one publisher: a goroutine that
// dials, reads and delivers until its context ends, dialling again with
// backoff when the publisher is unreachable or goes away.
type conn struct {
	s      *Source
	ep     Endpoint
	ctx    context.Context
	cancel context.CancelFunc
	dec    decoder
	// messages counts this publisher's messages (its engine's series).
	messages prometheus.Counter

	mu        sync.Mutex
	connected bool
	lastErr   string
	mismatch  int
	delivered uint64 // batches delivered, for Status
	lastSeq   uint64

	// The sequence of the last batch delivered (engines; the run
	// goroutine's alone).
	haveSeq bool
	last    uint64
	// caughtUp, while catchingUp, is the last batch the catch-up replay of
	// this connection delivered and replayFrom its first: live batches
	// from replayFrom to caughtUp are the same batches, published while the
	// replay ran, and are skipped as duplicates. Live batches below
	// replayFrom had left the replay buffer by then: they are lost, and
	// older than batches already applied, so they are skipped and counted
	// as missed.
	caughtUp, replayFrom uint64
	catchingUp           bool
	warnedLost           bool // one such lost batch was logged in this catch-up
	duplicates           prometheus.Counter
}

func newConn(s *Source, ep Endpoint) *conn {
	ctx, cancel := context.WithCancel(s.ctx)
	c := &conn{s: s, ep: ep, ctx: ctx, cancel: cancel, messages: s.m.Messages.WithLabelValues(ep.Engine.String()),
		duplicates: s.m.Events.Dropped.WithLabelValues(metrics.DropDuplicate)}
	c.dec = newDecoder(s, c)
	return c
}

// quiet is the logger handed to zmq4, which would otherwise write to
// stderr: the connection logs what matters itself.
var quiet = log.New(io.Discard, "", 0)

// run dials and reads until the connection's context ends.
func (c *conn) run() {
	m := c.s.m
	m.Publishers.WithLabelValues(metrics.ZMQConnecting).Inc()
	defer func() {
		c.mu.Lock()
		state := metrics.ZMQConnecting
		if c.connected {
			state = metrics.ZMQConnected
		}
		c.mu.Unlock()
		m.Publishers.WithLabelValues(state).Dec()
	}()
	c.s.log.Info("zmq events: subscribing", slog.String("publisher", c.ep.String()), slog.String("topic", c.ep.Topic))
	backoff := c.s.cfg.ReconnectMin
	for {
		start := time.Now()
		was, err := c.session()
		if c.ctx.Err() != nil {
			return
		}
		c.setDown(err)
		if was {
			m.Reconnects.Inc()
			c.lost()
			c.s.log.Warn("zmq events: publisher connection lost; its rank is cleared, dialling again", slog.String("publisher", c.ep.String()), slog.Any("error", err))
			if time.Since(start) > c.s.cfg.ReconnectMax {
				backoff = c.s.cfg.ReconnectMin
			}
		} else {
			c.s.log.Debug("zmq events: publisher not reachable", slog.String("publisher", c.ep.String()), slog.Any("error", err),
				slog.Duration("retry_in", backoff))
		}
		t := time.NewTimer(backoff)
		select {
		case <-c.ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		backoff = min(2*backoff, c.s.cfg.ReconnectMax)
	}
}

// session dials the publisher and delivers its messages until the
// connection fails or the context ends. It reports whether it connected.
func (c *conn) session() (bool, error) {
	sub := zmq4.NewSub(c.ctx, zmq4.WithDialerMaxRetries(0), zmq4.WithDialerTimeout(c.s.cfg.DialTimeout), zmq4.WithLogger(quiet))
	defer sub.Close()
	if err := sub.Dial(dialAddr(c.ep.Addr)); err != nil {
		return false, dialError(err)
	}
	if err := sub.SetOption(zmq4.OptionSubscribe, c.ep.Topic); err != nil {
		return false, fmt.Errorf("subscribe: %w", err)
	}
	c.setUp()
	c.catchUp()
	for {
		msg, err := sub.Recv()
		if err != nil {
			return true, err
		}
		c.messages.Inc()
		if c.ep.Engine == EngineDynamo {
			c.dec.plane(msg.Frames)
			continue
		}
		c.live(msg.Frames)
	}
}

// catchUp asks a new connection's replay socket for every batch it keeps
// and applies them, so that the rank holds what the engine stored before
// the router connected (or while it was away: lost cleared the rank) even
// if the engine publishes nothing more for a while. Live batches that the
// replay already delivered are skipped (live, catchingUp).
func (c *conn) catchUp() {
	if c.ep.Engine == EngineDynamo || c.ep.Replay == "" || c.haveSeq {
		return
	}
	got, err := c.fetch(0, endOfReplay)
	if err != nil {
		c.s.log.Warn("zmq events: catch-up replay failed; the rank fills from the live batches", slog.String("publisher", c.ep.String()),
			slog.String("replay", c.ep.Replay), slog.Any("error", err))
	}
	got = contiguousTail(got, nextSeq(got))
	if len(got) == 0 {
		return
	}
	c.deliverAll(got)
	c.replayFrom, c.caughtUp, c.catchingUp, c.warnedLost = got[0].seq, c.last, true, false
}

// nextSeq is the sequence after the last batch of got (0 for none).
func nextSeq(got []replayed) uint64 {
	if len(got) == 0 {
		return 0
	}
	return got[len(got)-1].seq + 1
}

// lost forgets an engine's sequence and clears its rank after the
// connection dropped: whether the engine restarted meanwhile cannot be told
// from the sequence (a restarted engine may already have published past
// the last one seen), so the rank starts again from what the engine's replay
// socket still holds. Dynamo's event plane carries event_ids the writer
// checks itself.
func (c *conn) lost() {
	if c.ep.Engine == EngineDynamo {
		return
	}
	c.haveSeq, c.catchingUp = false, false
	c.s.sink.ClearRank(c.rank())
}

// live handles one message of an engine's live stream: it checks the
// sequence, heals a gap through the replay socket, and delivers.
func (c *conn) live(frames [][]byte) {
	if len(frames) != 3 || len(frames[1]) != 8 {
		c.dec.badFrames(fmt.Sprintf("%d frames, want topic, 8-byte sequence, payload", len(frames)))
		return
	}
	seq := binary.BigEndian.Uint64(frames[1])
	if c.catchingUp {
		switch {
		case seq < c.replayFrom:
			c.s.m.Events.Missed.Inc()
			if !c.warnedLost {
				c.warnedLost = true
				c.s.log.Warn("zmq events: batches published while the catch-up ran had left the replay buffer; they are lost (counted as missed)",
					slog.String("publisher", c.ep.String()), slog.Uint64("seq", seq), slog.Uint64("replay_from_seq", c.replayFrom))
			}
			return
		case seq <= c.caughtUp:
			c.duplicates.Inc()
			return
		}
		c.catchingUp = false
	}
	switch {
	case !c.haveSeq && seq > 0 && seq <= maxReplayBatches && c.ep.Replay != "":
		// Joined mid-stream: what the publisher still buffers fills in
		// the blocks stored before. Nothing is known of the rank yet, so
		// nothing needs clearing whatever the replay holds.
		got, _ := c.fetch(0, seq)
		c.deliverAll(contiguousTail(got, seq))
	case !c.haveSeq:
	case seq == c.last+1:
	case seq <= c.last:
		// The engine restarted: its sequence starts again at 0, and its
		// cache is empty.
		c.s.m.Restarts.Inc()
		c.s.log.Warn("zmq events: publisher sequence went back: engine restarted; its rank is cleared",
			slog.String("publisher", c.ep.String()), slog.Uint64("last_seq", c.last), slog.Uint64("seq", seq))
		c.s.sink.ClearRank(c.rank())
	default:
		c.gap(seq)
	}
	c.deliver(seq, frames[2])
}

// gap heals the batches between the last one delivered and seq through the
// replay socket. When it cannot get all of them (no replay socket, a gap
// too wide, a failed replay, or one that no longer holds them) the rank is
// cleared, the batches lost are counted as missed, and only the replayed
// batches after the last one missing are applied.
func (c *conn) gap(seq uint64) {
	from := c.last + 1
	var (
		got []replayed
		err error
	)
	if c.ep.Replay != "" && seq-from <= maxReplayBatches {
		got, err = c.fetch(from, seq)
	}
	if err == nil && uint64(len(got)) == seq-from {
		// fetch keeps batches in strictly increasing order within
		// [from, seq): as many as the gap means all of them.
		c.s.m.Gaps.WithLabelValues(metrics.GapReplayed).Inc()
		c.deliverAll(got)
		return
	}
	tail := contiguousTail(got, seq)
	missed := seq - from - uint64(len(tail))
	c.s.m.Gaps.WithLabelValues(metrics.GapCleared).Inc()
	c.s.m.Events.Missed.Add(float64(missed))
	attrs := []slog.Attr{slog.String("publisher", c.ep.String()), slog.Uint64("from_seq", from), slog.Uint64("to_seq", seq-1),
		slog.Uint64("missed", missed), slog.Bool("replay_socket", c.ep.Replay != "")}
	if err != nil {
		attrs = append(attrs, slog.Any("replay_error", err))
	}
	c.s.log.LogAttrs(c.ctx, slog.LevelWarn, "zmq events: batches lost and not replayed; the rank is cleared", attrs...)
	c.s.sink.ClearRank(c.rank())
	c.deliverAll(tail)
}

// contiguousTail returns the batches of got that run without a hole up to
// seq-1: those that can be applied after what came before them was lost.
func contiguousTail(got []replayed, seq uint64) []replayed {
	i := len(got)
	for i > 0 && got[i-1].seq == seq-uint64(len(got)-i)-1 {
		i--
	}
	return got[i:]
}

func (c *conn) deliverAll(bs []replayed) {
	for _, b := range bs {
		c.deliver(b.seq, b.payload)
	}
}

type replayed struct {
	seq     uint64
	payload []byte
}

// fetch requests the batches from seq from on and returns those below to, in
// order, stopping at the replay's end marker, at to, or after ReplayTimeout.
//
// A request that hears nothing back within a fifth of ReplayTimeout is sent
// once more, on a new socket, for the rest of the time: a request sent at
// the moment the replay socket accepts the connection was seen to go
// unanswered now and then, against zmq4's ROUTER, and the catch-up of a new
// connection would then wait the whole timeout for nothing. Replies to the
// first request, should they come late, go to its closed socket. A request
// that is being answered has the whole of ReplayTimeout for its answer.
func (c *conn) fetch(from, to uint64) ([]replayed, error) {
	limit, start := c.s.cfg.ReplayTimeout, time.Now()
	out, heard, err := c.fetchWithin(from, to, limit/5, limit)
	if err == nil || heard || c.ctx.Err() != nil {
		return out, err
	}
	rest := limit - time.Since(start)
	out, _, err = c.fetchWithin(from, to, rest, rest)
	return out, err
}

// fetchWithin is one replay request: it gives up if no reply comes within
// first, or no end of the replay within limit. heard reports whether any
// reply came back.
func (c *conn) fetchWithin(from, to uint64, first, limit time.Duration) (out []replayed, heard bool, err error) {
	began := time.Now()
	ctx, cancel := context.WithCancel(c.ctx)
	defer cancel()
	timer := time.AfterFunc(first, cancel)
	defer timer.Stop()
	d := zmq4.NewDealer(ctx, zmq4.WithDialerMaxRetries(0), zmq4.WithDialerTimeout(c.s.cfg.DialTimeout), zmq4.WithLogger(quiet))
	defer d.Close()
	if err := d.Dial(dialAddr(c.ep.Replay)); err != nil {
		return nil, false, dialError(err)
	}
	var start [8]byte
	binary.BigEndian.PutUint64(start[:], from)
	if err := d.SendMulti(zmq4.NewMsgFrom([]byte{}, start[:])); err != nil {
		return nil, false, fmt.Errorf("send replay request: %w", err)
	}
	next, size := from, 0
	for {
		msg, err := d.Recv()
		if err != nil {
			switch {
			case ctx.Err() == nil || c.ctx.Err() != nil:
			case heard:
				err = fmt.Errorf("no end of replay within %v", limit)
			default:
				err = fmt.Errorf("no reply to the replay request within %v", first)
			}
			return out, heard, err
		}
		if !heard && timer.Stop() {
			// Answered: the rest of limit for the rest of the answer.
			timer.Reset(limit - time.Since(began))
		}
		heard = true
		seq, payload, end, err := replayFrames(msg.Frames)
		if err != nil {
			c.dec.badFrames(err.Error())
			return out, heard, err
		}
		if end {
			return out, heard, nil
		}
		switch {
		case seq >= to:
			return out, heard, nil // the live stream has it
		case seq < next:
			continue // not asked for, or repeated
		}
		c.s.m.Replayed.Inc()
		c.messages.Inc()
		if size += len(payload); size > maxReplayBytes || len(out) == maxReplayBatches {
			return out, heard, fmt.Errorf("replay over %d bytes or %d batches", maxReplayBytes, maxReplayBatches)
		}
		out = append(out, replayed{seq: seq, payload: payload})
		next = seq + 1
	}
}

// dialError is the cause of zmq4's dial error ("dial tcp 10.0.0.5:5557:
// connect: connection refused"), without zmq4's wording, which names the
// router's internal transport.
func dialError(err error) error {
	if cause := errors.Unwrap(err); cause != nil {
		return cause
	}
	return err
}

// replayFrames reads one reply of a replay socket, as a DEALER sees it:
// ["", topic, seq, payload] (vLLM since mid-2026) or ["", seq, payload]
// (older vLLM, SGLang). The end marker has the sequence 2^64-1 or an empty
// payload.
func replayFrames(frames [][]byte) (seq uint64, payload []byte, end bool, err error) {
	if len(frames) > 0 && len(frames[0]) == 0 {
		frames = frames[1:]
	}
	switch len(frames) {
	case 3:
		frames = frames[1:] // the topic
	case 2:
	default:
		return 0, nil, false, fmt.Errorf("replay reply of %d frames, want [topic,] seq, payload", len(frames))
	}
	if len(frames[0]) != 8 {
		return 0, nil, false, fmt.Errorf("replay reply sequence of %d bytes, want 8", len(frames[0]))
	}
	seq = binary.BigEndian.Uint64(frames[0])
	if seq == endOfReplay || len(frames[1]) == 0 {
		return seq, nil, true, nil
	}
	return seq, frames[1], false, nil
}

// deliver decodes one batch and submits its events with seq as their
// event_id.
func (c *conn) deliver(seq uint64, payload []byte) {
	c.haveSeq, c.last = true, seq
	c.dec.batch(seq, payload)
	c.mu.Lock()
	c.delivered++
	c.lastSeq = seq
	c.mu.Unlock()
}

func (c *conn) setUp() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.connected {
		c.s.m.Publishers.WithLabelValues(metrics.ZMQConnecting).Dec()
		c.s.m.Publishers.WithLabelValues(metrics.ZMQConnected).Inc()
	}
	c.connected, c.lastErr = true, ""
	c.s.log.Info("zmq events: connected", slog.String("publisher", c.ep.String()))
}

func (c *conn) setDown(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.connected {
		c.s.m.Publishers.WithLabelValues(metrics.ZMQConnected).Dec()
		c.s.m.Publishers.WithLabelValues(metrics.ZMQConnecting).Inc()
	}
	c.connected = false
	if err == nil {
		err = errors.New("closed")
	}
	c.lastErr = err.Error()
}

func (c *conn) setMismatch(blockSize int) {
	c.mu.Lock()
	c.mismatch = blockSize
	c.mu.Unlock()
}

func (c *conn) status() PublisherStatus {
	c.mu.Lock()
	defer c.mu.Unlock()
	return PublisherStatus{Endpoint: c.ep, Connected: c.connected, LastError: c.lastErr, Mismatch: c.mismatch,
		Delivered: c.delivered, LastSeq: c.lastSeq}
}

// rank is the rank an engine publisher's events are about.
func (c *conn) rank() indexer.Worker { return c.ep.Rank }
