package events

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"github.com/kvrouter/router/events/codec"
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

// harness is a subscriber and the writer of a fresh index, on an embedded
// NATS server.
type harness struct {
	t   testing.TB
	nc  *nats.Conn
	idx *indexer.Index
	reg *prometheus.Registry
	m   *metrics.Router
	em  *Metrics // the families the writer and subscriber count in
	w   *Writer
	sub *Subscriber
	log *testutil.Buffer

	cancel context.CancelFunc
	done   chan error
	// stopWriter stops the writer, after the subscriber.
	stopWriter func()
}

// testConfig is DefaultConfig for namespace "test".
func testConfig() Config {
	cfg := DefaultConfig()
	cfg.Namespace = "test"
	return cfg
}

// newHarness builds a subscriber on the server at url; it does not run yet.
func newHarness(t testing.TB, url string, cfg Config) *harness {
	t.Helper()
	h := &harness{t: t, nc: testutil.NATSConn(t, url), idx: indexer.NewIndex(indexer.Config{}), reg: prometheus.NewRegistry(), log: &testutil.Buffer{}}
	var err error
	if h.m, err = metrics.New(h.reg, metrics.DefaultConfig()); err != nil {
		t.Fatal(err)
	}
	if h.em, err = NewMetrics(h.m); err != nil {
		t.Fatal(err)
	}
	logger := slog.New(slog.NewTextHandler(h.log, &slog.HandlerOptions{Level: slog.LevelDebug}))
	if h.w, err = NewWriter(cfg, h.idx, h.m, logger); err != nil {
		t.Fatal(err)
	}
	if h.sub, err = NewSubscriber(cfg, h.nc, h.w, h.m, logger); err != nil {
		t.Fatal(err)
	}
	return h
}

// start runs the subscriber until stop or the end of the test, and waits
// until it is ready.
func (h *harness) start() *harness {
	h.t.Helper()
	h.stopWriter = runWriter(h.t, h.w)
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
	defer h.stopWriter()
	select {
	case err := <-h.done:
		return err
	case <-time.After(30 * time.Second):
		h.t.Fatal("Run did not return within 30s of cancel")
		return nil
	}
}

// runWriter runs w until the returned stop is called (at the latest at the
// end of the test), which waits for Run to return.
func runWriter(t testing.TB, w *Writer) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("writer: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return stop
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

// jsonEvent encodes an event as JSON.
func jsonEvent(ev indexer.Event, id uint64) []byte {
	return codec.AppendJSON(nil, ev, codec.Meta{EventID: id})
}

// msgpackEvent encodes an event as Dynamo's MessagePack envelope.
func msgpackEvent(t testing.TB, ev indexer.Event, id uint64) []byte {
	return msgpackTierEvent(t, ev, id, "device")
}

// msgpackTierEvent encodes an event about storage tier tier as Dynamo's
// MessagePack envelope.
func msgpackTierEvent(t testing.TB, ev indexer.Event, id uint64, tier string) []byte {
	return testutil.MsgpackEnvelope(t, testutil.MsgpackRouterEvent(t, ev, id, tier, false, true), id, true)
}
