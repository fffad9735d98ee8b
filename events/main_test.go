package events

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/vmihailenco/msgpack/v5"
	"go.uber.org/goleak"

	"github.com/kvrouter/router/indexer"
	"github.com/kvrouter/router/internal/testutil"
	"github.com/kvrouter/router/metrics"
)

// Subscribers start goroutines; goleak checks that Run takes them all down.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// nats.go v1.55.0: ObjectStore.Put starts resetPendingAcksOnReconnect
		// on its private JetStream context and then clears the channel that
		// goroutine waits on; when the clearing wins the race, the goroutine
		// blocks on a nil channel for good (one per snapshot upload, in the
		// library, not here).
		goleak.IgnoreTopFunction("github.com/nats-io/nats.go/jetstream.(*jetStream).resetPendingAcksOnReconnect"),
	)
}

// The index satisfies the Applier the subscriber consumes.
var _ Applier = (*indexer.Index)(nil)

// harness is a subscriber of a fresh index on an embedded NATS server.
type harness struct {
	t   testing.TB
	nc  *nats.Conn
	idx *indexer.Index
	reg *prometheus.Registry
	m   *metrics.Router
	sub *Subscriber
	log *testutil.Buffer

	cancel context.CancelFunc
	done   chan error
}

// testConfig is DefaultConfig for namespace "test".
func testConfig() Config {
	cfg := DefaultConfig()
	cfg.Namespace = "test"
	return cfg
}

// newHarness builds a subscriber on the server at url; it does not run yet.
func newHarness(t testing.TB, url string, cfg Config, opts ...Option) *harness {
	t.Helper()
	h := &harness{t: t, nc: testutil.NATSConn(t, url), idx: indexer.NewIndex(indexer.Config{}), reg: prometheus.NewRegistry(), log: &testutil.Buffer{}}
	var err error
	if h.m, err = metrics.New(h.reg, metrics.DefaultConfig()); err != nil {
		t.Fatal(err)
	}
	logger := slog.New(slog.NewTextHandler(h.log, &slog.HandlerOptions{Level: slog.LevelDebug}))
	if h.sub, err = NewSubscriber(cfg, h.nc, h.idx, h.m, logger, opts...); err != nil {
		t.Fatal(err)
	}
	return h
}

// start runs the subscriber until stop or the end of the test, and waits
// until it is ready.
func (h *harness) start() *harness {
	h.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel, h.done = cancel, make(chan error, 1)
	go func() { h.done <- h.sub.Run(ctx) }()
	h.t.Cleanup(func() { h.stop() })
	testutil.Eventually(h.t, 20*time.Second, func() bool {
		select {
		case err := <-h.done:
			h.done <- err
			return true
		default:
		}
		return h.sub.Ready()
	}, "subscriber ready")
	select {
	case err := <-h.done:
		h.t.Fatalf("Run returned early: %v", err)
	default:
	}
	return h
}

// stop cancels Run and returns its error.
func (h *harness) stop() error {
	if h.cancel == nil {
		return nil
	}
	h.cancel()
	h.cancel = nil
	select {
	case err := <-h.done:
		return err
	case <-time.After(30 * time.Second):
		h.t.Fatal("Run did not return within 30s of cancel")
		return nil
	}
}

// waitApplied waits until the subscriber has applied n events.
func (h *harness) waitApplied(n uint64) {
	h.t.Helper()
	testutil.Eventually(h.t, 30*time.Second, func() bool { return h.sub.Stats().Applied >= n },
		"%d events applied (stats %v)", n, statsNow{h.sub})
}

// statsNow prints a subscriber's stats when formatted, not when made.
type statsNow struct{ s *Subscriber }

func (x statsNow) String() string { return fmt.Sprintf("%+v", x.s.Stats()) }

// canonical renders an index dump as sorted lines, equal for equal indexes.
func canonical(evs []indexer.Event) []string {
	out := make([]string, 0, len(evs))
	for _, ev := range evs {
		for _, b := range ev.Blocks {
			out = append(out, fmt.Sprintf("%v parent=%v:%d block=%d tokens=%d", ev.Worker, ev.HasParent, ev.Parent, b.Hash, b.Tokens))
		}
	}
	slices.Sort(out)
	return out
}

// jsonEvent encodes an event as JSON.
func jsonEvent(ev indexer.Event, id uint64) []byte { return AppendJSON(nil, ev, Meta{EventID: id}) }

// MessagePack shapes of Dynamo's types, as rmp_serde::to_vec_named writes
// them (maps keyed by field name).
type (
	mpBlock struct {
		BlockHash  uint64 `msgpack:"block_hash"`
		TokensHash uint64 `msgpack:"tokens_hash"`
		MMExtra    any    `msgpack:"mm_extra_info"`
	}
	mpStored struct {
		ParentHash    *uint64   `msgpack:"parent_hash"`
		StartPosition *uint32   `msgpack:"start_position"`
		Blocks        []mpBlock `msgpack:"blocks"`
	}
	mpRemoved struct {
		BlockHashes []uint64 `msgpack:"block_hashes"`
	}
	mpEvent struct {
		EventID uint64 `msgpack:"event_id"`
		Data    any    `msgpack:"data"`
		DPRank  uint32 `msgpack:"dp_rank"`
	}
	mpRouterEvent struct {
		WorkerID        uint64  `msgpack:"worker_id"`
		StorageTier     string  `msgpack:"storage_tier"`
		ResidencyDomain string  `msgpack:"residency_domain,omitempty"`
		Event           mpEvent `msgpack:"event"`
	}
	mpEnvelope struct {
		PublisherID   uint64 `msgpack:"publisher_id"`
		Sequence      uint64 `msgpack:"sequence"`
		PublishedAt   uint64 `msgpack:"published_at"`
		Topic         string `msgpack:"topic"`
		Payload       []byte `msgpack:"payload"`
		PublishedAtNs uint64 `msgpack:"published_at_ns"`
	}
)

// mpData is the externally tagged data of ev.
func mpData(ev indexer.Event) any {
	switch ev.Kind {
	case indexer.KindStored:
		st := mpStored{Blocks: []mpBlock{}}
		if ev.HasParent {
			p := uint64(ev.Parent)
			st.ParentHash = &p
		}
		for _, b := range ev.Blocks {
			st.Blocks = append(st.Blocks, mpBlock{BlockHash: uint64(b.Hash), TokensHash: uint64(b.Tokens)})
		}
		return map[string]any{"stored": st}
	case indexer.KindRemoved:
		r := mpRemoved{BlockHashes: []uint64{}}
		for _, h := range ev.Removed {
			r.BlockHashes = append(r.BlockHashes, uint64(h))
		}
		return map[string]any{"removed": r}
	}
	return "cleared"
}

// mpPayload encodes ev as a MessagePack RouterEvent.
func mpPayload(t testing.TB, ev indexer.Event, meta Meta, compact bool) []byte {
	t.Helper()
	var buf bytes.Buffer
	enc := msgpack.NewEncoder(&buf)
	enc.UseCompactInts(compact)
	re := mpRouterEvent{
		WorkerID:    uint64(ev.Worker.ID),
		StorageTier: meta.StorageTier.String(),
		Event:       mpEvent{EventID: meta.EventID, Data: mpData(ev), DPRank: uint32(ev.Worker.DPRank)},
	}
	if meta.CacheOwner {
		re.ResidencyDomain = "cache_owner"
	}
	err := enc.Encode(re)
	if err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// mpEnvelopeOf wraps a payload in Dynamo's event-plane envelope.
func mpEnvelopeOf(t testing.TB, payload []byte, seq uint64, compact bool) []byte {
	t.Helper()
	var buf bytes.Buffer
	enc := msgpack.NewEncoder(&buf)
	enc.UseCompactInts(compact)
	if err := enc.Encode(mpEnvelope{PublisherID: 42, Sequence: seq, PublishedAt: 1700000000000, Topic: "kv-events", Payload: payload, PublishedAtNs: 1700000000000000000}); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// msgpackEvent encodes an event as Dynamo's MessagePack envelope.
func msgpackEvent(t testing.TB, ev indexer.Event, id uint64) []byte {
	return mpEnvelopeOf(t, mpPayload(t, ev, Meta{EventID: id}, true), id, true)
}
