package zmqevents

import (
	"fmt"
	"testing"
	"time"

	"github.com/kvrouter/router/events/codec"
	"github.com/kvrouter/router/indexer"
	"github.com/kvrouter/router/internal/zmqtest"
	"github.com/kvrouter/router/metrics"

	promtest "github.com/prometheus/client_golang/prometheus/testutil"
)

// BenchmarkIngest measures KV events from publish to applied over loopback
// ZMQ: 64 engine publishers (go-zeromq PUB sockets in this process), each
// sending single-block stored events, chained per publisher, batched
// perBatch to a message as an engine batches one scheduler step's events.
// events/s is the figure the README quotes; each iteration is one event.
func BenchmarkIngest(b *testing.B) {
	for _, perBatch := range []int{1, 16} {
		b.Run(fmt.Sprintf("publishers=64/events_per_batch=%d", perBatch), func(b *testing.B) {
			benchIngest(b, 64, perBatch)
		})
	}
}

// chainLen is the length of the benchmark's block chains: a 2,048-token
// prompt in 64-token blocks.
const chainLen = 32

func benchIngest(b *testing.B, publishers, perBatch int) {
	b.ReportAllocs()
	h := newHarness(b)
	engines := make([]*zmqtest.Engine, publishers)
	eps := make([]Endpoint, publishers)
	for i := range engines {
		e, err := zmqtest.NewEngine(zmqtest.Options{})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(e.Close)
		engines[i] = e
		eps[i] = Endpoint{Rank: indexer.Worker{ID: indexer.WorkerID(i + 1)}, Addr: e.Addr(), Engine: EngineVLLM}
	}
	h.src.Set("bench", eps)
	deadline := time.Now().Add(30 * time.Second)
	for _, e := range engines {
		for !e.Subscribed() {
			if time.Now().After(deadline) {
				b.Fatal("publishers not subscribed within 30 s")
			}
			time.Sleep(time.Millisecond) // polling a condition with a deadline, not synchronising
		}
	}
	// Every publisher's batches, encoded before the clock starts: chains
	// of chainLen single-block stores, a prompt of chainLen blocks each.
	perPub := (b.N + publishers - 1) / publishers
	nBatches := (perPub + perBatch - 1) / perBatch
	payloads := make([][][]byte, publishers)
	tokens := make([]uint32, blockSize)
	for p := range payloads {
		payloads[p] = make([][]byte, nBatches)
		hash := uint64(p) << 32
		for k := range nBatches {
			evs := make([]zmqtest.Event, perBatch)
			for j := range evs {
				var parent *uint64
				if (hash-uint64(p)<<32)%chainLen != 0 {
					parent = zmqtest.Parent(hash)
				}
				hash++
				for t := range tokens {
					tokens[t] = uint32(hash)*blockSize + uint32(t)
				}
				evs[j] = zmqtest.Stored(parent, []uint64{hash}, tokens, blockSize)
			}
			payloads[p][k] = zmqtest.Batch(0, evs...)
		}
	}
	want := uint64(publishers * nBatches * perBatch)
	before := h.applied()
	b.ResetTimer()
	start := time.Now()
	done := make(chan error, publishers)
	for p, e := range engines {
		go func() {
			for _, pl := range payloads[p] {
				if _, err := e.Publish(pl); err != nil {
					done <- err
					return
				}
			}
			done <- nil
		}()
	}
	for range engines {
		if err := <-done; err != nil {
			b.Fatal(err)
		}
	}
	for h.applied()-before < want {
		if time.Since(start) > time.Minute {
			b.Fatalf("applied %d of %d events in a minute; %d not indexed, %v dropped, %v missed", h.applied()-before, want,
				h.skipped(), promtest.ToFloat64(h.zm.Events.Dropped.WithLabelValues(metrics.DropQueueFull)), promtest.ToFloat64(h.zm.Events.Missed))
		}
		time.Sleep(time.Millisecond) // polling with a deadline
	}
	elapsed := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(want)/elapsed.Seconds(), "events/s")
	b.ReportMetric(0, "ns/op")
	if n := h.skipped(); n != 0 {
		b.Fatalf("%d events skipped", n)
	}
}

// applied is the number of stored events applied to the index.
func (h *harness) applied() uint64 {
	return uint64(promtest.ToFloat64(h.zm.Events.Applied.WithLabelValues("stored", "ok")))
}

// skipped is the number of engine events not indexed, whatever the reason.
func (h *harness) skipped() int {
	n := 0
	for o := range codec.NumOutcomes {
		n += int(promtest.ToFloat64(h.zm.Skipped.WithLabelValues(o.String())))
	}
	return n
}
