package service

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/kvrouter/router/client"
	"github.com/kvrouter/router/indexer"
	"github.com/kvrouter/router/internal/testutil"
	"github.com/kvrouter/router/metrics"
	"github.com/kvrouter/router/scheduler"
)

// BenchmarkRouteNATS measures routing over loopback NATS, in one run:
// first a bare echo service (a queue-group subscription that replies with
// the request's bytes, with as many subscriptions as the router has per
// endpoint), then the router's route endpoint, each driven by 64 clients
// sending requests back to back over 4 connections; b.N requests go to
// each. The router has 1,000 registered workers (etcd) at block size 128,
// each holding 4 cached 30-block conversations. Every request is a booked
// route of a 30-block prompt: a client's conversation so far (20 blocks,
// cached on one worker) and a new turn of 10 blocks of its own, as in a
// multi-turn chat.
//
// Steady state: requests are never freed by the clients; the router's
// stale timeout (set to 1 s here, an hour by default) frees them, so its
// bookkeeping holds about a second of requests instead of growing with
// b.N, and every request measured, route or echo, is one request.
//
// A third run sends the same routes through the client package
// (client.Client.Route on the same connections): what a Go frontend gets,
// JSON encoding of the request and decoding of the decision included.
//
// Reported: routes/s, client-routes/s and echo/s (requests answered per
// second), the median and 99th percentile latency of each,
// route-p50/echo-p50 and client-p50/echo-p50 (the ratios of the medians),
// and the process's CPU time per request of each run (clients, NATS
// server and router together). The payload
// sub-benchmarks send the prompt as token_ids (3,840 ids, about 25 KB) or
// as block_hashes (30 hashes, about 600 bytes); the echo returns the same
// bytes. BENCH_HANDLERS=n sets the subscriptions per endpoint (router and
// echo alike; 2 by default).
func BenchmarkRouteNATS(b *testing.B) {
	const (
		workers   = 1000
		clients   = 64
		conns     = 4
		blockSize = 128
		blocks    = 30
		cached    = 20
	)
	srv := startServers(b)
	if h := os.Getenv("BENCH_HANDLERS"); h != "" {
		benchHandlers, _ = strconv.Atoi(h)
	}
	cfg := scheduler.DefaultConfig()
	cfg.StaleTimeout = time.Second
	cfg.PrefillTimeout = cfg.StaleTimeout // it may not exceed the stale timeout
	rt := startRouter(b, srv, 42, cfg)
	testutil.RegisterWorkers(b, srv.etcd, workers, blockSize)
	waitWorkers(b, workers, rt)

	rng := rand.New(rand.NewPCG(3, 3))
	tokens := func(n int) []uint32 { return testutil.RandomTokens(rng, n) }
	for id := range uint64(workers) {
		for range 4 {
			rt.store(b, 1+id, tokens(blocks*blockSize))
		}
	}
	// One conversation per client, cached on one worker.
	convs := make([][]uint32, clients)
	for i := range convs {
		convs[i] = tokens(cached * blockSize)
		rt.store(b, uint64(1+i*7), convs[i])
	}

	echoNC := testutil.NATSConn(b, srv.nats.URL())
	for range rt.svc.cfg.Handlers {
		if _, err := echoNC.QueueSubscribe("bench.echo", "echo", func(m *nats.Msg) { _ = m.Respond(m.Data) }); err != nil {
			b.Fatal(err)
		}
	}
	if err := echoNC.Flush(); err != nil {
		b.Fatal(err)
	}
	clientConns := make([]*nats.Conn, conns)
	for i := range clientConns {
		clientConns[i] = testutil.NATSConn(b, srv.nats.URL())
	}
	h := hasherOf(b, blockSize)

	for _, payload := range []string{"token_ids", "block_hashes"} {
		// body appends client c's request number i: its conversation and a
		// new turn drawn from rng.
		body := testutil.RouteBody(payload, convs, func(t []uint32) []uint64 { return h.LocalHashes(nil, t) }, blocks-cached, blockSize)
		// request builds the same request as body, for the client.
		request := func(run int64, c, i int, rng *rand.Rand) client.RouteRequest {
			q := client.RouteRequest{RequestID: fmt.Sprintf("%d-%d-%d", run, c, i)}
			n := blocks - cached
			if payload == "token_ids" {
				q.TokenIDs = slices.Grow(slices.Clone(convs[c]), n*blockSize)
				for range n * blockSize {
					q.TokenIDs = append(q.TokenIDs, rng.Uint32N(150000))
				}
			} else {
				q.BlockHashes = slices.Grow(h.LocalHashes(nil, convs[c]), n)
				for range n {
					q.BlockHashes = append(q.BlockHashes, rng.Uint64())
				}
			}
			return q
		}
		raw := func(subject string) sendFunc {
			return func(nc *nats.Conn, _ *client.Client, run int64, c, i int, rng *rand.Rand, buf []byte) ([]byte, time.Duration, error) {
				buf = body(buf[:0], run, c, i, rng)
				t := time.Now()
				msg, err := nc.Request(subject, buf, 30*time.Second)
				d := time.Since(t)
				if err == nil && strings.HasPrefix(string(msg.Data), `{"error"`) {
					err = fmt.Errorf("%s", msg.Data)
				}
				return buf, d, err
			}
		}
		viaClient := func(_ *nats.Conn, rc *client.Client, run int64, c, i int, rng *rand.Rand, buf []byte) ([]byte, time.Duration, error) {
			q := request(run, c, i, rng)
			t := time.Now()
			_, err := rc.Route(context.Background(), q)
			return buf, time.Since(t), err
		}
		b.Run(payload, func(b *testing.B) {
			b.ReportAllocs()
			echo := drive(b, clientConns, clients, raw("bench.echo"), b.N)
			route := drive(b, clientConns, clients, raw(Subject("dynamo", "router", "route")), b.N)
			viaC := drive(b, clientConns, clients, viaClient, b.N)
			for name, r := range map[string]*testutil.Load{"route": route, "client route": viaC} {
				if r.Errors > 0 {
					b.Fatalf("%d %s requests failed, first: %s", r.Errors, name, r.FirstError)
				}
			}
			b.ReportMetric(route.PerSecond, "routes/s")
			b.ReportMetric(viaC.PerSecond, "client-routes/s")
			b.ReportMetric(echo.PerSecond, "echo/s")
			b.ReportMetric(route.P50.Seconds()*1e6, "route-p50-µs")
			b.ReportMetric(route.P99.Seconds()*1e6, "route-p99-µs")
			b.ReportMetric(viaC.P50.Seconds()*1e6, "client-p50-µs")
			b.ReportMetric(viaC.P99.Seconds()*1e6, "client-p99-µs")
			b.ReportMetric(echo.P50.Seconds()*1e6, "echo-p50-µs")
			b.ReportMetric(echo.P99.Seconds()*1e6, "echo-p99-µs")
			b.ReportMetric(float64(route.P50)/float64(echo.P50), "route-p50/echo-p50")
			b.ReportMetric(float64(viaC.P50)/float64(echo.P50), "client-p50/echo-p50")
			b.ReportMetric(route.CPUPerRequest.Seconds()*1e6, "route-cpu-µs/req")
			b.ReportMetric(viaC.CPUPerRequest.Seconds()*1e6, "client-cpu-µs/req")
			b.ReportMetric(echo.CPUPerRequest.Seconds()*1e6, "echo-cpu-µs/req")
		})
	}
}

// driveRuns numbers drive's runs.
var driveRuns atomic.Int64

// sendFunc sends request i of client c of run run over nc (or rc, a
// client.Client on nc), drawing its new turn from rng, and returns how
// long the request took from being sent (its building left out); buf is
// its buffer to reuse, returned.
type sendFunc func(nc *nats.Conn, rc *client.Client, run int64, c, i int, rng *rand.Rand, buf []byte) ([]byte, time.Duration, error)

// drive sends n requests with send from clients clients spread over
// conns, each client sending back to back, and measures them
// (testutil.Drive).
func drive(b *testing.B, conns []*nats.Conn, clients int, send sendFunc, n int) *testutil.Load {
	rcs := make([]*client.Client, len(conns))
	for i, nc := range conns {
		var err error
		if rcs[i], err = client.New(nc); err != nil {
			b.Fatal(err)
		}
	}
	run := driveRuns.Add(1) // request ids never repeat across runs
	return testutil.Drive(n, clients, func(c int) func(int, *rand.Rand) (time.Duration, error) {
		nc, rc := conns[c%len(conns)], rcs[c%len(conns)]
		var buf []byte
		return func(i int, rng *rand.Rand) (d time.Duration, err error) {
			buf, d, err = send(nc, rc, run, c, i, rng, buf)
			return d, err
		}
	})
}

// BenchmarkHandlerPath times the route handler's own work without the
// network: decoding a block_hashes request, routing it (booked) and
// encoding the reply, then freeing the request; 1,000 workers.
func BenchmarkHandlerPath(b *testing.B) {
	const workers = 1000
	cands := make([]scheduler.Candidate, workers)
	for i := range cands {
		cands[i] = scheduler.Candidate{Worker: indexer.Worker{ID: indexer.WorkerID(i + 1)}, TotalKVBlocks: 16384, MaxNumBatchedTokens: 8192, OverlapTrusted: true}
	}
	prom := prometheus.NewRegistry()
	m, err := metrics.New(prom, metrics.DefaultConfig())
	if err != nil {
		b.Fatal(err)
	}
	idx := indexer.NewIndex(indexer.Config{})
	// Fixed candidates: this benchmark isolates the handler's CPU from etcd
	// and NATS; BenchmarkRouteNATS runs the real registry.
	r, err := scheduler.New(scheduler.DefaultConfig(), idx, nil, m, scheduler.Options{})
	if err != nil {
		b.Fatal(err)
	}
	r.SetCandidates(cands, nil)
	h := hasherOf(b, 128)
	rng := rand.New(rand.NewPCG(1, 1))
	toks := make([]uint32, 30*128)
	for i := range toks {
		toks[i] = rng.Uint32N(150000)
	}
	hs, _ := json.Marshal(h.LocalHashes(nil, toks))
	body := []byte(`{"request_id":"r","block_hashes":` + string(hs) + `}`)
	var req request
	buf := make([]byte, 0, 512)
	b.ReportAllocs()
	for b.Loop() {
		if err := decodeRequest(body, &req, routeFields, 128); err != nil {
			b.Fatal(err)
		}
		r.Submit(&req.sched, func(d scheduler.Decision, err error) {
			if err != nil {
				b.Fatal(err)
			}
			buf = appendDecision(buf[:0], d, 42, nil)
		})
		r.Free("r", -1)
	}
}

// BenchmarkDecodeRequest times decoding a route request: a 3,840-token
// prompt as token_ids (about 25 KB of JSON) and as 30 block_hashes.
func BenchmarkDecodeRequest(b *testing.B) {
	rng := rand.New(rand.NewPCG(2, 2))
	toks := make([]uint32, 30*128)
	for i := range toks {
		toks[i] = rng.Uint32N(150000)
	}
	hs, _ := json.Marshal(hasherOf(b, 128).LocalHashes(nil, toks))
	for _, c := range []struct{ name, body string }{
		{"token_ids", `{"request_id":"r","token_ids":` + tokensJSON(toks) + `}`},
		{"block_hashes", `{"request_id":"r","block_hashes":` + string(hs) + `}`},
	} {
		b.Run(c.name, func(b *testing.B) {
			body := []byte(c.body)
			var req request
			b.SetBytes(int64(len(body)))
			b.ReportAllocs()
			for b.Loop() {
				if err := decodeRequest(body, &req, routeFields, 128); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkAppendDecision times encoding a route reply, with and without
// the workers' URLs to look up.
func BenchmarkAppendDecision(b *testing.B) {
	d := scheduler.Decision{RequestID: "r-1", Choice: scheduler.Choice{Worker: indexer.Worker{ID: 7}, OverlapBlocks: 3}, NumBlocks: 30,
		Type: scheduler.WorkerTypeAggregated}
	for _, c := range []struct {
		name string
		urls WorkerURLs
	}{{"no_urls", nil}, {"urls", testURLs}} {
		b.Run(c.name, func(b *testing.B) {
			buf := make([]byte, 0, 512)
			b.ReportAllocs()
			for b.Loop() {
				buf = appendDecision(buf[:0], d, 42, c.urls)
			}
		})
	}
}
