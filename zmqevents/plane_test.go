package zmqevents

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	promtest "github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/kvrouter/router/events/codec"
	"github.com/kvrouter/router/indexer"
	"github.com/kvrouter/router/internal/testutil"
	"github.com/kvrouter/router/internal/zmqtest"
	"github.com/kvrouter/router/metrics"
)

func channelValue(ns, comp string, id uint64, endpoint string) string {
	return fmt.Sprintf(`{"type":"EventChannel","namespace":%q,"component":%q,"topic":"kv-events","instance_id":%d,`+
		`"transport":{"kind":"Zmq","config":{"endpoint":%q}}}`, ns, comp, id, endpoint)
}

func TestParseChannel(t *testing.T) {
	const id = 7587890617371926017
	key := ChannelPrefix("dynamo", "backend") + fmt.Sprintf("%x", uint64(id))
	good := channelValue("dynamo", "backend", id, "tcp://10.1.2.3:41233")
	ch, err := ParseChannel("dynamo", "backend", key, []byte(good))
	if err != nil {
		t.Fatal(err)
	}
	if ch.InstanceID != id || ch.Endpoint != "tcp://10.1.2.3:41233" {
		t.Errorf("got %+v", ch)
	}
	// Unknown fields are Dynamo's to add.
	if _, err := ParseChannel("dynamo", "backend", key, []byte(strings.Replace(good, `"topic"`, `"new_field":[1,{}],"topic"`, 1))); err != nil {
		t.Errorf("unknown field: %v", err)
	}
	for _, tc := range []struct {
		name, key, value, want string
	}{
		{"not json", key, `{`, "unexpected EOF"},
		{"wrong type", key, strings.Replace(good, "EventChannel", "Instance", 1), `type: "Instance"`},
		{"other namespace", key, strings.Replace(good, `"namespace":"dynamo"`, `"namespace":"x"`, 1), `namespace: "x"`},
		{"other topic", key, strings.Replace(good, `"topic":"kv-events"`, `"topic":"metrics"`, 1), `topic: "metrics"`},
		{"id disagrees", key, channelValue("dynamo", "backend", 5, "tcp://h:1"), "instance_id: 5, the key says"},
		{"id missing", key, strings.Replace(good, fmt.Sprintf(`"instance_id":%d,`, uint64(id)), "", 1), "instance_id: missing"},
		{"id negative", key, strings.Replace(good, fmt.Sprint(uint64(id)), "-1", 1), "instance_id"},
		{"nats transport", key, strings.Replace(good, `"Zmq"`, `"Nats"`, 1), `transport.kind: "Nats"`},
		{"bind address", key, channelValue("dynamo", "backend", id, "tcp://*:5557"), "bind address"},
		{"no port", key, channelValue("dynamo", "backend", id, "tcp://host"), "no host:port"},
		{"bad port", key, channelValue("dynamo", "backend", id, "tcp://host:99999"), "not in 1..65535"},
		{"key not hex", ChannelPrefix("dynamo", "backend") + "xyz", good, "not hexadecimal"},
		{"key nested", ChannelPrefix("dynamo", "backend") + "a/b", good, "want v1/event_channels"},
		{"trailing data", key, good + `{}`, "data after the record"},
		{"huge", key, strings.Repeat(" ", maxChannelBytes+1), "over the"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseChannel("dynamo", "backend", tc.key, []byte(tc.value))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want it to contain %q", err, tc.want)
			}
		})
	}
}

func FuzzParseChannel(f *testing.F) {
	key := ChannelPrefix("dynamo", "backend") + "1f"
	f.Add(key, channelValue("dynamo", "backend", 31, "tcp://10.1.2.3:41233"))
	f.Add(key, `{"type":"EventChannel","transport":{"kind":"Zmq","config":{"endpoint":"ipc:///x"}}}`)
	f.Fuzz(func(t *testing.T, key, value string) {
		ch, err := ParseChannel("dynamo", "backend", key, []byte(value))
		if err != nil {
			return
		}
		// An accepted record names a dialable endpoint and the key's id.
		if err := CheckAddr(ch.Endpoint); err != nil {
			t.Fatalf("accepted endpoint %q: %v", ch.Endpoint, err)
		}
		seg := key[strings.LastIndexByte(key, '/')+1:]
		if id, err := strconv.ParseUint(seg, 16, 64); err != nil || id != ch.InstanceID {
			t.Fatalf("accepted id %d for key %q", ch.InstanceID, key)
		}
	})
}

func FuzzReplayFrames(f *testing.F) {
	f.Add([]byte{}, []byte("kv"), []byte{0, 0, 0, 0, 0, 0, 0, 1}, []byte{0x90})
	f.Add([]byte{}, []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, []byte{}, []byte(nil))
	f.Fuzz(func(t *testing.T, a, b, c, d []byte) {
		for _, frames := range [][][]byte{{a}, {a, b}, {a, b, c}, {a, b, c, d}} {
			seq, payload, end, err := replayFrames(frames)
			if err == nil && !end && (len(payload) == 0 || seq == endOfReplay) {
				t.Fatalf("frames %q: a batch without payload or with the end sequence", frames)
			}
		}
	})
}

// TestEventPlane: Dynamo's ZMQ event plane end to end in one process: a
// channel record in a real (embedded) etcd, a go-zeromq publisher sending
// 4-frame envelopes, the index fed like from NATS, and the record's
// removal disconnecting the publisher.
func TestEventPlane(t *testing.T) {
	h := newHarness(t)
	etcd := testutil.Etcd(t)
	cli := testutil.EtcdClient(t, etcd.Endpoint())
	pub, err := zmqtest.NewEngine(zmqtest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pub.Close)
	const id = 0x694d9a3a1b2c3d01
	key := ChannelPrefix("dynamo", "backend") + fmt.Sprintf("%x", uint64(id))
	// A malformed record beside it is counted and skipped.
	bad := ChannelPrefix("dynamo", "backend") + "beef"
	ctx := context.Background()
	if _, err := cli.Put(ctx, bad, `{"type":"EventChannel"}`); err != nil {
		t.Fatal(err)
	}
	plane, err := NewPlane(cli, h.src, "dynamo", []string{"backend"}, h.m, nil)
	if err != nil {
		t.Fatal(err)
	}
	pctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- plane.Run(pctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	if _, err := cli.Put(ctx, key, channelValue("dynamo", "backend", id, pub.Addr())); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, pub.Subscribed, "subscribed through discovery")

	worker := indexer.Worker{ID: 77, DPRank: 1}
	ev := indexer.Event{Worker: worker, Kind: indexer.KindStored, Blocks: []indexer.Block{
		{Hash: 1, Tokens: indexer.LocalHash(localOf(t, seq(1, 4)))},
		{Hash: 2, Tokens: indexer.LocalHash(localOf(t, seq(5, 8)))},
	}}
	if err := pub.PublishFrames(zmqtest.PlaneMessage(KVEventsTopic, id, 0, codec.AppendJSON(nil, ev, codec.Meta{EventID: 1}))...); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, func() bool { h.sync(); return h.overlap(worker, seq(1, 8)) == 2 }, "plane event applied")
	// A message of other frames is rejected and counted.
	if err := pub.PublishFrames([]byte(KVEventsTopic), []byte("x")); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, func() bool {
		return promtest.ToFloat64(h.zm.Events.DecodeErrors.WithLabelValues(metrics.DecodeZMQFrame)) == 1
	}, "bad frames counted")
	mal, err := h.m.DiscoveryMalformed()
	if err != nil {
		t.Fatal(err)
	}
	if got := promtest.ToFloat64(mal.WithLabelValues(metrics.DiscoveryEventChannel)); got != 1 {
		t.Errorf("malformed event channels = %v, want 1", got)
	}
	if _, err := cli.Delete(ctx, key); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, func() bool { return len(h.src.Status()) == 0 }, "publisher dropped with its record")
}

// localOf is the LocalBlockHash of one block of tokens.
func localOf(t *testing.T, tokens []uint32) uint64 {
	t.Helper()
	return mustHasher(t).LocalHashes(nil, tokens)[0]
}

func TestEngineEndpoints(t *testing.T) {
	eps, err := EngineEndpoints(26, 3, "tcp://10.0.0.5:5557", "tcp://10.0.0.5:5600", "kv", EngineSGLang)
	if err != nil {
		t.Fatal(err)
	}
	for r, want := range []string{"tcp://10.0.0.5:5557", "tcp://10.0.0.5:5558", "tcp://10.0.0.5:5559"} {
		ep := eps[r]
		if ep.Addr != want || ep.Rank != (indexer.Worker{ID: 26, DPRank: indexer.DPRank(r)}) || ep.Topic != "kv" || ep.Engine != EngineSGLang {
			t.Errorf("rank %d: %+v, want address %s", r, ep, want)
		}
	}
	if eps[2].Replay != "tcp://10.0.0.5:5602" {
		t.Errorf("rank 2 replay %q", eps[2].Replay)
	}
	if eps, err := EngineEndpoints(1, 2, "ipc:///run/kv", "", "", EngineVLLM); err != nil || eps[1].Addr != "ipc:///run/kv_dp1" || eps[1].Replay != "" {
		t.Errorf("ipc: %+v, %v", eps, err)
	}
	if _, err := EngineEndpoints(1, 2, "tcp://h:65535", "", "", EngineVLLM); err == nil || !strings.Contains(err.Error(), "past 65535") {
		t.Errorf("port overflow: %v", err)
	}
}
