package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/kvrouter/router/blockhash"
	"github.com/kvrouter/router/client"
	"github.com/kvrouter/router/internal/testutil"
)

// This file drives a cluster from the outside, as Dynamo's workers and
// frontends do: workers register in etcd and publish KV events on NATS
// (docs/api.md §1, §2), a frontend asks the router on NATS (§3), and an
// operator scrapes /metrics (§5). Nothing here imports the router's own
// packages but blockhash, the hash every engine must agree on.

// Names of the cluster as newCluster starts it: the router's defaults.
const (
	namespace       = "dynamo"
	workerComponent = "backend"
	routerComponent = "router"
	// leaseTTL outlives every test: the workers keep no lease alive, so a
	// worker leaves only when a test deletes its key.
	leaseTTL = 600
)

// fleet is a test's workers and frontend, talking to a cluster through its
// own NATS connection and etcd client (both closed when the test ends).
type fleet struct {
	t         *testing.T
	c         *cluster
	nc        *nats.Conn
	rc        *client.Client // on nc
	etcd      *clientv3.Client
	hasher    *blockhash.Hasher
	blockSize int
}

func newFleet(t *testing.T, c *cluster, blockSize int) *fleet {
	t.Helper()
	h, err := blockhash.NewHasher(blockSize, blockhash.Options{})
	if err != nil {
		t.Fatal(err)
	}
	nc := testutil.NATSConn(t, c.natsURL())
	rc, err := client.New(nc, client.WithNamespace(namespace), client.WithRouterComponent(routerComponent), client.WithTimeout(10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	return &fleet{
		t: t, c: c, nc: nc, rc: rc,
		etcd:   testutil.EtcdClient(t, c.etcdURL),
		hasher: h, blockSize: blockSize,
	}
}

// worker is a worker registered by a test. nextEvent is the event_id of its
// next KV event; only one goroutine at a time publishes for a worker.
type worker struct {
	id        uint64
	nextEvent uint64
}

func (w *worker) instanceKey() string {
	return fmt.Sprintf("v1/instances/%s/%s/generate/%x", namespace, workerComponent, w.id)
}

func (w *worker) cardKey() string {
	return fmt.Sprintf("v1/mdc/%s/%s/generate/%x", namespace, workerComponent, w.id)
}

// register puts a worker's model card and instance key on a new lease, in
// one transaction, as a Dynamo worker does; the lease id is its instance id.
func (f *fleet) register(maxNumBatchedTokens int) *worker {
	f.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	lease, err := f.etcd.Grant(ctx, leaseTTL)
	if err != nil {
		f.t.Fatalf("grant a worker lease: %v", err)
	}
	w := &worker{id: uint64(lease.ID), nextEvent: 1}
	instance := mustJSON(f.t, map[string]any{
		"type": "Endpoint", "namespace": namespace, "component": workerComponent, "endpoint": "generate",
		"instance_id": w.id,
		"transport":   map[string]any{"nats_tcp": fmt.Sprintf("%s_%s.generate-%x", namespace, workerComponent, w.id)},
	})
	card := mustJSON(f.t, map[string]any{
		"type": "Model", "namespace": namespace, "component": workerComponent, "endpoint": "generate",
		"instance_id": w.id,
		"card_json": map[string]any{
			"display_name":        "e2e-model",
			"kv_cache_block_size": f.blockSize,
			"runtime_config": map[string]any{
				"total_kv_blocks": 1024, "max_num_seqs": 16, "max_num_batched_tokens": maxNumBatchedTokens,
				"data_parallel_start_rank": 0, "data_parallel_size": 1,
			},
		},
	})
	_, err = f.etcd.Txn(ctx).Then(
		clientv3.OpPut(w.cardKey(), card, clientv3.WithLease(lease.ID)),
		clientv3.OpPut(w.instanceKey(), instance, clientv3.WithLease(lease.ID)),
	).Commit()
	if err != nil {
		f.t.Fatalf("register worker %d: %v", w.id, err)
	}
	return w
}

// deregister deletes a worker's instance key (its card stays, as when a
// Dynamo worker's endpoint goes away first).
func (f *fleet) deregister(w *worker) {
	f.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := f.etcd.Delete(ctx, w.instanceKey()); err != nil {
		f.t.Fatalf("delete %s: %v", w.instanceKey(), err)
	}
}

// prompt is a token sequence and its block hashes: locals are the
// LocalBlockHash values (tokens_hash), seqs the chained sequence hashes,
// used here as the engine's own block_hash as vLLM does.
type prompt struct {
	tokens []uint32
	locals []uint64
	seqs   []uint64
}

// newPrompt returns n tokens counting up from first.
func (f *fleet) newPrompt(first uint32, n int) prompt {
	p := prompt{tokens: make([]uint32, n)}
	for i := range p.tokens {
		p.tokens[i] = first + uint32(i)
	}
	p.locals = f.hasher.LocalHashes(nil, p.tokens)
	p.seqs = f.hasher.SequenceHashes(nil, p.locals)
	return p
}

// storedEvent returns the JSON RouterEvent storing blocks [from, to) of p
// on w, chained to block from-1 (or to nothing when from is 0).
func storedEvent(w *worker, p prompt, from, to int) []byte {
	var parent any // null
	if from > 0 {
		parent = p.seqs[from-1]
	}
	blocks := make([]map[string]uint64, 0, to-from)
	for i := from; i < to; i++ {
		blocks = append(blocks, map[string]uint64{"block_hash": p.seqs[i], "tokens_hash": p.locals[i]})
	}
	return routerEvent(w, map[string]any{"stored": map[string]any{"parent_hash": parent, "blocks": blocks}})
}

// removedEvent returns the JSON RouterEvent removing every block of p from
// w, leaves first, the order in which engines evict a sequence's blocks.
func removedEvent(w *worker, p prompt) []byte {
	hashes := slices.Clone(p.seqs)
	slices.Reverse(hashes)
	return routerEvent(w, map[string]any{"removed": map[string]any{"block_hashes": hashes}})
}

func routerEvent(w *worker, data map[string]any) []byte {
	b, err := json.Marshal(map[string]any{
		"worker_id": w.id, "storage_tier": "device",
		"event": map[string]any{"event_id": w.nextEvent, "dp_rank": 0, "data": data},
	})
	if err != nil {
		panic(err) // maps of numbers and strings always marshal
	}
	w.nextEvent++
	return b
}

// eventsSubject is where the workers of workerComponent publish KV events.
var eventsSubject = fmt.Sprintf("namespace.%s.component.%s.kv-events", namespace, workerComponent)

// publish sends one KV event and flushes it to the server.
func (f *fleet) publish(event []byte) error {
	if err := f.nc.Publish(eventsSubject, event); err != nil {
		return err
	}
	return f.nc.FlushTimeout(5 * time.Second)
}

// Requests and replies of the router's endpoints (docs/api.md §3), written
// here from the document rather than taken from the client package, whose
// types the router's own tests hold to its decoder: these check that the
// document says what the router does. Requests travel through the client
// (ask), which has no part in their JSON.
type (
	routeRequest struct {
		RequestID        string   `json:"request_id,omitempty"`
		TokenIDs         []uint32 `json:"token_ids,omitempty"`
		BlockHashes      []uint64 `json:"block_hashes,omitempty"`
		Book             *bool    `json:"book,omitempty"`
		DoNotQueue       bool     `json:"do_not_queue,omitempty"`
		AllowedWorkerIDs []uint64 `json:"allowed_worker_ids,omitempty"`
	}
	routeReply struct {
		RequestID     string      `json:"request_id"`
		WorkerID      uint64      `json:"worker_id"`
		DPRank        uint32      `json:"dp_rank"`
		OverlapBlocks int         `json:"overlap_blocks"`
		NumBlocks     int         `json:"num_blocks"`
		WorkerType    string      `json:"worker_type"`
		Error         *replyError `json:"error"`
	}
	markRequest struct {
		RequestID    string `json:"request_id"`
		OutputTokens int    `json:"output_tokens,omitempty"`
	}
	markReply struct {
		Success bool        `json:"success"`
		Error   *replyError `json:"error"`
	}
	promptRequest struct {
		TokenIDs    []uint32 `json:"token_ids,omitempty"`
		BlockHashes []uint64 `json:"block_hashes,omitempty"`
	}
	overlap struct {
		WorkerID      uint64 `json:"worker_id"`
		DPRank        uint32 `json:"dp_rank"`
		OverlapBlocks int    `json:"overlap_blocks"`
		WorkerType    string `json:"worker_type"`
	}
	overlapReply struct {
		BlockSize int         `json:"block_size"`
		NumBlocks int         `json:"num_blocks"`
		Workers   []overlap   `json:"workers"`
		Error     *replyError `json:"error"`
	}
	load struct {
		WorkerID               uint64 `json:"worker_id"`
		DPRank                 uint32 `json:"dp_rank"`
		PotentialPrefillTokens int    `json:"potential_prefill_tokens"`
		PotentialDecodeBlocks  int    `json:"potential_decode_blocks"`
		ActiveRequests         int    `json:"active_requests"`
	}
	loadsReply struct {
		Loads            []load      `json:"loads"`
		PendingCount     int         `json:"pending_count"`
		PendingISLTokens int         `json:"pending_isl_tokens"`
		Error            *replyError `json:"error"`
	}
	replyError struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	}
)

func (e *replyError) String() string {
	if e == nil {
		return "<nil>"
	}
	return e.Code + ": " + e.Message
}

func book(b bool) *bool { return &b }

// ask sends req (a []byte is sent as is, anything else as JSON) to an
// endpoint, once, through the client (client.Do), and decodes the reply
// into reply. It returns transport and decoding errors; a reply carrying
// an error is not one.
func (f *fleet) ask(ctx context.Context, endpoint string, req, reply any) error {
	data, ok := req.([]byte)
	if !ok {
		var err error
		if data, err = json.Marshal(req); err != nil {
			return err
		}
	}
	raw, err := f.rc.Do(ctx, client.Endpoint(endpoint), data)
	if raw == nil {
		return fmt.Errorf("%s: %w", endpoint, err)
	}
	if err := json.Unmarshal(raw, reply); err != nil {
		return fmt.Errorf("%s: reply %q: %w", endpoint, raw, err)
	}
	return nil
}

// call is ask that fails the test on a transport or decoding error.
func (f *fleet) call(endpoint string, req, reply any) {
	f.t.Helper()
	if err := f.ask(context.Background(), endpoint, req, reply); err != nil {
		f.t.Fatal(err)
	}
}

// route asks route and fails the test unless the router chose a worker.
func (f *fleet) route(req routeRequest) routeReply {
	f.t.Helper()
	var r routeReply
	f.call("route", req, &r)
	if r.Error != nil {
		f.t.Fatalf("route %+v: error %s", req, r.Error)
	}
	return r
}

// mark asks mark_prefill or mark_free and returns success.
func (f *fleet) mark(endpoint string, req markRequest) bool {
	f.t.Helper()
	var r markReply
	f.call(endpoint, req, &r)
	if r.Error != nil {
		f.t.Fatalf("%s %+v: error %s", endpoint, req, r.Error)
	}
	return r.Success
}

// overlaps asks overlap_scores.
func (f *fleet) overlaps(req promptRequest) overlapReply {
	f.t.Helper()
	var r overlapReply
	f.call("overlap_scores", req, &r)
	if r.Error != nil {
		f.t.Fatalf("overlap_scores: error %s", r.Error)
	}
	return r
}

// scrape fetches and parses the router's /metrics.
func (c *routerProc) scrape() (exposition string, fams map[string]*dto.MetricFamily, err error) {
	code, body := c.get("/metrics")
	if code != 200 {
		return body, nil, fmt.Errorf("/metrics: status %d: %.200s", code, body)
	}
	p := expfmt.NewTextParser(model.LegacyValidation)
	fams, err = p.TextToMetricFamilies(strings.NewReader(body))
	return body, fams, err
}

// mustScrape is scrape that fails the test on an error.
func (c *routerProc) mustScrape() map[string]*dto.MetricFamily {
	c.t.Helper()
	_, fams, err := c.scrape()
	if err != nil {
		c.t.Fatal(err)
	}
	return fams
}

// samples returns the values of the series of a counter or gauge family
// whose labels include every pair of match.
func samples(fams map[string]*dto.MetricFamily, name string, match map[string]string) []float64 {
	var out []float64
	mf := fams[name]
	if mf == nil {
		return nil
	}
next:
	for _, m := range mf.GetMetric() {
		labels := map[string]string{}
		for _, lp := range m.GetLabel() {
			labels[lp.GetName()] = lp.GetValue()
		}
		for k, v := range match {
			if labels[k] != v {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			out = append(out, m.GetCounter().GetValue())
		case m.Gauge != nil:
			out = append(out, m.GetGauge().GetValue())
		case m.Untyped != nil:
			out = append(out, m.GetUntyped().GetValue())
		default:
			out = append(out, math.NaN())
		}
	}
	return out
}

// sum adds values; the sum of nothing is 0.
func sum(vs []float64) float64 {
	var s float64
	for _, v := range vs {
		s += v
	}
	return s
}

// id renders a worker id as a label value.
func id(w *worker) string { return strconv.FormatUint(w.id, 10) }

// lazy formats as what its function returns when the message is printed,
// for Eventually messages about the last attempt.
type lazy func() string

func (l lazy) String() string { return l() }

// every wraps cond for testutil.Eventually so that it runs at most once per
// d: Eventually polls every 5 ms, right for a cheap check but wasteful for
// an HTTP scrape of a race-built router or a round of Prometheus queries.
func every(d time.Duration, cond func() bool) func() bool {
	var last time.Time
	return func() bool {
		if !last.IsZero() && time.Since(last) < d {
			return false
		}
		last = time.Now()
		return cond()
	}
}

// checkExposition runs promtool check metrics on a scrape and fails the
// test on any complaint that is not a known Dynamo-compatibility exception.
func checkExposition(t *testing.T, bins installed, exposition string) {
	t.Helper()
	check := exec.Command(bins.path(t, promtool), "check", "metrics")
	check.Stdin = strings.NewReader(exposition)
	out, err := check.CombinedOutput()
	if problems := promtoolProblems(string(out)); err != nil && len(problems) > 0 {
		t.Errorf("promtool check metrics found problems beyond the known Dynamo names:\n%s", strings.Join(problems, "\n"))
	}
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	var b bytes.Buffer
	if err := json.NewEncoder(&b).Encode(v); err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(b.String())
}
