package events

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/kvrouter/router/events/codec"
	"github.com/kvrouter/router/indexer"
)

func TestConfigValidate(t *testing.T) {
	if err := DefaultConfig().Validate(); err != nil {
		t.Fatalf("DefaultConfig: %v", err)
	}
	tests := []struct {
		name string
		edit func(*Config)
		want string // in the error; empty: valid
	}{
		{"no prefill component", func(c *Config) { c.PrefillComponent = "" }, ""},
		{"durable", func(c *Config) { c.Durable, c.RouterID = true, "7f3a" }, ""},
		{"empty namespace", func(c *Config) { c.Namespace = "" }, "--namespace"},
		{"dotted component", func(c *Config) { c.Component = "a.b" }, "--component"},
		{"wildcard prefill", func(c *Config) { c.PrefillComponent = "*" }, "--prefill-component"},
		{"prefill same as component", func(c *Config) { c.PrefillComponent = c.Component }, "--prefill-component"},
		{"no router component", func(c *Config) { c.RouterComponent = " " }, "--router-component"},
		{"no threads", func(c *Config) { c.EventThreads = 0 }, "--router-event-threads: 0 is out of range (allowed 1..1024)"},
		{"too many threads", func(c *Config) { c.EventThreads = 1025 }, "--router-event-threads"},
		{"no queue", func(c *Config) { c.QueueCapacity = 0 }, "--router-event-queue-capacity"},
		{"durable without id", func(c *Config) { c.Durable = true }, "--router-durable-kv-events"},
		{"durable with a dotted id", func(c *Config) { c.Durable, c.RouterID = true, "a.b" }, "router instance id"},
		{"durable, zero threshold", func(c *Config) { c.Durable, c.RouterID, c.SnapshotThreshold = true, "r", 0 }, "--router-snapshot-threshold"},
		{"durable, zero interval", func(c *Config) { c.Durable, c.RouterID, c.SnapshotInterval = true, "r", 0 }, "snapshot interval"},
		{"warm start off", func(c *Config) { c.WarmStartTimeout = 0 }, ""},
		{"warm start at its maximum", func(c *Config) { c.WarmStartTimeout = MaxWarmStartTimeout }, ""},
		{"negative warm start", func(c *Config) { c.WarmStartTimeout = -time.Second },
			"--router-warm-start-timeout: -1s is out of range (allowed 0 to 5m; 0 turns the warm start off)"},
		{"warm start too long", func(c *Config) { c.WarmStartTimeout = MaxWarmStartTimeout + 1 }, "--router-warm-start-timeout"},
		{"several problems, the last reported too", func(c *Config) { c.Namespace, c.EventThreads, c.QueueCapacity = "", 0, 0 }, "--router-event-queue-capacity: 0 is out of range (allowed 1..16777216)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := DefaultConfig()
			tt.edit(&c)
			err := c.Validate()
			switch {
			case tt.want == "" && err != nil:
				t.Errorf("Validate: %v", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Errorf("Validate = %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

// Validate reports every problem, one per line, each starting with its flag.
func TestConfigValidateReportsEveryProblem(t *testing.T) {
	c := DefaultConfig()
	c.Namespace, c.Component, c.EventThreads, c.QueueCapacity = "a.b", "", 0, -1
	err := c.Validate()
	if err == nil {
		t.Fatal("Validate accepted four bad fields")
	}
	var flags []string
	for _, line := range strings.Split(err.Error(), "\n") {
		flag, _, _ := strings.Cut(line, ":")
		flags = append(flags, flag)
	}
	want := []string{"--namespace", "--component", "--router-event-threads", "--router-event-queue-capacity"}
	if diff := cmp.Diff(want, flags); diff != "" {
		t.Errorf("flags of the lines of %q (-want +got):\n%s", err, diff)
	}
}

func TestNames(t *testing.T) {
	if diff := cmp.Diff([]string{"namespace.dynamo.component.backend.kv-events", "namespace.dynamo.component.backend.kv_events"},
		Subjects("dynamo", "backend")); diff != "" {
		t.Error(diff)
	}
	for _, tt := range []struct{ got, want string }{
		{StreamName("dynamo", "backend"), "namespace-dynamo-component-backend-kv-events"},
		{StreamName("my_ns", "Prefill"), "namespace-my-ns-component-prefill-kv-events"},
		{BucketName("dynamo", "backend"), "namespace-dynamo-component-backend-radix-bucket"},
	} {
		if tt.got != tt.want {
			t.Errorf("got %q, want %q", tt.got, tt.want)
		}
	}
}

// TestSnapshotEncoding: the snapshot lists the workers' ranks with their
// event_id baselines, then their blocks; decoding it gives the events back.
func TestSnapshotEncoding(t *testing.T) {
	w1, w2, other := indexer.Worker{ID: 1}, indexer.Worker{ID: 2, DPRank: 3}, indexer.Worker{ID: 9}
	dump := []indexer.Event{
		{Worker: w1, Kind: indexer.KindStored, Blocks: []indexer.Block{{Hash: 10, Tokens: 100}}},
		{Worker: other, Kind: indexer.KindStored, Blocks: []indexer.Block{{Hash: 90, Tokens: 100}}},
		{Worker: w1, Kind: indexer.KindStored, HasParent: true, Parent: 10, Blocks: []indexer.Block{{Hash: 11, Tokens: 101}}},
		{Worker: w1, Kind: indexer.KindStored, HasParent: true, Parent: 10, Blocks: []indexer.Block{{Hash: 11, Tokens: 101}}, Tier: indexer.TierDisk},
	}
	baselines := map[indexer.Worker]uint64{w1: 7, w2: 4, other: 1}
	data, n := encodeSnapshot(dump, baselines, map[indexer.WorkerID]struct{}{1: {}, 2: {}})
	evs, metas, err := decodeSnapshot(data)
	if err != nil {
		t.Fatalf("decodeSnapshot(%s): %v", data, err)
	}
	want := []indexer.Event{
		{Worker: w1, Kind: indexer.KindCleared},
		{Worker: w2, Kind: indexer.KindCleared},
		dump[0],
		dump[2],
		dump[3],
	}
	if n != len(want) {
		t.Errorf("encodeSnapshot counted %d events, want %d", n, len(want))
	}
	if diff := cmp.Diff(want, evs); diff != "" {
		t.Errorf("snapshot events (-want +got):\n%s", diff)
	}
	for i, m := range metas {
		if m.EventID != baselines[evs[i].Worker] {
			t.Errorf("event %d of %v carries event_id %d, want the baseline %d", i, evs[i].Worker, m.EventID, baselines[evs[i].Worker])
		}
	}
	owned := codec.AppendJSON([]byte("["), dump[0], codec.Meta{EventID: 1, CacheOwner: true})
	owned = append(append(owned, ','), codec.AppendJSON(nil, dump[3], codec.Meta{EventID: 1})...)
	evs, _, err = decodeSnapshot(append(owned, ']'))
	if err != nil || !cmp.Equal(evs, []indexer.Event{dump[3]}) {
		t.Errorf("snapshot with a cache_owner event: %+v, %v; want the other event alone", evs, err)
	}
	if _, _, err := decodeSnapshot([]byte(`[{"worker_id":1}]`)); err == nil {
		t.Error("a snapshot with a broken event decoded")
	}
	if evs, _, err := decodeSnapshot([]byte(" [ ] ")); err != nil || len(evs) != 0 {
		t.Errorf("empty snapshot: %v, %v", evs, err)
	}
}
