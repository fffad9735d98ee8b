package service

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/kvrouter/router/indexer"
	"github.com/kvrouter/router/scheduler"
)

// Batching of replica events, Dynamo's: a batch leaves when it holds
// replicaBatchEvents events or replicaBatchDelay after its first. A mark
// (prefill or free) takes the batch out at once (SyncPublisher.Publish).
const (
	replicaBatchEvents = 256
	replicaBatchDelay  = time.Millisecond
)

// SyncSubject returns the subject of replica-sync events:
// namespace.{ns}.component.{component}.active_sequences_events.
func SyncSubject(namespace, component string) string {
	return Subject(namespace, component, "active_sequences_events")
}

// SyncPublisher carries a Router's bookkeeping changes to the other router
// replicas (--router-replica-sync, docs/compat.md §5.7). It is built before
// the Router and given to it (scheduler.Options.Publisher), and to the
// Service, which runs its batching and applies the peers' events to the
// Router: nothing is attached after construction.
//
// Wire format: JSON with Dynamo's serde names, a batch
// {"events":[ActiveSequenceEvent...]} per message, each event
//
//	{"request_id":"r-1","worker":{"worker_id":7,"dp_rank":0},
//	 "data":{"AddRequest":{"token_sequence":[...],"isl":100,"overlap":2,
//	         "track_prefill_tokens":true,"expected_output_tokens":null}},
//	 "router_id":42,"lora_name":null}
//
// with data "MarkPrefillCompleted" or "Free" for marks. A message holding a
// single event, as older Dynamo builds sent, is accepted too, and so is an
// AddRequest carrying newer Dynamo's prefill_load_hint instead of isl and
// overlap. Events whose router_id is this replica's are its own echo and
// are ignored.
type SyncPublisher struct {
	nc      *nats.Conn
	subject string
	id      uint64
	log     *slog.Logger

	// mu guards the batch being built. Publish is called under the
	// Router's lock (docs/locks.md).
	mu   sync.Mutex
	buf  []byte
	n    int
	kick chan struct{}
}

var _ scheduler.Publisher = (*SyncPublisher)(nil)

// NewSyncPublisher returns the publisher of replica cfg.RouterID on
// SyncSubject(cfg.Namespace, cfg.Component). It starts nothing: the
// Service runs it.
func NewSyncPublisher(nc *nats.Conn, cfg Config, log *slog.Logger) *SyncPublisher {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &SyncPublisher{nc: nc, subject: SyncSubject(cfg.Namespace, cfg.Component), id: cfg.RouterID, log: log,
		kick: make(chan struct{}, 1)}
}

// Publish adds an event to the batch; a full batch leaves at once, others
// within replicaBatchDelay. A mark also takes the batch out at once: the
// mark's answer goes out after it on the same connection, so a frontend
// that has its answer knows the replicas will get the mark, even if this
// replica is killed right after. A batched mark lost so left a survivor
// holding the booking that the frontend had freed here, until it expired.
// Adds may wait: a lost add leaves nothing behind. Publish never blocks on
// the network: nats.go buffers the publish.
func (p *SyncPublisher) Publish(ev scheduler.SyncEvent) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.n == 0 {
		p.buf = append(p.buf[:0], `{"events":[`...)
	} else {
		p.buf = append(p.buf, ',')
	}
	p.buf = appendSyncEvent(p.buf, ev, p.id)
	p.n++
	if p.n >= replicaBatchEvents || ev.Kind != scheduler.SyncAdd {
		p.flushLocked()
		return
	}
	select {
	case p.kick <- struct{}{}:
	default:
	}
}

// flushLocked publishes the batch; mu is held.
func (p *SyncPublisher) flushLocked() {
	if p.n == 0 {
		return
	}
	p.buf = append(p.buf, "]}"...)
	if err := p.nc.Publish(p.subject, p.buf); err != nil {
		p.log.Warn("replica events lost", "events", p.n, "subject", p.subject, "error", err)
	}
	p.n = 0
	p.buf = p.buf[:0]
}

// run sends partial batches replicaBatchDelay after their first event,
// until ctx ends; then it sends what is left.
func (p *SyncPublisher) run(ctx context.Context) {
	t := time.NewTimer(replicaBatchDelay)
	t.Stop()
	for {
		select {
		case <-ctx.Done():
			p.mu.Lock()
			p.flushLocked()
			p.mu.Unlock()
			return
		case <-p.kick:
		}
		t.Reset(replicaBatchDelay)
		select {
		case <-ctx.Done():
		case <-t.C:
		}
		p.mu.Lock()
		p.flushLocked()
		p.mu.Unlock()
	}
}

// subscribeSync listens to the replicas' events: a plain subscription,
// not a queue group, since every replica needs every event.
func (s *Service) subscribeSync() (*nats.Subscription, error) {
	sub, err := s.nc.Subscribe(s.pub.subject, s.handleSync)
	if err != nil {
		return nil, fmt.Errorf("router service: subscribe to %s: %w", s.pub.subject, err)
	}
	if err := sub.SetPendingLimits(1<<18, 256<<20); err != nil {
		_ = sub.Unsubscribe()
		return nil, fmt.Errorf("router service: subscribe to %s: %w", s.pub.subject, err)
	}
	return sub, nil
}

// handleSync applies a peer's batch.
func (s *Service) handleSync(msg *nats.Msg) {
	evs, err := decodeSyncEvents(msg.Data)
	if err != nil {
		s.log.Warn("malformed replica event", "subject", msg.Subject, "error", err)
	}
	for _, ev := range evs {
		if ev.routerID == s.pub.id {
			continue
		}
		s.r.ApplyRemote(ev.SyncEvent)
	}
}

// appendSyncEvent appends one event in Dynamo's JSON.
func appendSyncEvent(b []byte, ev scheduler.SyncEvent, routerID uint64) []byte {
	b = append(b, `{"request_id":`...)
	b = appendString(b, ev.RequestID)
	b = append(b, `,"worker":{`...)
	b = appendWorker(b, ev.Worker)
	b = append(b, `},"data":`...)
	switch ev.Kind {
	case scheduler.SyncAdd:
		b = append(b, `{"AddRequest":{"token_sequence":`...)
		if ev.SeqHashes == nil {
			b = append(b, "null"...)
		} else {
			b = append(b, '[')
			for i, h := range ev.SeqHashes {
				if i > 0 {
					b = append(b, ',')
				}
				b = strconv.AppendUint(b, h, 10)
			}
			b = append(b, ']')
		}
		b = append(b, `,"isl":`...)
		b = strconv.AppendInt(b, int64(ev.ISL), 10)
		b = append(b, `,"overlap":`...)
		b = strconv.AppendInt(b, int64(ev.Overlap), 10)
		b = append(b, `,"track_prefill_tokens":`...)
		b = strconv.AppendBool(b, ev.TrackPrefill)
		b = append(b, `,"expected_output_tokens":null}}`...)
	default:
		b = appendString(b, ev.Kind.String())
	}
	b = append(b, `,"router_id":`...)
	b = strconv.AppendUint(b, routerID, 10)
	return append(b, `,"lora_name":null}`...)
}

// syncEvent is a decoded peer event.
type syncEvent struct {
	scheduler.SyncEvent
	routerID uint64
}

type wireSyncEvent struct {
	RequestID string `json:"request_id"`
	Worker    struct {
		WorkerID uint64 `json:"worker_id"`
		DPRank   uint32 `json:"dp_rank"`
	} `json:"worker"`
	Data     json.RawMessage `json:"data"`
	RouterID uint64          `json:"router_id"`
}

type wireAdd struct {
	AddRequest *struct {
		TokenSequence   []uint64 `json:"token_sequence"`
		ISL             int      `json:"isl"`
		Overlap         int      `json:"overlap"`
		TrackPrefill    *bool    `json:"track_prefill_tokens"`
		PrefillLoadHint *struct {
			InitialEffectivePrefillTokens int `json:"initial_effective_prefill_tokens"`
		} `json:"prefill_load_hint"`
	} `json:"AddRequest"`
}

// decodeSyncEvents decodes a batch, or a single event. Events it cannot
// read are skipped and reported in the error; the others are returned.
// Replica events come from trusted peers and are not on the routing path,
// so encoding/json is fast enough here.
func decodeSyncEvents(data []byte) ([]syncEvent, error) {
	var batch struct {
		Events []json.RawMessage `json:"events"`
	}
	raws := []json.RawMessage{data}
	if err := json.Unmarshal(data, &batch); err == nil && batch.Events != nil {
		raws = batch.Events
	}
	var out []syncEvent
	var errs []error
	for _, raw := range raws {
		ev, err := decodeSyncEvent(raw)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		out = append(out, ev)
	}
	return out, errors.Join(errs...)
}

func decodeSyncEvent(raw []byte) (syncEvent, error) {
	var w wireSyncEvent
	if err := json.Unmarshal(raw, &w); err != nil {
		return syncEvent{}, err
	}
	if w.RequestID == "" {
		return syncEvent{}, errors.New("event without request_id")
	}
	ev := syncEvent{routerID: w.RouterID, SyncEvent: scheduler.SyncEvent{
		RequestID: w.RequestID,
		Worker:    indexer.Worker{ID: indexer.WorkerID(w.Worker.WorkerID), DPRank: indexer.DPRank(w.Worker.DPRank)},
	}}
	var name string
	if err := json.Unmarshal(w.Data, &name); err == nil {
		switch name {
		case "Free":
			ev.Kind = scheduler.SyncFree
		case "MarkPrefillCompleted":
			ev.Kind = scheduler.SyncPrefill
		default:
			return syncEvent{}, fmt.Errorf("request %q: unknown event %q", w.RequestID, name)
		}
		return ev, nil
	}
	var add wireAdd
	if err := json.Unmarshal(w.Data, &add); err != nil || add.AddRequest == nil {
		return syncEvent{}, fmt.Errorf("request %q: data is neither an AddRequest nor a mark", w.RequestID)
	}
	a := add.AddRequest
	ev.Kind = scheduler.SyncAdd
	ev.SeqHashes = a.TokenSequence
	ev.ISL, ev.Overlap = a.ISL, a.Overlap
	ev.TrackPrefill = a.TrackPrefill == nil || *a.TrackPrefill
	if h := a.PrefillLoadHint; h != nil && a.ISL == 0 {
		ev.ISL, ev.Overlap = h.InitialEffectivePrefillTokens, 0
	}
	if ev.ISL < 0 || ev.ISL > scheduler.MaxTokens || ev.Overlap < 0 {
		return syncEvent{}, fmt.Errorf("request %q: isl %d or overlap %d out of range", w.RequestID, ev.ISL, ev.Overlap)
	}
	return ev, nil
}
