// Package zmqtest plays an inference engine's KV event publisher for tests
// and benchmarks: a ZMQ PUB socket sending vLLM's 3-frame messages, a
// ROUTER replay socket answering from a buffer of past batches, and the
// MessagePack encodings of vLLM's batches (docs/compat.md, "Engine-native
// KV events"). It uses go-zeromq, the pure-Go ZMQ the router uses; the
// end-to-end tests play the engine with libzmq (Python) instead.
package zmqtest

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"log"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-zeromq/zmq4"
)

// Engine is a fake engine's publisher: Publish sends a batch with the next
// sequence number and keeps it for replay.
type Engine struct {
	Topic string

	ctx    context.Context
	cancel context.CancelFunc
	pub    zmq4.Socket
	router zmq4.Socket

	mu      sync.Mutex
	seq     uint64
	kept    []kept
	keep    int
	done    chan struct{}
	oldForm bool // replay replies without the topic frame (older vLLM, SGLang)
	before  func()
	pause   time.Duration
	// served counts the replay requests whose answer has been read from
	// the kept batches.
	served atomic.Int64
}

type kept struct {
	seq     uint64
	payload []byte
}

// Options of an Engine.
type Options struct {
	// Topic is the topic frame.
	Topic string
	// Replay starts a replay socket.
	Replay bool
	// Keep is how many batches the replay socket keeps (default 10000).
	Keep int
	// OldReplay answers replays as older vLLM and SGLang do, without the
	// topic frame.
	OldReplay bool
	// BeforeAnswer, if set, is called with each replay request received,
	// before the kept batches are read for the answer: a test can hold the
	// answer there while it publishes.
	BeforeAnswer func()
	// ReplyPause is a pause after each batch of a replay answer: an
	// engine slow to answer, as a busy one is.
	ReplyPause time.Duration
}

var quiet = log.New(io.Discard, "", 0)

// NewEngine binds a publisher (and a replay socket) on loopback ports.
func NewEngine(opts Options) (*Engine, error) { return NewEngineAt(0, opts) }

// NewEngineAt binds the publisher on the given loopback port (0: any).
func NewEngineAt(port int, opts Options) (*Engine, error) {
	ctx, cancel := context.WithCancel(context.Background())
	e := &Engine{Topic: opts.Topic, ctx: ctx, cancel: cancel, keep: opts.Keep, oldForm: opts.OldReplay, before: opts.BeforeAnswer, pause: opts.ReplyPause, done: make(chan struct{})}
	if e.keep == 0 {
		e.keep = 10000
	}
	e.pub = zmq4.NewPub(ctx, zmq4.WithLogger(quiet))
	if err := e.pub.Listen(fmt.Sprintf("tcp://127.0.0.1:%d", port)); err != nil {
		cancel()
		return nil, err
	}
	if !opts.Replay {
		close(e.done)
		return e, nil
	}
	e.router = zmq4.NewRouter(ctx, zmq4.WithLogger(quiet))
	if err := e.router.Listen("tcp://127.0.0.1:0"); err != nil {
		e.pub.Close()
		cancel()
		return nil, err
	}
	go e.serveReplay()
	return e, nil
}

// Addr is the publisher's address, tcp://127.0.0.1:port.
func (e *Engine) Addr() string { return "tcp://" + e.pub.Addr().String() }

// ReplayAddr is the replay socket's address, or "" without one.
func (e *Engine) ReplayAddr() string {
	if e.router == nil {
		return ""
	}
	return "tcp://" + e.router.Addr().String()
}

// Port is the publisher's TCP port.
func (e *Engine) Port() int { return e.pub.Addr().(*net.TCPAddr).Port }

// Close stops the sockets.
func (e *Engine) Close() {
	e.cancel()
	e.pub.Close()
	if e.router != nil {
		e.router.Close()
	}
	<-e.done
}

// Publish sends payload as the next batch and returns its sequence.
func (e *Engine) Publish(payload []byte) (uint64, error) {
	e.mu.Lock()
	seq := e.seq
	e.seq++
	e.kept = append(e.kept, kept{seq, payload})
	if len(e.kept) > e.keep {
		e.kept = e.kept[len(e.kept)-e.keep:]
	}
	e.mu.Unlock()
	return seq, e.pub.SendMulti(zmq4.NewMsgFrom([]byte(e.Topic), seqFrame(seq), payload))
}

// Skip takes the next n sequence numbers without sending their batches
// live, as a publisher whose messages a slow subscriber lost; the replay
// socket still holds them (payloads from batch).
func (e *Engine) Skip(batches ...[]byte) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, p := range batches {
		e.kept = append(e.kept, kept{e.seq, p})
		e.seq++
	}
	if len(e.kept) > e.keep {
		e.kept = e.kept[len(e.kept)-e.keep:]
	}
}

// Forget drops every kept batch, as a replay buffer that rolled over.
func (e *Engine) Forget() {
	e.mu.Lock()
	e.kept = nil
	e.mu.Unlock()
}

// Restart sets the sequence back to 0 and forgets the kept batches, as a
// restarted engine.
func (e *Engine) Restart() {
	e.mu.Lock()
	e.seq, e.kept = 0, nil
	e.mu.Unlock()
}

// Subscribed reports whether at least one subscriber is connected (zmq4
// lists a PUB's connections as its subscribers' topics).
func (e *Engine) Subscribed() bool {
	ts := e.pub.(interface{ Topics() []string })
	return len(ts.Topics()) > 0
}

func seqFrame(seq uint64) []byte {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], seq)
	return b[:]
}

// serveReplay answers replay requests: [identity, "", start] gets every
// kept batch from start on, then the end marker.
func (e *Engine) serveReplay() {
	defer close(e.done)
	for {
		msg, err := e.router.Recv()
		if err != nil {
			return
		}
		if len(msg.Frames) != 3 || len(msg.Frames[2]) != 8 {
			continue
		}
		id := msg.Frames[0]
		start := binary.BigEndian.Uint64(msg.Frames[2])
		if e.before != nil {
			e.before()
		}
		e.mu.Lock()
		var out []kept
		for _, k := range e.kept {
			if k.seq >= start {
				out = append(out, k)
			}
		}
		e.mu.Unlock()
		e.served.Add(1)
		// A requester that went away mid-answer (a router that stopped
		// reading once it had what it asked for) fails the sends; like a
		// real engine, the socket goes on serving the others. zmq4 can
		// also report a failed send of the end marker that the requester
		// did receive, closing its socket at once: so served counts the
		// answers read, not the sends that returned no error.
		e.answer(id, out)
	}
}

// answer sends the kept batches out to requester id, then the end marker,
// stopping at the first send that fails.
func (e *Engine) answer(id []byte, out []kept) {
	for _, k := range out {
		if e.router.SendMulti(e.reply(id, seqFrame(k.seq), k.payload)) != nil {
			return
		}
		if e.pause > 0 {
			time.Sleep(e.pause) // the simulated engine's slowness, not a wait for anything
		}
	}
	_ = e.router.SendMulti(e.reply(id, seqFrame(^uint64(0)), nil))
}

// Served returns how many replay requests the engine has read its kept
// batches for: a batch published once a router's catch-up request is
// served is not in the catch-up's answer.
func (e *Engine) Served() int { return int(e.served.Load()) }

func (e *Engine) reply(id, seq, payload []byte) zmq4.Msg {
	if payload == nil {
		payload = []byte{}
	}
	if e.oldForm {
		return zmq4.NewMsgFrom(id, []byte{}, seq, payload)
	}
	topic := []byte(e.Topic)
	if len(payload) == 0 {
		topic = []byte{}
	}
	return zmq4.NewMsgFrom(id, []byte{}, topic, seq, payload)
}

// String describes the engine.
func (e *Engine) String() string {
	return fmt.Sprintf("engine at %s (replay %q)", e.Addr(), e.ReplayAddr())
}

// PublishFrames sends one message of the given frames as it is, for
// formats other than an engine's (Dynamo's event plane) and for malformed
// messages.
func (e *Engine) PublishFrames(frames ...[]byte) error {
	return e.pub.SendMulti(zmq4.NewMsgFrom(frames...))
}

// Flood is a hostile replay socket: it answers every request with
// floodPerRequest batches of sequence 0 and no end marker, more than a
// subscriber can take within its replay timeout.
type Flood struct {
	router zmq4.Socket
	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}
	sent   atomic.Int64
}

// NewFlood starts a flooding replay socket on a loopback port; the test's
// cleanup stops it.
func NewFlood(t testing.TB) *Flood {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	f := &Flood{router: zmq4.NewRouter(ctx, zmq4.WithLogger(quiet)), ctx: ctx, cancel: cancel, done: make(chan struct{})}
	if err := f.router.Listen("tcp://127.0.0.1:0"); err != nil {
		cancel()
		t.Fatal(err)
	}
	go f.serve()
	t.Cleanup(func() {
		f.cancel()
		f.router.Close()
		<-f.done
	})
	return f
}

// floodPerRequest is how many batches a Flood sends each requester.
const floodPerRequest = 200_000

// Addr is the flood's address.
func (f *Flood) Addr() string { return "tcp://" + f.router.Addr().String() }

// Sent is how many batches the flood sent.
func (f *Flood) Sent() int64 { return f.sent.Load() }

func (f *Flood) serve() {
	defer close(f.done)
	batch := Batch(0, Cleared())
	for {
		msg, err := f.router.Recv()
		if err != nil || len(msg.Frames) == 0 {
			return
		}
		// Flood this requester with up to floodPerRequest batches (zmq4
		// drops what goes to a requester that is gone without an error).
		for range floodPerRequest {
			if f.ctx.Err() != nil {
				return
			}
			if err := f.router.SendMulti(zmq4.NewMsgFrom(msg.Frames[0], []byte{}, seqFrame(0), batch)); err != nil {
				return
			}
			f.sent.Add(1)
		}
	}
}
