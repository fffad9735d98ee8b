package warmstart

import (
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
)

// Headers of a snapshot's chunks (and of the request: HeaderRouter names
// the joiner).
const (
	// HeaderChunk is the chunk's index, from 0.
	HeaderChunk = "Kvr-Snapshot-Chunk"
	// HeaderChunks is the number of chunks of the snapshot.
	HeaderChunks = "Kvr-Snapshot-Chunks"
	// HeaderBytes is the snapshot's length in bytes, all chunks together.
	HeaderBytes = "Kvr-Snapshot-Bytes"
	// HeaderEvents is the number of RouterEvents in the snapshot.
	HeaderEvents = "Kvr-Snapshot-Events"
	// HeaderRouter is the router id of the sender, in decimal.
	HeaderRouter = "Kvr-Snapshot-Router"
	// HeaderError, on a reply without body, says why the peer sends no
	// snapshot.
	HeaderError = "Kvr-Snapshot-Error"
)

// Sizes and limits of the transport.
const (
	// ChunkMargin is what a chunk leaves of the connection's maximum
	// payload for the headers.
	ChunkMargin = 4 << 10
	// MaxSnapshotBytes is the largest snapshot a joiner takes: about 25
	// million index entries, far above any router's.
	MaxSnapshotBytes = 4 << 30
	// flushEvery is how many bytes a server publishes between two flushes.
	flushEvery = 4 << 20
	// serveTimeout bounds the cut and the sending of one snapshot.
	serveTimeout = 60 * time.Second
)

// Errors of a warm start. Each is wrapped with what went wrong.
var (
	// ErrNoPeer means no ready replica answered (NATS no responders).
	ErrNoPeer = errors.New("no peer serves index snapshots")
	// ErrTimeout means the snapshot did not arrive whole in time.
	ErrTimeout = errors.New("index snapshot timed out")
	// ErrPeer means the peer answered with an error (HeaderError).
	ErrPeer = errors.New("peer could not send an index snapshot")
	// ErrChunk means the chunks do not make one snapshot: a chunk missing,
	// duplicated or out of order, a bad header, or the wrong length.
	ErrChunk = errors.New("bad index snapshot chunk")
)

// Subject returns the subject replicas serve index snapshots on:
// namespace.{ns}.component.{router component}.index_snapshot, named as the
// router's endpoints are (service.Subject).
func Subject(namespace, component string) string {
	return "namespace." + namespace + ".component." + component + ".index_snapshot"
}

// Config says where snapshots are served and asked for.
type Config struct {
	// Namespace is the Dynamo namespace (--namespace).
	Namespace string
	// Component is the router's component (--router-component): the
	// subject's component and the servers' queue group.
	Component string
	// RouterID is this router's id, sent in HeaderRouter.
	RouterID uint64
	// Timeout bounds a joiner's wait for the whole snapshot
	// (--router-warm-start-timeout); 0 turns the warm start off.
	Timeout time.Duration
	// ChunkSize is the most snapshot bytes a server puts in one message;
	// 0 means the connection's maximum payload less ChunkMargin. Tests set
	// it small.
	ChunkSize int
}

// Validate reports the settings out of range, naming their flags.
func (c Config) Validate() error {
	var errs []error
	for _, n := range []struct{ flag, v string }{{"--namespace", c.Namespace}, {"--router-component", c.Component}} {
		if n.v == "" {
			errs = append(errs, fmt.Errorf("%s: must not be empty", n.flag))
		}
	}
	if c.Timeout < 0 {
		errs = append(errs, fmt.Errorf("--router-warm-start-timeout: %v is negative (0 turns the warm start off)", c.Timeout))
	}
	if c.ChunkSize < 0 {
		errs = append(errs, fmt.Errorf("warm start chunk size: %d is negative (0 means the connection's maximum payload)", c.ChunkSize))
	}
	return errors.Join(errs...)
}

// chunkSize returns the chunk size on nc.
func (c Config) chunkSize(nc *nats.Conn) int {
	if c.ChunkSize > 0 {
		return c.ChunkSize
	}
	return max(int(nc.MaxPayload())-ChunkMargin, 1)
}

// collector puts a snapshot together from its chunks, checking that they
// arrive in order, each once, and add up to the announced length. It
// trusts no header: every number is checked before it is used.
type collector struct {
	buf    []byte
	next   int // the index of the chunk expected next
	chunks int // from chunk 0
	total  int // bytes, from chunk 0
	events int
	peer   string
}

// add takes one reply message and reports whether the snapshot is whole.
// After an error or done, the collector must not be used again.
func (c *collector) add(h nats.Header, data []byte) (done bool, err error) {
	if msg := h.Get(HeaderError); msg != "" {
		return false, fmt.Errorf("%w: %s", ErrPeer, msg)
	}
	var v [4]int
	for i, name := range [...]string{HeaderChunk, HeaderChunks, HeaderBytes, HeaderEvents} {
		if v[i], err = headerInt(h, name); err != nil {
			return false, err
		}
	}
	idx, chunks, total, events := v[0], v[1], v[2], v[3]
	switch {
	case c.next == 0 && idx != 0:
		return false, fmt.Errorf("%w: chunk %d arrived first: chunk 0 is missing", ErrChunk, idx)
	case c.next == 0:
		if chunks < 1 || chunks > total {
			return false, fmt.Errorf("%w: %d chunks cannot hold %d bytes (each chunk holds at least one)", ErrChunk, chunks, total)
		}
		c.chunks, c.total, c.events, c.peer = chunks, total, events, h.Get(HeaderRouter)
		c.buf = make([]byte, 0, min(total, 64<<20)) // grown as chunks come, past 64 MiB
	case idx < c.next:
		return false, fmt.Errorf("%w: chunk %d arrived twice", ErrChunk, idx)
	case idx > c.next:
		return false, fmt.Errorf("%w: chunk %d arrived where chunk %d was expected (chunk %d missing or out of order)", ErrChunk, idx, c.next, c.next)
	case chunks != c.chunks || total != c.total || events != c.events:
		return false, fmt.Errorf("%w: chunk %d announces %d chunks, %d bytes, %d events; chunk 0 announced %d, %d, %d",
			ErrChunk, idx, chunks, total, events, c.chunks, c.total, c.events)
	}
	if idx >= c.chunks {
		return false, fmt.Errorf("%w: chunk %d of only %d", ErrChunk, idx, c.chunks)
	}
	if len(data) == 0 {
		return false, fmt.Errorf("%w: chunk %d of %d is empty", ErrChunk, idx, c.chunks)
	}
	if len(c.buf)+len(data) > c.total {
		return false, fmt.Errorf("%w: chunk %d runs past the announced %d bytes", ErrChunk, idx, c.total)
	}
	c.buf = append(c.buf, data...)
	c.next++
	if c.next < c.chunks {
		return false, nil
	}
	if len(c.buf) != c.total {
		return false, fmt.Errorf("%w: the %d chunks hold %d bytes, %d announced", ErrChunk, c.chunks, len(c.buf), c.total)
	}
	return true, nil
}

// progress describes how far the collector got, for a timeout's message.
func (c *collector) progress() string {
	if c.next == 0 {
		return "no chunk received"
	}
	return fmt.Sprintf("%d of %d chunks received (%d of %d bytes)", c.next, c.chunks, len(c.buf), c.total)
}

// headerInt reads a header holding a decimal integer in 0..MaxSnapshotBytes
// (no count or length of a snapshot is larger).
func headerInt(h nats.Header, name string) (int, error) {
	const limit = MaxSnapshotBytes
	v := h.Get(name)
	if v == "" {
		return 0, fmt.Errorf("%w: header %s missing", ErrChunk, name)
	}
	n, err := strconv.ParseUint(v, 10, 63)
	if err != nil || n > uint64(limit) {
		return 0, fmt.Errorf("%w: header %s: %q is not a number in 0..%d", ErrChunk, name, clip(v), limit)
	}
	return int(n), nil
}

// clip shortens a header value for an error message.
func clip(s string) string {
	if len(s) > 32 {
		return s[:32] + "…"
	}
	return s
}
