package httpapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/kvrouter/router/blockhash"
	"github.com/kvrouter/router/events"
	"github.com/kvrouter/router/events/codec"
	"github.com/kvrouter/router/httpapi"
	"github.com/kvrouter/router/indexer"
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
	registerMany(b, r, workers, bs)
	r.waitWorkers(workers)

	rng := rand.New(rand.NewPCG(3, 3))
	tokens := func(n int) []uint32 {
		t := make([]uint32, n)
		for i := range t {
			t[i] = rng.Uint32N(150000)
		}
		return t
	}
	h, err := blockhash.NewHasher(bs, blockhash.Options{})
	if err != nil {
		b.Fatal(err)
	}
	entries := 0
	storeAsync := func(id uint64, toks []uint32) {
		locals := h.LocalHashes(nil, toks)
		seqs := h.SequenceHashes(nil, locals)
		rank := indexer.Worker{ID: indexer.WorkerID(id)}
		ev := indexer.Event{Worker: rank, Kind: indexer.KindStored}
		for i := range locals {
			ev.Blocks = append(ev.Blocks, indexer.Block{Hash: indexer.BlockHash(seqs[i]), Tokens: indexer.LocalHash(locals[i])})
		}
		r.ids[rank]++
		if err := r.nc.Publish(events.Subjects("dynamo", events.DefaultComponent)[0], codec.AppendJSON(nil, ev, codec.Meta{EventID: r.ids[rank]})); err != nil {
			b.Fatal(err)
		}
		entries += len(locals)
	}
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
		prefix := make([][]byte, clients)
		for c, conv := range convs {
			if payload == "token_ids" {
				t, _ := json.Marshal(conv)
				prefix[c] = []byte(`"token_ids":` + strings.TrimSuffix(string(t), "]") + ",")
			} else {
				hs, _ := json.Marshal(h.LocalHashes(nil, conv))
				prefix[c] = []byte(`"block_hashes":` + strings.TrimSuffix(string(hs), "]") + ",")
			}
		}
		body := func(dst []byte, run int64, c, i int, rng *rand.Rand) []byte {
			dst = fmt.Appendf(dst, `{"request_id":"%d-%d-%d",`, run, c, i)
			dst = append(dst, prefix[c]...)
			n := blocks - cached
			if payload == "token_ids" {
				n *= bs
			}
			for j := range n {
				if j > 0 {
					dst = append(dst, ',')
				}
				if payload == "token_ids" {
					dst = strconv.AppendUint(dst, uint64(rng.Uint32N(150000)), 10)
				} else {
					dst = strconv.AppendUint(dst, rng.Uint64(), 10)
				}
			}
			return append(dst, "]}"...)
		}
		b.Run(payload, func(b *testing.B) {
			b.ReportAllocs()
			e := drive(b, client, echo+"/echo", clients, body, b.N)
			route := drive(b, client, r.base+httpapi.PathPrefix+"route", clients, body, b.N)
			if route.errors > 0 || e.errors > 0 {
				b.Fatalf("%d route and %d echo requests failed, first: %s%s", route.errors, e.errors, route.firstError, e.firstError)
			}
			b.ReportMetric(route.perSecond, "routes/s")
			b.ReportMetric(e.perSecond, "echo/s")
			b.ReportMetric(route.p50.Seconds()*1e6, "route-p50-µs")
			b.ReportMetric(route.p99.Seconds()*1e6, "route-p99-µs")
			b.ReportMetric(e.p50.Seconds()*1e6, "echo-p50-µs")
			b.ReportMetric(e.p99.Seconds()*1e6, "echo-p99-µs")
			b.ReportMetric(float64(route.p50)/float64(e.p50), "route-p50/echo-p50")
			b.ReportMetric(route.cpuPerRequest.Seconds()*1e6, "route-cpu-µs/req")
			b.ReportMetric(e.cpuPerRequest.Seconds()*1e6, "echo-cpu-µs/req")
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

// driveResult is what drive measured.
type driveResult struct {
	perSecond     float64
	p50, p99      time.Duration
	cpuPerRequest time.Duration
	errors        int
	firstError    string
	mu            sync.Mutex
	latencies     []time.Duration
}

// drive POSTs n requests to url from clients goroutines, each sending the
// bodies body builds back to back, and measures their latency and the
// process's CPU time.
func drive(b *testing.B, client *http.Client, url string, clients int, body func([]byte, int64, int, int, *rand.Rand) []byte, n int) *driveResult {
	res := &driveResult{latencies: make([]time.Duration, 0, n)}
	run := driveRuns.Add(1)
	cpu0 := cpuTime()
	var wg sync.WaitGroup
	per := (n + clients - 1) / clients
	start := time.Now()
	for c := range clients {
		count := min(per, n-c*per)
		if count <= 0 {
			break
		}
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(c), 7)) // the same turns in both runs
			lat := make([]time.Duration, 0, count)
			var buf []byte
			reply := new(bytes.Buffer)
			fail := func(err error) {
				res.mu.Lock()
				if res.errors == 0 {
					res.firstError = err.Error()
				}
				res.errors++
				res.mu.Unlock()
			}
			for i := range count {
				buf = body(buf[:0], run, c, i, rng)
				t := time.Now()
				req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(buf))
				if err != nil {
					fail(err)
					continue
				}
				req.Header.Set("Content-Type", "application/json")
				resp, err := client.Do(req)
				if err != nil {
					fail(err)
					continue
				}
				reply.Reset()
				_, err = reply.ReadFrom(resp.Body)
				resp.Body.Close()
				d := time.Since(t)
				if err == nil && (resp.StatusCode != http.StatusOK || bytes.HasPrefix(reply.Bytes(), []byte(`{"error"`))) {
					err = fmt.Errorf("%d %s", resp.StatusCode, reply.Bytes())
				}
				if err != nil {
					fail(err)
					continue
				}
				lat = append(lat, d)
			}
			res.mu.Lock()
			res.latencies = append(res.latencies, lat...)
			res.mu.Unlock()
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	res.perSecond = float64(len(res.latencies)) / elapsed.Seconds()
	res.cpuPerRequest = (cpuTime() - cpu0) / time.Duration(max(len(res.latencies), 1))
	slices.Sort(res.latencies)
	if len(res.latencies) > 0 {
		res.p50 = res.latencies[len(res.latencies)/2]
		res.p99 = res.latencies[len(res.latencies)*99/100]
	}
	return res
}

// cpuTime returns the process's CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// registerMany registers n decode workers, ids 1..n, at block size bs,
// under one lease.
func registerMany(b *testing.B, r *router, n, bs int) {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	lease, err := r.etcd.Grant(ctx, 600)
	if err != nil {
		b.Fatal(err)
	}
	for id := 1; id <= n; id++ {
		inst := fmt.Sprintf(`{"type":"Endpoint","namespace":"dynamo","component":"backend","endpoint":"generate","instance_id":%d}`, id)
		card := fmt.Sprintf(`{"type":"Model","namespace":"dynamo","component":"backend","endpoint":"generate","instance_id":%d,"card_json":{"display_name":"m","kv_cache_block_size":%d,"runtime_config":{"total_kv_blocks":16384,"max_num_seqs":256,"max_num_batched_tokens":8192,"data_parallel_start_rank":0,"data_parallel_size":1}}}`, id, bs)
		if _, err := r.etcd.Txn(ctx).Then(
			clientv3.OpPut(fmt.Sprintf("v1/mdc/dynamo/backend/generate/%x", id), card, clientv3.WithLease(lease.ID)),
			clientv3.OpPut(fmt.Sprintf("v1/instances/dynamo/backend/generate/%x", id), inst, clientv3.WithLease(lease.ID)),
		).Commit(); err != nil {
			b.Fatal(err)
		}
	}
}
