package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/kvrouter/router/internal/testutil"
	"github.com/kvrouter/router/internal/zmqtest"
	"github.com/kvrouter/router/zmqevents"
)

// pythonZMQ is Debian's Python with libzmq and MessagePack bindings, which
// plays a vLLM engine (testdata/fake_vllm.py).
const pythonZMQ program = "python3-zmq"

// fakeEngine is testdata/fake_vllm.py, a libzmq publisher playing vLLM,
// driven over its stdin.
type fakeEngine struct {
	t   *testing.T
	cmd *exec.Cmd
	in  io.WriteCloser
	out *bufio.Scanner
}

// startFakeEngine starts the fake engine with dp ranks on consecutive ports
// from pub and replay, retrying on other ports if they are taken.
func startFakeEngine(t *testing.T, python string, dp int, topic, format string) (e *fakeEngine, pub, replay int) {
	t.Helper()
	script, err := filepath.Abs("testdata/fake_vllm.py")
	if err != nil {
		t.Fatal(err)
	}
	for attempt := 0; attempt < 20; attempt++ {
		pub, replay = testutil.FreePort(t), testutil.FreePort(t)
		cmd := exec.Command(python, script, "--pub-port", strconv.Itoa(pub), "--replay-port", strconv.Itoa(replay),
			"--dp", strconv.Itoa(dp), "--topic", topic, "--format", format)
		cmd.Stderr = os.Stderr
		in, err := cmd.StdinPipe()
		if err != nil {
			t.Fatal(err)
		}
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		e = &fakeEngine{t: t, cmd: cmd, in: in, out: bufio.NewScanner(stdout)}
		var ready struct {
			OK    bool   `json:"ok"`
			Error string `json:"error"`
		}
		if e.out.Scan() && json.Unmarshal(e.out.Bytes(), &ready) == nil && ready.OK {
			t.Cleanup(e.stop)
			return e, pub, replay
		}
		e.stop()
		t.Logf("fake engine did not start on %d/%d (%s); trying other ports", pub, replay, ready.Error)
	}
	t.Fatal("fake engine never started")
	return nil, 0, 0
}

func (e *fakeEngine) stop() {
	_ = e.in.Close()
	done := make(chan error, 1)
	go func() { done <- e.cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = e.cmd.Process.Kill()
		<-done
	}
}

// do sends one command and returns its reply; a reply that is not ok fails
// the test.
func (e *fakeEngine) do(cmd map[string]any) map[string]any {
	e.t.Helper()
	b, _ := json.Marshal(cmd)
	if _, err := e.in.Write(append(b, '\n')); err != nil {
		e.t.Fatalf("fake engine: %v", err)
	}
	if !e.out.Scan() {
		e.t.Fatalf("fake engine: no reply to %s: %v", b, e.out.Err())
	}
	var reply map[string]any
	if err := json.Unmarshal(e.out.Bytes(), &reply); err != nil || reply["ok"] != true {
		e.t.Fatalf("fake engine: %s -> %s (%v)", b, e.out.Bytes(), err)
	}
	return reply
}

// tiered is one worker's entry of overlap_scores, with its tiers.
type tiered struct {
	WorkerID      uint64         `json:"worker_id"`
	DPRank        uint32         `json:"dp_rank"`
	OverlapBlocks int            `json:"overlap_blocks"`
	Tiers         map[string]int `json:"tiers"`
}

// engineFixture is a fake engine (testdata/fake_vllm.py) with dp ranks, and
// the router binary in front of it with a workers file and no etcd at all.
type engineFixture struct {
	t         *testing.T
	eng       *fakeEngine
	r         *routerProc
	httpBase  string
	blockSize int
	dp        int
}

func startEngineFixture(t *testing.T, format string, dp int) *engineFixture {
	t.Helper()
	bins := need(t, natsServer, pythonZMQ)
	f := &engineFixture{t: t, blockSize: 16, dp: dp}
	var pubPort, replayPort int
	f.eng, pubPort, replayPort = startFakeEngine(t, bins.path(t, pythonZMQ), dp, "kv-events", format)

	natsPort := testutil.FreePort(t)
	testutil.Start(t, bins.path(t, natsServer), "-a", "127.0.0.1", "-p", strconv.Itoa(natsPort))
	file := filepath.Join(t.TempDir(), "workers.json")
	workersFile := fmt.Sprintf(`{"workers": [{"worker_id": 26, "component": "backend", "block_size": %d, "data_parallel_size": %d,
		"total_kv_blocks": 8192, "max_num_seqs": 256, "max_num_batched_tokens": 8192, "url": "http://127.0.0.1:8000",
		"kv_events": {"endpoint": "tcp://127.0.0.1:%d", "replay_endpoint": "tcp://127.0.0.1:%d", "topic": "kv-events", "engine": %q}}]}`,
		f.blockSize, dp, pubPort, replayPort, format)
	if err := os.WriteFile(file, []byte(workersFile), 0o600); err != nil {
		t.Fatal(err)
	}
	statusPort, httpPort := testutil.FreePort(t), testutil.FreePort(t)
	f.r = &routerProc{t: t, statusBase: "http://" + testutil.Addr(statusPort)}
	f.r.router = testutil.Start(t, routerBinary(t), "serve",
		"--nats-url", "nats://"+testutil.Addr(natsPort), "--etcd-endpoints", "",
		"--workers-file", file, "--router-block-size", strconv.Itoa(f.blockSize),
		"--system-host", "127.0.0.1", "--system-port", strconv.Itoa(statusPort),
		"--http-host", "127.0.0.1", "--http-port", strconv.Itoa(httpPort),
		"--log-format", "json", "--log-level", "debug")
	f.r.waitHealth(http.StatusOK, 60*time.Second)
	for rank := range dp {
		f.eng.do(map[string]any{"op": "wait_subscribed", "rank": rank, "timeout": 30})
	}
	f.httpBase = "http://" + testutil.Addr(httpPort)
	return f
}

// tokens are n blocks of consecutive token ids from from.
func (f *engineFixture) tokens(from, n int) []uint32 {
	out := make([]uint32, n*f.blockSize)
	for i := range out {
		out[i] = uint32(from + i)
	}
	return out
}

// scores returns each rank's overlap and tiers for a prompt (nil when the
// router does not answer).
func (f *engineFixture) scores(prompt []uint32, lora string) map[uint32]tiered {
	req := map[string]any{"token_ids": prompt}
	if lora != "" {
		req["lora_name"] = lora
	}
	body, _ := json.Marshal(req)
	resp, err := http.Post(f.httpBase+"/v1/overlap_scores", "application/json", bytes.NewReader(body))
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	var rep struct {
		Workers []tiered `json:"workers"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&rep); err != nil {
		return nil
	}
	out := map[uint32]tiered{}
	for _, w := range rep.Workers {
		out[w.DPRank] = w
	}
	return out
}

// expect waits until overlap_scores gives exactly want (overlap and host
// blocks per rank; a rank not in want: none).
func (f *engineFixture) expect(step string, prompt []uint32, lora string, want map[uint32]tiered) {
	f.t.Helper()
	var got map[uint32]tiered
	testutil.Eventually(f.t, 10*time.Second, func() bool {
		got = f.scores(prompt, lora)
		for rank := range uint32(f.dp) {
			g, w := got[rank], want[rank]
			if g.OverlapBlocks != w.OverlapBlocks || g.Tiers["host"] != w.Tiers["host"] {
				return false
			}
		}
		return true
	}, "%s: overlap_scores %+v, want %+v", step, lazyAny(func() any { return got }), want)
}

// store has the engine store blocks hs (tokens toks) under parent on rank.
func (f *engineFixture) store(rank int, parent any, hs []any, toks []uint32, extra map[string]any) map[string]any {
	cmd := map[string]any{"op": "store", "rank": rank, "hashes": hs, "parent": parent, "tokens": toks, "block_size": f.blockSize}
	for k, v := range extra {
		cmd[k] = v
	}
	return f.eng.do(cmd)
}

// hashes are n consecutive engine hashes from base.
func hashes(base uint64, n int) []any {
	out := make([]any, n)
	for i := range out {
		out[i] = base + uint64(i)
	}
	return out
}

func ov(n int) tiered { return tiered{OverlapBlocks: n} }

// TestVLLMEngineOverZMQ plays a vLLM engine with libzmq (Debian's
// python3-zmq and python3-msgpack) in front of the router binary with a
// workers file and no etcd at all: stores, removals, clears, a LoRA
// adapter, a CPU tier, a second data-parallel rank, a gap healed by the
// replay socket, a gap the replay can no longer heal, and an engine
// restart. After each step overlap_scores gives exactly the expected
// counts.
func TestVLLMEngineOverZMQ(t *testing.T) {
	f := startEngineFixture(t, "vllm", 2)
	eng, r, blockSize, tokens, store, expect := f.eng, f.r, f.blockSize, f.tokens, f.store, f.expect
	p := tokens(1000, 4)

	// 1. Stores: four blocks on rank 0, in two events chained by parent.
	store(0, nil, hashes(9_000_000_000_000_000_000, 2), p[:2*blockSize], nil)
	store(0, uint64(9_000_000_000_000_000_001), hashes(9_000_000_000_000_000_002, 2), p[2*blockSize:], nil)
	expect("stores", p, "", map[uint32]tiered{0: ov(4)})

	// 2. The second rank publishes on its own port.
	store(1, nil, hashes(500, 1), p[:blockSize], nil)
	expect("rank 1", p, "", map[uint32]tiered{0: ov(4), 1: ov(1)})

	// 3. A removal of the third block cuts rank 0's prefix to two.
	eng.do(map[string]any{"op": "remove", "rank": 0, "hashes": []any{uint64(9_000_000_000_000_000_002)}})
	expect("remove", p, "", map[uint32]tiered{0: ov(2), 1: ov(1)})

	// 4. A CPU copy of the second block (an offload: hashes only), then the
	// GPU evicts it: the block stays held, on the host tier.
	store(0, nil, []any{uint64(9_000_000_000_000_000_001)}, nil, map[string]any{"medium": "CPU", "block_size": 0})
	eng.do(map[string]any{"op": "remove", "rank": 0, "hashes": []any{uint64(9_000_000_000_000_000_001)}})
	expect("cpu tier", p, "", map[uint32]tiered{0: {OverlapBlocks: 2, Tiers: map[string]int{"host": 1}}, 1: ov(1)})

	// 5. A LoRA adapter's blocks match only prompts of that adapter.
	q := tokens(5000, 2)
	store(1, nil, hashes(700, 2), q, map[string]any{"lora_name": "sql-lora"})
	expect("lora, base model", q, "", map[uint32]tiered{})
	expect("lora, adapter", q, "sql-lora", map[uint32]tiered{1: ov(2)})

	// 6. A gap healed by replay: two batches the router never saw live.
	g := tokens(8000, 3)
	store(0, nil, hashes(800, 1), g[:blockSize], map[string]any{"live": false})
	store(0, uint64(800), hashes(801, 1), g[blockSize:2*blockSize], map[string]any{"live": false})
	store(0, uint64(801), hashes(802, 1), g[2*blockSize:], nil)
	expect("gap healed by replay", g, "", map[uint32]tiered{0: ov(3)})

	// 7. A gap replay cannot heal (the engine's buffer rolled over): a
	// removal lost, so the router clears rank 0 and keeps only what comes
	// after.
	eng.do(map[string]any{"op": "remove", "rank": 0, "hashes": []any{uint64(802)}, "live": false})
	eng.do(map[string]any{"op": "forget", "rank": 0})
	h := tokens(9000, 1)
	store(0, nil, hashes(900, 1), h, nil)
	expect("gap replay cannot heal: old blocks gone", g, "", map[uint32]tiered{})
	expect("gap replay cannot heal: p", p, "", map[uint32]tiered{1: ov(1)})
	expect("gap replay cannot heal: new block", h, "", map[uint32]tiered{0: ov(1)})

	// 8. The engine's rank 1 restarts: its sequence starts again at 0 and
	// its old blocks go.
	eng.do(map[string]any{"op": "restart", "rank": 1})
	n := tokens(9500, 1)
	store(1, nil, hashes(950, 1), n, nil)
	expect("restart: old blocks gone", p, "", map[uint32]tiered{})
	expect("restart: new block", n, "", map[uint32]tiered{1: ov(1)})

	// 9. A clear drops the rank's blocks.
	eng.do(map[string]any{"op": "clear", "rank": 1})
	expect("clear", n, "", map[uint32]tiered{})

	// The metrics saw both gaps and the restart.
	fams := r.mustScrape()
	if got := sum(samples(fams, "dynamo_router_zmq_gaps_total", map[string]string{"result": "replayed"})); got != 1 {
		t.Errorf("gaps replayed = %v, want 1", got)
	}
	if got := sum(samples(fams, "dynamo_router_zmq_gaps_total", map[string]string{"result": "cleared"})); got != 1 {
		t.Errorf("gaps cleared = %v, want 1", got)
	}
	if got := sum(samples(fams, "dynamo_router_zmq_restarts_total", nil)); got != 1 {
		t.Errorf("restarts = %v, want 1", got)
	}
	if got := sum(samples(fams, "dynamo_router_zmq_publishers", map[string]string{"state": "connected"})); got != 2 {
		t.Errorf("connected publishers = %v, want 2", got)
	}
}

type lazyAny func() any

func (l lazyAny) String() string { return fmt.Sprintf("%+v", l()) }

// TestDynamoEventPlaneZMQ runs the router binary with --event-plane zmq on
// Debian's etcd and nats-server: a worker registered in etcd publishes its
// RouterEvents on a ZMQ socket (go-zeromq, in the test) that its
// v1/event_channels/ record names, and overlap_scores follows them; when
// the record goes, the router hangs up.
func TestDynamoEventPlaneZMQ(t *testing.T) {
	bins := need(t, natsServer, etcdServer)
	const blockSize = 16
	c := newCluster(t, bins, "--event-plane", "zmq", "--router-block-size", strconv.Itoa(blockSize))
	f := newFleet(t, c, blockSize)
	w := f.register(8192)
	pub, err := zmqtest.NewEngine(zmqtest.Options{Topic: zmqevents.KVEventsTopic})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pub.Close)
	const publisher = 0x51ab
	key := zmqevents.ChannelPrefix(namespace, workerComponent) + fmt.Sprintf("%x", uint64(publisher))
	record := fmt.Sprintf(`{"type":"EventChannel","namespace":%q,"component":%q,"topic":"kv-events","instance_id":%d,`+
		`"transport":{"kind":"Zmq","config":{"endpoint":%q}}}`, namespace, workerComponent, publisher, pub.Addr())
	ctx := context.Background()
	if _, err := f.etcd.Put(ctx, key, record); err != nil {
		t.Fatal(err)
	}
	c.waitHealth(http.StatusOK, 60*time.Second)
	testutil.Eventually(t, 30*time.Second, pub.Subscribed, "router subscribed to the event-plane publisher")

	p := f.newPrompt(100, 3*blockSize)
	if err := pub.PublishFrames(zmqtest.PlaneMessage(zmqevents.KVEventsTopic, publisher, 0, storedEvent(w, p, 0, 3))...); err != nil {
		t.Fatal(err)
	}
	overlapOf := func() int {
		for _, o := range f.overlaps(promptRequest{TokenIDs: p.tokens}).Workers {
			if o.WorkerID == w.id {
				return o.OverlapBlocks
			}
		}
		return 0
	}
	testutil.Eventually(t, 10*time.Second, func() bool { return overlapOf() == 3 }, "overlap 3 after the stored event (got %d)", lazyAny(func() any { return overlapOf() }))

	if _, err := f.etcd.Delete(ctx, key); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, func() bool { return !pub.Subscribed() }, "router hung up when the record went")
	fams := c.mustScrape()
	if got := sum(samples(fams, "dynamo_router_zmq_messages_total", map[string]string{"engine": "dynamo"})); got != 1 {
		t.Errorf("event-plane messages = %v, want 1", got)
	}
}

// TestSGLangEngineOverZMQ plays SGLang with libzmq: positional events,
// engine hashes as signed 64-bit integers (negative ones included), and
// replay replies without the topic frame.
func TestSGLangEngineOverZMQ(t *testing.T) {
	f := startEngineFixture(t, "sglang", 1)
	p := f.tokens(2000, 4)
	// Hashes with the top bit set travel as negative integers.
	f.store(0, nil, hashes(1<<63+7, 2), p[:2*f.blockSize], nil)
	f.expect("stores", p, "", map[uint32]tiered{0: ov(2)})
	// Two pages the router never saw live, then one it sees: the gap heals
	// through the replay socket's older reply format.
	f.store(0, uint64(1<<63+8), hashes(1<<63+9, 1), p[2*f.blockSize:3*f.blockSize], map[string]any{"live": false})
	f.store(0, uint64(1<<63+9), hashes(1<<63+10, 1), p[3*f.blockSize:], map[string]any{"live": false})
	q := f.tokens(7000, 1)
	f.store(0, nil, hashes(77, 1), q, nil)
	f.expect("gap healed by replay", p, "", map[uint32]tiered{0: ov(4)})
	f.expect("the live page", q, "", map[uint32]tiered{0: ov(1)})
	f.eng.do(map[string]any{"op": "remove", "rank": 0, "hashes": []any{uint64(1<<63 + 8)}})
	f.expect("remove", p, "", map[uint32]tiered{0: ov(1)})
	f.eng.do(map[string]any{"op": "clear", "rank": 0})
	f.expect("clear", p, "", map[uint32]tiered{})
}
