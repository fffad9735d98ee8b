package warmstart

import (
	"context"
	"errors"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/nats-io/nats.go"
	promtest "github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/kvrouter/router/events"
	"github.com/kvrouter/router/events/codec"
	"github.com/kvrouter/router/indexer"
	"github.com/kvrouter/router/internal/testutil"
	"github.com/kvrouter/router/metrics"
)

// join runs a warm start of n as router id with timeout.
func (n *node) join(id uint64, timeout time.Duration) (Result, *Metrics) {
	n.t.Helper()
	cfg := config(id)
	cfg.Timeout = timeout
	j, err := NewJoiner(cfg, n.nc, n.m, slog.New(slog.NewTextHandler(n.log, nil)))
	if err != nil {
		n.t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := j.Join(ctx, n.w)
	if err != nil {
		n.t.Fatalf("Join: %v", err)
	}
	if n.w.Holding() {
		n.t.Error("the writer still holds events after Join")
	}
	return res, j.m
}

func (n *node) eventMetrics() *events.Metrics {
	em, err := events.NewMetrics(n.m)
	if err != nil {
		n.t.Fatal(err)
	}
	return em
}

// TestJoinLoadsPeerIndex: a peer serves its index in many small chunks
// while the workers keep publishing; the joiner loads it, applies what it
// held, and ends with the peer's index, without one stored event rejected
// for an unknown parent and without a gap.
func TestJoinLoadsPeerIndex(t *testing.T) {
	url := testutil.NATS(t).URL()
	ranks := []indexer.Worker{{ID: 1}, {ID: 1, DPRank: 1}, {ID: 2}}
	pub := newPublisher(t, url, ranks...)
	peer := newNode(t, url, false)
	peer.serve(1, 256)
	pub.publish(200)
	peer.waitEntries(200 * len(ranks))

	joiner := newNode(t, url, true)
	var wg sync.WaitGroup
	wg.Go(func() { pub.publish(200) }) // while the joiner asks, is sent and loads
	res, wm := joiner.join(2, 10*time.Second)
	wg.Wait()
	if res.Result != metrics.WarmStartLoaded || res.Err != nil {
		t.Fatalf("result %+v, want loaded", res)
	}
	if res.Chunks < 50 || res.Peer != "1" || res.Events < 200*len(ranks) || res.Bytes == 0 {
		t.Errorf("result %+v: want ≥ 50 chunks of 256 bytes, peer 1, ≥ %d events", res, 200*len(ranks))
	}
	peer.waitEntries(400 * len(ranks))
	joiner.waitEntries(400 * len(ranks))
	if diff := cmp.Diff(peer.dump(), joiner.dump()); diff != "" {
		t.Errorf("joiner's index differs from the peer's (-peer +joiner):\n%s", diff)
	}
	em := joiner.eventMetrics()
	if n := promtest.ToFloat64(em.Applied.WithLabelValues(metrics.EventStored, metrics.StatusParentBlockNotFound)); n != 0 {
		t.Errorf("joiner rejected %v stored events for an unknown parent", n)
	}
	if n := promtest.ToFloat64(em.Missed); n != 0 {
		t.Errorf("joiner counted %v missed events", n)
	}
	if n := promtest.ToFloat64(wm.Total.WithLabelValues(metrics.WarmStartLoaded)); n != 1 {
		t.Errorf("warm_start_total{loaded} = %v, want 1", n)
	}
	if n := promtest.ToFloat64(wm.Events); n != float64(res.Events) {
		t.Errorf("warm_start_events = %v, want %d", n, res.Events)
	}
	for _, want := range []string{"warm start: index loaded from a peer", "peer_router_id=1", "chunks=" + strconv.Itoa(res.Chunks)} {
		if !strings.Contains(joiner.log.String(), want) {
			t.Errorf("joiner's log lacks %q:\n%s", want, joiner.log.String())
		}
	}
	if !strings.Contains(peer.log.String(), "index snapshot sent to a joining replica") {
		t.Errorf("peer's log lacks the snapshot it sent:\n%s", peer.log.String())
	}
}

// TestJoinWithoutPeer: no replica serves snapshots (NATS no responders):
// the joiner says so at once and starts from the events it held.
func TestJoinWithoutPeer(t *testing.T) {
	url := testutil.NATS(t).URL()
	pub := newPublisher(t, url, indexer.Worker{ID: 5})
	joiner := newNode(t, url, true)
	pub.publish(10)
	testutil.Eventually(t, 10*time.Second, func() bool { return joiner.sub.Stats().Received == 10 }, "10 events received")
	start := time.Now()
	res, wm := joiner.join(2, 10*time.Second)
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("no peer took %v to find out", d)
	}
	if res.Result != metrics.WarmStartNoPeer || !errors.Is(res.Err, ErrNoPeer) {
		t.Fatalf("result %+v, want no_peer", res)
	}
	if res.Held != 10 {
		t.Errorf("released %d held events, want 10", res.Held)
	}
	joiner.waitEntries(10)
	if n := promtest.ToFloat64(wm.Total.WithLabelValues(metrics.WarmStartNoPeer)); n != 1 {
		t.Errorf("warm_start_total{no_peer} = %v, want 1", n)
	}
	if s := joiner.log.String(); !strings.Contains(s, "no peer serves index snapshots") || strings.Contains(s, "level=WARN") {
		t.Errorf("want one info line about no peer, no warning:\n%s", s)
	}
}

// fakePeer answers snapshot requests with the messages of reply (each a
// header and a body) until the test ends.
func fakePeer(t *testing.T, url string, reply func() []*nats.Msg) {
	t.Helper()
	nc := testutil.NATSConn(t, url)
	_, err := nc.QueueSubscribe(Subject(testNS, "router"), "router", func(req *nats.Msg) {
		for _, m := range reply() {
			m.Subject = req.Reply
			if err := nc.PublishMsg(m); err != nil {
				t.Error(err)
			}
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
}

// chunk is one reply message with the snapshot headers.
func chunk(idx, chunks, bytes int, data string) *nats.Msg {
	m := nats.NewMsg("")
	m.Header.Set(HeaderChunk, strconv.Itoa(idx))
	m.Header.Set(HeaderChunks, strconv.Itoa(chunks))
	m.Header.Set(HeaderBytes, strconv.Itoa(bytes))
	m.Header.Set(HeaderEvents, "1")
	m.Header.Set(HeaderRouter, "9")
	m.Data = []byte(data)
	return m
}

// TestJoinFallsBack: a peer whose reply is wrong in any way makes the
// joiner say what was wrong, once, as a warning, load nothing of it, and
// start from the events it held.
func TestJoinFallsBack(t *testing.T) {
	good := string(codec.AppendJSON([]byte("["), indexer.Event{Worker: indexer.Worker{ID: 9}, Kind: indexer.KindStored,
		Blocks: []indexer.Block{{Hash: 77, Tokens: 77}}}, codec.Meta{EventID: 1})) + "]"
	errMsg := nats.NewMsg("")
	errMsg.Header.Set(HeaderError, "kv events: durable mode serves no snapshots to peers")
	for _, tc := range []struct {
		name    string
		reply   []*nats.Msg
		timeout time.Duration
		result  string
		is      error
		says    string
	}{
		{"chunk missing", []*nats.Msg{chunk(0, 3, 3, "a"), chunk(2, 3, 3, "c")}, 0, metrics.WarmStartFailed, ErrChunk,
			"chunk 2 arrived where chunk 1 was expected (chunk 1 missing or out of order)"},
		{"chunk twice", []*nats.Msg{chunk(0, 2, 2, "a"), chunk(0, 2, 2, "a")}, 0, metrics.WarmStartFailed, ErrChunk, "chunk 0 arrived twice"},
		{"first chunk missing", []*nats.Msg{chunk(1, 2, 2, "b")}, 0, metrics.WarmStartFailed, ErrChunk, "chunk 1 arrived first: chunk 0 is missing"},
		{"short", []*nats.Msg{chunk(0, 1, 100, "[]")}, 0, metrics.WarmStartFailed, ErrChunk, "the 1 chunks hold 2 bytes, 100 announced"},
		{"headers change", []*nats.Msg{chunk(0, 2, 4, "ab"), chunk(1, 3, 4, "cd")}, 0, metrics.WarmStartFailed, ErrChunk,
			"chunk 1 announces 3 chunks"},
		{"bad header", []*nats.Msg{chunk(0, 2, 4, "ab"), func() *nats.Msg { m := chunk(1, 2, 4, "cd"); m.Header.Set(HeaderChunk, "one"); return m }()},
			0, metrics.WarmStartFailed, ErrChunk, `header Kvr-Snapshot-Chunk: "one" is not a number`},
		{"peer error", []*nats.Msg{errMsg}, 0, metrics.WarmStartFailed, ErrPeer, "durable mode serves no snapshots"},
		{"stops mid-way", []*nats.Msg{chunk(0, 3, 3, "a")}, 300 * time.Millisecond, metrics.WarmStartTimeout, ErrTimeout,
			"1 of 3 chunks received (1 of 3 bytes)"},
		{"does not decode", []*nats.Msg{chunk(0, 2, 17, `[{"worker_id"`), chunk(1, 2, 17, `:1}]`)}, 0, metrics.WarmStartFailed,
			codec.ErrSchema, "peer 9's snapshot"},
		{"truncated JSON", []*nats.Msg{chunk(0, 1, len(good)-1, good[:len(good)-1])}, 0, metrics.WarmStartFailed,
			codec.ErrMalformedJSON, "peer 9's snapshot"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			url := testutil.NATS(t).URL()
			fakePeer(t, url, func() []*nats.Msg { return tc.reply })
			pub := newPublisher(t, url, indexer.Worker{ID: 5})
			joiner := newNode(t, url, true)
			pub.publish(4)
			testutil.Eventually(t, 10*time.Second, func() bool { return joiner.sub.Stats().Received == 4 }, "4 events received")
			timeout := tc.timeout
			if timeout == 0 {
				timeout = 10 * time.Second
			}
			res, wm := joiner.join(2, timeout)
			if res.Result != tc.result || !errors.Is(res.Err, tc.is) {
				t.Fatalf("result %q, error %v; want %q wrapping %v", res.Result, res.Err, tc.result, tc.is)
			}
			if !strings.Contains(res.Err.Error(), tc.says) {
				t.Errorf("error %q does not say %q", res.Err, tc.says)
			}
			if res.Events != 0 || res.Held != 4 {
				t.Errorf("loaded %d events and released %d held; want 0 and 4", res.Events, res.Held)
			}
			joiner.waitEntries(4) // the held events, nothing of the peer's
			if got := joiner.idx.FindMatches([]indexer.LocalHash{77}, false, nil); len(got) != 0 {
				t.Errorf("something of the bad snapshot was loaded: %v", got)
			}
			if n := promtest.ToFloat64(wm.Total.WithLabelValues(tc.result)); n != 1 {
				t.Errorf("warm_start_total{%s} = %v, want 1", tc.result, n)
			}
			if n := strings.Count(joiner.log.String(), "level=WARN"); n != 1 {
				t.Errorf("%d warnings, want 1:\n%s", n, joiner.log.String())
			}
		})
	}
}
