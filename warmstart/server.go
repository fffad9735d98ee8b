package warmstart

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
)

// Source takes a consistent snapshot of the index for a peer:
// events.Subscriber implements it. Snapshot is called from the Server's one
// goroutine, never from a NATS callback; it returns the encoded snapshot
// and its number of events, or why there is none.
type Source interface {
	Snapshot(ctx context.Context) (data []byte, events int, err error)
}

// Server answers joining replicas' requests for index snapshots. Run it
// only once this router's own warm start has finished, so that a joiner
// never asks itself or another joiner.
type Server struct {
	cfg Config
	nc  *nats.Conn
	src Source
	log *slog.Logger
	// ready is closed once the subscription is live (tests wait on it).
	ready chan struct{}
}

// NewServer returns a server of src's snapshots on nc, which must be the
// connection src's KV-event subscriptions use (the cut is ordered against
// them). It starts nothing.
func NewServer(cfg Config, nc *nats.Conn, src Source, log *slog.Logger) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("warm start server: %w", err)
	}
	if nc == nil || src == nil {
		return nil, errors.New("warm start server: nil NATS connection or snapshot source")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Server{cfg: cfg, nc: nc, src: src, log: log, ready: make(chan struct{})}, nil
}

// Ready is closed once Run's subscription is registered with the server.
func (s *Server) Ready() <-chan struct{} { return s.ready }

// Run subscribes to Subject in the queue group of the router component and
// answers requests one at a time until ctx ends. The subscription is
// synchronous: the cut waits for every asynchronous subscription of the
// connection (events.Subscriber.Snapshot), which a request handled on one
// of them would wait for itself. It returns nil after ctx ended, or the
// error that stopped it.
func (s *Server) Run(ctx context.Context) error {
	subject := Subject(s.cfg.Namespace, s.cfg.Component)
	sub, err := s.nc.QueueSubscribeSync(subject, s.cfg.Component)
	if err != nil {
		return fmt.Errorf("warm start server: subscribe to %s: %w", subject, err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := s.nc.FlushTimeout(10 * time.Second); err != nil && ctx.Err() == nil {
		return fmt.Errorf("warm start server: flush subscription to %s: %w", subject, err)
	}
	close(s.ready)
	s.log.Info("serving index snapshots to joining replicas", slog.String("subject", subject), slog.String("queue_group", s.cfg.Component))
	for {
		msg, err := sub.NextMsgWithContext(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			return fmt.Errorf("warm start server: %s: %w", subject, err)
		}
		if msg.Reply == "" {
			continue // not a request
		}
		s.serve(ctx, msg)
	}
}

// serve answers one request with the chunks of a fresh snapshot, or an
// error message.
func (s *Server) serve(ctx context.Context, req *nats.Msg) {
	start := time.Now()
	joiner := req.Header.Get(HeaderRouter)
	ctx, cancel := context.WithTimeout(ctx, serveTimeout)
	defer cancel()
	data, events, err := s.src.Snapshot(ctx)
	if err == nil && len(data) == 0 {
		err = errors.New("the snapshot is empty")
	}
	if err != nil {
		s.log.Warn("index snapshot for a joining replica failed", slog.String("joiner", joiner), slog.Any("error", err))
		m := nats.NewMsg(req.Reply)
		m.Header.Set(HeaderError, err.Error())
		m.Header.Set(HeaderRouter, strconv.FormatUint(s.cfg.RouterID, 10))
		if err := s.nc.PublishMsg(m); err != nil {
			s.log.Warn("index snapshot: reply failed", slog.String("joiner", joiner), slog.Any("error", err))
		}
		return
	}
	chunks, err := s.send(ctx, req.Reply, data, events)
	if err != nil {
		s.log.Warn("index snapshot: sending to a joining replica failed", slog.String("joiner", joiner),
			slog.Int("chunks_sent", chunks), slog.Any("error", err))
		return
	}
	s.log.Info("index snapshot sent to a joining replica", slog.String("joiner", joiner), slog.Int("events", events),
		slog.Int("bytes", len(data)), slog.Int("chunks", chunks), slog.Duration("duration", time.Since(start)))
}

// send publishes data to reply in chunks and returns how many it sent.
func (s *Server) send(ctx context.Context, reply string, data []byte, events int) (int, error) {
	size := s.cfg.chunkSize(s.nc)
	n := (len(data) + size - 1) / size
	common := nats.Header{
		HeaderChunks: {strconv.Itoa(n)},
		HeaderBytes:  {strconv.Itoa(len(data))},
		HeaderEvents: {strconv.Itoa(events)},
		HeaderRouter: {strconv.FormatUint(s.cfg.RouterID, 10)},
	}
	unflushed := 0
	for i := range n {
		m := nats.NewMsg(reply)
		maps.Copy(m.Header, common)
		m.Header.Set(HeaderChunk, strconv.Itoa(i))
		m.Data = data[i*size : min((i+1)*size, len(data))]
		if err := s.nc.PublishMsg(m); err != nil {
			return i, err
		}
		// Wait for the server to take what is buffered before queueing
		// more, so that the connection's other traffic (route replies)
		// never waits behind more than flushEvery bytes of snapshot.
		if unflushed += len(m.Data); unflushed >= flushEvery {
			if err := s.nc.FlushWithContext(ctx); err != nil {
				return i + 1, err
			}
			unflushed = 0
		}
	}
	return n, s.nc.FlushWithContext(ctx)
}
