package testutil

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// This file holds what the loopback routing benchmarks (BenchmarkRouteNATS
// in service, BenchmarkRouteHTTP in httpapi) share, so that their figures
// are measured the same way and compare: the workers they register, the
// prompts they send, how they drive the load and what they report of it.

// CPUTime returns the process's CPU time so far, user and system, or 0 if
// the system does not say.
func CPUTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// RandomTokens returns n token ids drawn from rng, below 150,000 (about a
// large model's vocabulary).
func RandomTokens(rng *rand.Rand, n int) []uint32 {
	t := make([]uint32, n)
	for i := range t {
		t[i] = rng.Uint32N(150000)
	}
	return t
}

// WorkerRecord is a worker's registration as Dynamo's workers write it in
// etcd (docs/api.md §1): an instance and a model card of one
// data-parallel rank.
type WorkerRecord struct {
	Namespace, Component string
	ID                   uint64
	// BlockSize, TotalKVBlocks, MaxNumSeqs and MaxBatchedTokens are the
	// card's kv_cache_block_size and runtime_config values.
	BlockSize, TotalKVBlocks, MaxNumSeqs, MaxBatchedTokens int
}

// Puts returns the etcd puts that register w, under lease (none when
// lease is 0): its model card, then its instance.
func (w WorkerRecord) Puts(lease clientv3.LeaseID) []clientv3.Op {
	path := fmt.Sprintf("%s/%s/generate/%x", w.Namespace, w.Component, w.ID)
	inst := fmt.Sprintf(`{"type":"Endpoint","namespace":%q,"component":%q,"endpoint":"generate","instance_id":%d,"transport":{"nats_tcp":"x"}}`,
		w.Namespace, w.Component, w.ID)
	card := fmt.Sprintf(`{"type":"Model","namespace":%q,"component":%q,"endpoint":"generate","instance_id":%d,"card_json":{"display_name":"m","kv_cache_block_size":%d,`+
		`"runtime_config":{"total_kv_blocks":%d,"max_num_seqs":%d,"max_num_batched_tokens":%d,"data_parallel_start_rank":0,"data_parallel_size":1}}}`,
		w.Namespace, w.Component, w.ID, w.BlockSize, w.TotalKVBlocks, w.MaxNumSeqs, w.MaxBatchedTokens)
	var opts []clientv3.OpOption
	if lease != 0 {
		opts = append(opts, clientv3.WithLease(lease))
	}
	return []clientv3.Op{clientv3.OpPut("v1/mdc/"+path, card, opts...), clientv3.OpPut("v1/instances/"+path, inst, opts...)}
}

// RegisterWorkers registers n decode workers in etcd, ids 1..n, each an
// instance and a model card at block size blockSize (16,384 KV blocks) in
// namespace dynamo, component backend, all under one lease of ten minutes.
func RegisterWorkers(tb testing.TB, etcd *clientv3.Client, n, blockSize int) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	lease, err := etcd.Grant(ctx, 600)
	if err != nil {
		tb.Fatal(err)
	}
	for id := 1; id <= n; id++ {
		w := WorkerRecord{Namespace: "dynamo", Component: "backend", ID: uint64(id), BlockSize: blockSize,
			TotalKVBlocks: 16384, MaxNumSeqs: 256, MaxBatchedTokens: 8192}
		if _, err := etcd.Txn(ctx).Then(w.Puts(lease.ID)...).Commit(); err != nil {
			tb.Fatal(err)
		}
	}
}

// RouteBody returns the builder of the route requests of a multi-turn
// chat: client c's request i of run run (its request_id "run-c-i") is
// client c's conversation so far, convs[c], and a new turn of newBlocks
// blocks drawn from rng. payload says how the prompt is sent: "token_ids"
// (every token) or "block_hashes" (blockHashes of the conversation, then
// random hashes). The builder appends the JSON to dst.
func RouteBody(payload string, convs [][]uint32, blockHashes func([]uint32) []uint64, newBlocks, blockSize int) func(dst []byte, run int64, c, i int, rng *rand.Rand) []byte {
	// The conversation part of each client's prompt, rendered once.
	prefix := make([][]byte, len(convs))
	for c, conv := range convs {
		if payload == "token_ids" {
			t, _ := json.Marshal(conv)
			prefix[c] = []byte(`"token_ids":` + strings.TrimSuffix(string(t), "]") + ",")
		} else {
			hs, _ := json.Marshal(blockHashes(conv))
			prefix[c] = []byte(`"block_hashes":` + strings.TrimSuffix(string(hs), "]") + ",")
		}
	}
	return func(dst []byte, run int64, c, i int, rng *rand.Rand) []byte {
		dst = fmt.Appendf(dst, `{"request_id":"%d-%d-%d",`, run, c, i)
		dst = append(dst, prefix[c]...)
		n := newBlocks
		if payload == "token_ids" {
			n *= blockSize
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
}

// Load is what Drive measured of one run.
type Load struct {
	// PerSecond is the requests answered per second.
	PerSecond float64
	// P50 and P99 are the median and 99th percentile latency of the
	// requests answered.
	P50, P99 time.Duration
	// CPUPerRequest is the process's CPU time (user and system: clients,
	// servers and router alike) per request answered.
	CPUPerRequest time.Duration
	// Errors counts the requests that failed; FirstError is the first
	// one's error.
	Errors     int
	FirstError string
}

// Drive sends n requests from clients goroutines, each sending back to
// back, and measures their latency and the process's CPU time. newClient
// is called in client c's goroutine and returns its send function, which
// sends the client's request i, drawing what it draws from rng (seeded by
// c alone, so that every run sends the same requests), and returns how
// long the request took from being sent.
func Drive(n, clients int, newClient func(c int) func(i int, rng *rand.Rand) (time.Duration, error)) *Load {
	var (
		mu        sync.Mutex
		res       Load
		latencies = make([]time.Duration, 0, n)
	)
	cpu0 := CPUTime()
	var wg sync.WaitGroup
	per := (n + clients - 1) / clients
	start := time.Now()
	for c := range clients {
		count := min(per, n-c*per)
		if count <= 0 {
			break
		}
		wg.Go(func() {
			send := newClient(c)
			rng := rand.New(rand.NewPCG(uint64(c), 7)) // the same turns in every run
			lat := make([]time.Duration, 0, count)
			for i := range count {
				d, err := send(i, rng)
				if err != nil {
					mu.Lock()
					if res.Errors == 0 {
						res.FirstError = err.Error()
					}
					res.Errors++
					mu.Unlock()
					continue
				}
				lat = append(lat, d)
			}
			mu.Lock()
			latencies = append(latencies, lat...)
			mu.Unlock()
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	res.PerSecond = float64(len(latencies)) / elapsed.Seconds()
	res.CPUPerRequest = (CPUTime() - cpu0) / time.Duration(max(len(latencies), 1))
	slices.Sort(latencies)
	if len(latencies) > 0 {
		res.P50 = latencies[len(latencies)/2]
		res.P99 = latencies[len(latencies)*99/100]
	}
	return &res
}
