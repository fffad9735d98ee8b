package sim

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/nats-io/nats.go"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/kvrouter/router/events/codec"
	"github.com/kvrouter/router/indexer"
	"github.com/kvrouter/router/internal/testutil"
)

// startFleet runs a fleet on embedded NATS and etcd until the test ends.
func startFleet(t *testing.T, cfg FleetConfig) (*Fleet, *nats.Conn, *clientv3.Client, func()) {
	t.Helper()
	nsrv := testutil.NATS(t)
	esrv := testutil.Etcd(t)
	nc := testutil.NATSConn(t, nsrv.URL())
	cli := testutil.EtcdClient(t, esrv.Endpoint())
	f, err := NewFleet(cfg, nc, cli, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	// Not t.Context(): it ends before the cleanups run, and the fleet must
	// be stopped (and waited for) before the etcd client closes.
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.Run(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("fleet: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	select {
	case <-f.Ready():
	case err := <-done:
		once.Do(cancel) // Run has returned: nothing to wait for
		t.Fatalf("fleet stopped before it was ready: %v", err)
	case <-time.After(20 * time.Second):
		t.Fatal("fleet not ready within 20s")
	}
	return f, nc, cli, stop
}

func testFleetConfig(lockstep bool) FleetConfig {
	cfg := DefaultFleetConfig()
	cfg.Workers = 2
	cfg.Worker.Namespace = "simtest"
	cfg.Worker.Engine = testEngineConfig()
	cfg.Worker.LeaseID = 0x5100
	cfg.Worker.LoadInterval = 100 * time.Millisecond
	cfg.Lockstep = lockstep
	cfg.Speedup = 100
	return cfg
}

// client sends generate requests and reads their reply streams.
type client struct {
	t     *testing.T
	nc    *nats.Conn
	inbox string
	sub   *nats.Subscription
}

func newClient(t *testing.T, nc *nats.Conn) *client {
	inbox := nc.NewInbox()
	sub, err := nc.SubscribeSync(inbox)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	return &client{t: t, nc: nc, inbox: inbox, sub: sub}
}

func (c *client) send(subject string, req GenerateRequest) {
	b, _ := json.Marshal(req)
	if err := c.nc.PublishRequest(subject, c.inbox, b); err != nil {
		c.t.Fatal(err)
	}
}

func (c *client) next() GenerateReply {
	c.t.Helper()
	m, err := c.sub.NextMsg(10 * time.Second)
	if err != nil {
		c.t.Fatalf("no reply: %v", err)
	}
	var r GenerateReply
	if err := json.Unmarshal(m.Data, &r); err != nil {
		c.t.Fatal(err)
	}
	return r
}

func tokens(first uint32, n int) []uint32 {
	out := make([]uint32, n)
	for i := range out {
		out[i] = first + uint32(i)
	}
	return out
}

// TestFleetLockstep registers two workers, serves generate requests in
// lockstep, and checks etcd, the reply streams, the KV events (an index fed
// by them, through the router's own decoder, holds what the cache holds)
// and the withdrawal at shutdown.
func TestFleetLockstep(t *testing.T) {
	f, nc, cli, stop := startFleet(t, testFleetConfig(true))
	ctx := t.Context()

	kv, err := nc.SubscribeSync(EventsSubject("simtest", "backend"))
	if err != nil {
		t.Fatal(err)
	}
	load, err := nc.SubscribeSync(LoadSubject("simtest"))
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}

	// etcd: instances and cards on the fixed leases.
	ws := f.Workers()
	for i, w := range ws {
		if w.ID != uint64(0x5100+i) {
			t.Fatalf("worker %d has id %x, want %x", i, w.ID, 0x5100+i)
		}
		path := "simtest/backend/generate/" + strconv.FormatUint(w.ID, 16)
		resp, err := cli.Get(ctx, "v1/instances/"+path)
		if err != nil || len(resp.Kvs) != 1 || uint64(resp.Kvs[0].Lease) != w.ID {
			t.Fatalf("instance key of worker %d: %v %+v", i, err, resp)
		}
		var inst struct {
			InstanceID uint64            `json:"instance_id"`
			Transport  map[string]string `json:"transport"`
		}
		if err := json.Unmarshal(resp.Kvs[0].Value, &inst); err != nil || inst.InstanceID != w.ID || inst.Transport["nats_tcp"] != w.Subject {
			t.Fatalf("instance record %s: %v", resp.Kvs[0].Value, err)
		}
		resp, err = cli.Get(ctx, "v1/mdc/"+path)
		if err != nil || len(resp.Kvs) != 1 {
			t.Fatalf("model card of worker %d: %v", i, err)
		}
		var card cardRecord
		if err := json.Unmarshal(resp.Kvs[0].Value, &card); err != nil {
			t.Fatal(err)
		}
		wantCard := cardJSON{DisplayName: "sim-8b", KVCacheBlockSize: 4, ContextLength: 256,
			RuntimeConfig: runtimeConfig{TotalKVBlocks: 64, MaxNumSeqs: 8, MaxNumBatchedTokens: 64, DataParallelSize: 1}}
		if diff := cmp.Diff(wantCard, card.CardJSON); diff != "" {
			t.Fatalf("card (-want +got):\n%s", diff)
		}
	}

	c := newClient(t, nc)
	prompt := tokens(1, 10) // two full blocks of 4
	for round, wantCached := range []int{0, 2} {
		id := fmt.Sprint("r", round)
		c.send(ws[0].Subject, GenerateRequest{RequestID: id, TokenIDs: prompt, MaxTokens: 3})
		if r := c.next(); r.Event != ReplyAccepted || r.RequestID != id || r.WorkerID != ws[0].ID {
			t.Fatalf("first reply %+v, want accepted", r)
		}
		at := time.Duration(round) * time.Second
		if _, err := f.AdvanceTo(ctx, at+time.Second); err != nil {
			t.Fatal(err)
		}
		first, done := c.next(), c.next()
		if first.Event != ReplyFirstToken || done.Event != ReplyDone || done.OutputTokens != 3 ||
			first.CachedBlocks != wantCached || done.PromptBlocks != 2 || done.DoneAt <= first.FirstTokenAt ||
			first.ReceivedAt != at.Seconds() {
			t.Fatalf("round %d replies %+v, %+v: want first_token and done with %d cached blocks", round, first, done, wantCached)
		}
	}

	// Every event published reaches a subscriber and rebuilds the cache.
	pub := f.Published()
	if pub.Notices != 4 {
		t.Fatalf("%d notices published, want 4", pub.Notices)
	}
	idx := indexer.New(indexer.Config{})
	for range pub.Events {
		m, err := kv.NextMsg(5 * time.Second)
		if err != nil {
			t.Fatal(err)
		}
		ev, _, err := codec.DecodeJSON(m.Data)
		if err != nil {
			t.Fatalf("router decoder: %v", err)
		}
		if r := idx.Apply(ev); r.Status != indexer.StatusOK {
			t.Fatalf("index: %v", r.Status)
		}
	}
	var cached []CachedBlock
	f.Worker(0).Engine(func(e *Engine) { cached = e.Cache().Contents() })
	w0 := indexer.Worker{ID: indexer.WorkerID(ws[0].ID)}
	if got := idx.Size(w0); got != len(cached) || len(cached) != 2 {
		t.Fatalf("index holds %d blocks of worker 0, its cache %d (want 2)", got, len(cached))
	}

	// Load messages in Dynamo's classic shape.
	m, err := load.NextMsg(5 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var lm loadMessage
	if err := json.Unmarshal(m.Data, &lm); err != nil || lm.Data.KVStats.KVTotalBlocks != 64 || lm.Data.WorkerStats.RequestTotalSlots != 8 {
		t.Fatalf("load message %s: %v", m.Data, err)
	}

	// Shutdown revokes the leases: the keys go at once.
	stop()
	resp, err := cli.Get(context.Background(), "v1/", clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil || resp.Count != 0 {
		t.Fatalf("after shutdown etcd holds %d keys (%v), want 0", resp.Count, err)
	}
}

// TestFleetRealTime serves a request with a real-time fleet.
func TestFleetRealTime(t *testing.T) {
	f, nc, _, _ := startFleet(t, testFleetConfig(false))
	if _, err := f.AdvanceTo(t.Context(), time.Second); err != ErrNotLockstep {
		t.Fatalf("AdvanceTo on a real-time fleet = %v, want ErrNotLockstep", err)
	}
	c := newClient(t, nc)
	c.send(f.Workers()[1].Subject, GenerateRequest{RequestID: "a", TokenIDs: tokens(1, 9), MaxTokens: 5})
	for _, want := range []ReplyEvent{ReplyAccepted, ReplyFirstToken, ReplyDone} {
		if r := c.next(); r.Event != want {
			t.Fatalf("reply %+v, want %s", r, want)
		}
	}
	if st := f.Stats()[1]; st.Finished != 1 || st.PromptBlocks != 2 {
		t.Fatalf("worker 1 stats %+v", st)
	}
}

func TestFleetConfigValidate(t *testing.T) {
	if err := DefaultFleetConfig().Validate(); err != nil {
		t.Fatal(err)
	}
	c := DefaultFleetConfig()
	c.Workers, c.Worker.Namespace, c.Speedup = 0, "a.b", 0
	err := c.Validate()
	for _, flag := range []string{"--workers", "--namespace", "--speedup"} {
		if err == nil || !strings.Contains(err.Error(), flag) {
			t.Fatalf("Validate = %v, want it to name %s", err, flag)
		}
	}
}
