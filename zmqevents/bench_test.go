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
// ZMQ: 64 engine publishers in this process, each sending single-block
// stored events, chained per publisher, perBatch to a message (an engine
// batches one scheduler step's events). events/s is the figure the README
// quotes; each iteration is one event.
//
// The publishers are go-zeromq PUB sockets (pub=zmq4), which make one
// system call per message and so, on two cores, take much of the CPU the
// subscriber would use; or FastPublishers (pub=batched), which write many
// messages per system call as libzmq does when messages queue up.
func BenchmarkIngest(b *testing.B) {
	for _, pub := range []string{"zmq4", "batched"} {
		for _, perBatch := range []int{1, 16} {
			b.Run(fmt.Sprintf("pub=%s/publishers=64/events_per_batch=%d", pub, perBatch), func(b *testing.B) {
				benchIngest(b, pub == "batched", 64, perBatch)
			})
		}
	}
}

// chainLen is the length of the benchmark's block chains: a 2,048-token
// prompt in 64-token blocks.
const chainLen = 32

// publisher is a benchmark's publisher: send publishes one batch.
type publisher interface {
	addr() string
	send(seq uint64, payload []byte) error
	flush() error
}

type zmq4Pub struct{ *zmqtest.Engine }

func (p zmq4Pub) addr() string { return p.Addr() }
func (p zmq4Pub) send(_ uint64, payload []byte) error {
	_, err := p.Publish(payload)
	return err
}
func (zmq4Pub) flush() error { return nil }

type fastPub struct{ *zmqtest.FastPublisher }

func (p fastPub) addr() string { return p.Addr() }
func (p fastPub) send(seq uint64, payload []byte) error {
	return p.Send(nil, zmqtest.SeqFrame(seq), payload)
}
func (p fastPub) flush() error { return p.Flush() }

func benchIngest(b *testing.B, batched bool, publishers, perBatch int) {
	b.ReportAllocs()
	h := newHarness(b)
	pubs := make([]publisher, publishers)
	eps := make([]Endpoint, publishers)
	accepted := make(chan error, publishers)
	for i := range pubs {
		if batched {
			p, err := zmqtest.NewFastPublisher()
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(p.Close)
			go func() { accepted <- p.Accept(30 * time.Second) }()
			pubs[i] = fastPub{p}
		} else {
			e, err := zmqtest.NewEngine(zmqtest.Options{})
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(e.Close)
			pubs[i] = zmq4Pub{e}
		}
		eps[i] = Endpoint{Rank: indexer.Worker{ID: indexer.WorkerID(i + 1)}, Addr: pubs[i].addr(), Engine: EngineVLLM}
	}
	h.src.Set("bench", eps)
	if batched {
		for range pubs {
			if err := <-accepted; err != nil {
				b.Fatal(err)
			}
		}
	} else {
		deadline := time.Now().Add(30 * time.Second)
		for _, p := range pubs {
			for !p.(zmq4Pub).Subscribed() {
				if time.Now().After(deadline) {
					b.Fatal("publishers not subscribed within 30 s")
				}
				time.Sleep(time.Millisecond) // polling a condition with a deadline, not synchronising
			}
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
	for p, pub := range pubs {
		go func() {
			for k, pl := range payloads[p] {
				if err := pub.send(uint64(k), pl); err != nil {
					done <- err
					return
				}
			}
			done <- pub.flush()
		}()
	}
	for range pubs {
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
