package httpapi_test

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kvrouter/router/blockhash"
	"github.com/kvrouter/router/httpapi"
	"github.com/kvrouter/router/internal/stacktest"
	"github.com/kvrouter/router/internal/testutil"
	"github.com/kvrouter/router/stack"
)

// BenchmarkRouteHTTP measures routing over loopback HTTP, as
// BenchmarkRouteNATS (service/bench_test.go) does over NATS, in one run:
// first a bare echo server (net/http, a handler that reads the body and
// writes it back as application/json), then the router's POST /v1/route,
// each driven by 64 clients sending requests back to back, each client on
// its own keep-alive connection (HTTP/1.1 has one request in flight per
// connection); b.N requests go to each. The router is a whole stack
// (embedded NATS and etcd) with 1,000 registered workers at block size 128,
// each holding 4 cached 30-block conversations; every request is a booked
// route of a 30-block prompt: a client's conversation so far (20 blocks,
// cached on one worker) and a new turn of 10 blocks. The router's stale
// timeout (1 s) frees the bookings, so its bookkeeping stays about a second
// of requests.
//
// Reported: routes/s and echo/s, the median and 99th percentile latency of
// each, route-p50/echo-p50, and the process's CPU time per request of each
// run (clients, servers and router together). The payload sub-benchmarks
// send the prompt as token_ids (3,840 ids, about 25 KB) or as block_hashes
// (30 hashes, about 600 bytes); the echo returns the same bytes.
func BenchmarkRouteHTTP(b *testing.B) {
	const (
		workers = 1000
		clients = 64
		bs      = 128
		blocks  = 30
		cached  = 20
	)
	r := start(b, func(c *stack.Config) {
		c.Workers.BlockSize, c.Scheduler.BlockSize = bs, bs
		c.Scheduler.StaleTimeout = time.Second
		c.Scheduler.PrefillTimeout = time.Second // it may not exceed the stale timeout
	})
	testutil.RegisterWorkers(b, r.etcd, workers, bs)
	r.waitWorkers(workers)

	rng := rand.New(rand.NewPCG(3, 3))
	tokens := func(n int) []uint32 { return testutil.RandomTokens(rng, n) }
	h, err := blockhash.NewHasher(bs, blockhash.Options{})
	if err != nil {
		b.Fatal(err)
	}
	kv := stacktest.NewKVEvents(b, r.nc, bs)
	entries := 0
	storeAsync := func(id uint64, toks []uint32) { entries += kv.Stored("dynamo", id, toks) }
	for id := range uint64(workers) {
		for range 4 {
			storeAsync(1+id, tokens(blocks*bs))
		}
	}
	convs := make([][]uint32, clients)
	for i := range convs {
		convs[i] = tokens(cached * bs)
		storeAsync(uint64(1+i*7), convs[i])
	}
	testutil.Eventually(b, time.Minute, func() bool { return r.st.Index().Stats().Entries >= entries }, "%d index entries", entries)

	echo := startEcho(b)
	transport := &http.Transport{MaxIdleConns: clients, MaxIdleConnsPerHost: clients, DisableCompression: true}
	b.Cleanup(transport.CloseIdleConnections)
	client := &http.Client{Transport: transport, Timeout: 30 * time.Second}

	for _, payload := range []string{"token_ids", "block_hashes"} {
		body := testutil.RouteBody(payload, convs, func(t []uint32) []uint64 { return h.LocalHashes(nil, t) }, blocks-cached, bs)
		b.Run(payload, func(b *testing.B) {
			b.ReportAllocs()
			e := drive(client, echo+"/echo", clients, body, b.N)
			route := drive(client, r.base+httpapi.PathPrefix+"route", clients, body, b.N)
			if route.Errors > 0 || e.Errors > 0 {
				b.Fatalf("%d route and %d echo requests failed, first: %s%s", route.Errors, e.Errors, route.FirstError, e.FirstError)
			}
			b.ReportMetric(route.PerSecond, "routes/s")
			b.ReportMetric(e.PerSecond, "echo/s")
			b.ReportMetric(route.P50.Seconds()*1e6, "route-p50-µs")
			b.ReportMetric(route.P99.Seconds()*1e6, "route-p99-µs")
			b.ReportMetric(e.P50.Seconds()*1e6, "echo-p50-µs")
			b.ReportMetric(e.P99.Seconds()*1e6, "echo-p99-µs")
			b.ReportMetric(float64(route.P50)/float64(e.P50), "route-p50/echo-p50")
			b.ReportMetric(route.CPUPerRequest.Seconds()*1e6, "route-cpu-µs/req")
			b.ReportMetric(e.CPUPerRequest.Seconds()*1e6, "echo-cpu-µs/req")
		})
	}
}

// startEcho runs a bare HTTP server whose handler writes each request's
// body back as application/json, and returns its base URL. It stops when
// the benchmark ends.
func startEcho(b *testing.B) string {
	b.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	bufs := sync.Pool{New: func() any { return new(bytes.Buffer) }}
	srv := &http.Server{ReadHeaderTimeout: httpapi.DefaultReadHeaderTimeout, Handler: http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		buf := bufs.Get().(*bytes.Buffer)
		defer bufs.Put(buf)
		buf.Reset()
		if _, err := buf.ReadFrom(req.Body); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Length", strconv.Itoa(buf.Len()))
		_, _ = w.Write(buf.Bytes())
	})}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(ln)
	}()
	b.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		<-done
	})
	return "http://" + ln.Addr().String()
}

// driveRuns numbers drive's runs, so that request ids never repeat.
var driveRuns atomic.Int64

// drive POSTs n requests to url from clients goroutines, each sending the
// bodies body builds back to back, and measures them (testutil.Drive).
func drive(client *http.Client, url string, clients int, body func([]byte, int64, int, int, *rand.Rand) []byte, n int) *testutil.Load {
	run := driveRuns.Add(1)
	return testutil.Drive(n, clients, func(c int) func(int, *rand.Rand) (time.Duration, error) {
		var buf []byte
		reply := new(bytes.Buffer)
		return func(i int, rng *rand.Rand) (time.Duration, error) {
			buf = body(buf[:0], run, c, i, rng)
			t := time.Now()
			req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(buf))
			if err != nil {
				return 0, err
			}
			req.Header.Set("Content-Type", "application/json")
			resp, err := client.Do(req)
			if err != nil {
				return 0, err
			}
			reply.Reset()
			_, err = reply.ReadFrom(resp.Body)
			resp.Body.Close()
			d := time.Since(t)
			if err == nil && (resp.StatusCode != http.StatusOK || bytes.HasPrefix(reply.Bytes(), []byte(`{"error"`))) {
				err = fmt.Errorf("%d %s", resp.StatusCode, reply.Bytes())
			}
			return d, err
		}
	})
}
