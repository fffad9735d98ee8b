package main

import (
	"errors"
	"fmt"
	"io"
	"net/url"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/kvrouter/router/events"
	"github.com/kvrouter/router/httpapi"
	"github.com/kvrouter/router/scheduler"
	"github.com/kvrouter/router/service"
	"github.com/kvrouter/router/stack"
	"github.com/kvrouter/router/status"
	"github.com/kvrouter/router/workers"
)

// serveConfig is everything `router serve` is told, before it is split into
// the components' own configurations.
type serveConfig struct {
	NATSURL          string
	EtcdEndpoints    []string
	Namespace        string
	Component        string
	PrefillComponent string
	RouterComponent  string
	Embedded         bool
	DataDir          string
	SystemHost       string
	SystemPort       int
	SystemEnabled    bool
	HTTPHost         string
	HTTPPort         int
	HTTPEnabled      bool
	HealthPath       string
	LivePath         string
	StartingStatus   string
	LogFormat        string
	LogLevel         string
	ShutdownTimeout  time.Duration
	LeaseTTL         time.Duration
	MaxIndexEntries  int
	KVEvents         bool
	WorkersFile      string
	EventPlane       string

	Seed      uint64
	Events    events.Config
	Workers   workers.Config
	Scheduler scheduler.Config
	Service   service.Config
}

// The ranges serve checks itself, stated once for the check, its message
// and the flag's usage.
var (
	shutdownTimeouts = durationRange{time.Second, 5 * time.Minute}
	leaseTTLs        = durationRange{2 * time.Second, 5 * time.Minute}
)

// durationRange is an allowed range of durations, both ends included.
type durationRange struct{ min, max time.Duration }

func (r durationRange) contains(d time.Duration) bool { return d >= r.min && d <= r.max }

// String returns the range as a flag's usage and messages state it: 1s..5m.
func (r durationRange) String() string { return shortDuration(r.min) + ".." + shortDuration(r.max) }

// shortDuration prints whole minutes and seconds without their zero tails
// (5m, not 5m0s).
func shortDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// serveFlags are the flags of `router serve`, each with its environment
// variable; Dynamo's names where Dynamo has them.
func serveFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "nats-url", Value: "nats://127.0.0.1:4222", EnvVars: []string{"NATS_SERVER"}, Usage: "NATS server URL; with --embedded, where the embedded NATS listens"},
		&cli.StringFlag{Name: "etcd-endpoints", Value: "http://127.0.0.1:2379", EnvVars: []string{"ETCD_ENDPOINTS"}, Usage: "comma-separated etcd endpoints; with --embedded, where the embedded etcd listens; empty ('') runs without etcd, with --workers-file"},
		&cli.StringFlag{Name: "event-plane", Value: stack.EventPlaneNATS, EnvVars: []string{"DYN_EVENT_PLANE"}, Usage: "how Dynamo's workers publish KV events: nats (NATS subjects) or zmq (Dynamo's ZMQ event plane, publishers discovered in etcd under v1/event_channels/); the workers file's engines publish over ZMQ either way"},
		&cli.StringFlag{Name: "workers-file", EnvVars: []string{"DYN_ROUTER_WORKERS_FILE"}, Usage: "JSON file of workers registered nowhere (plain vLLM or SGLang), routed beside etcd's; read again on SIGHUP (docs/api.md §8)"},
		&cli.StringFlag{Name: "namespace", Value: "dynamo", EnvVars: []string{"DYN_NAMESPACE"}, Usage: "Dynamo namespace of the workers and the router"},
		&cli.StringFlag{Name: "component", Value: "backend", EnvVars: []string{"DYN_COMPONENT"}, Usage: "component of aggregated/decode workers"},
		&cli.StringFlag{Name: "prefill-component", Value: "prefill", EnvVars: []string{"DYN_PREFILL_COMPONENT"}, Usage: "component of prefill workers"},
		&cli.StringFlag{Name: "router-component", Value: "router", EnvVars: []string{"DYN_ROUTER_COMPONENT"}, Usage: "the router's own component: its NATS subjects, queue group and metrics labels"},
		&cli.StringFlag{Name: "endpoint", EnvVars: []string{"DYN_ENDPOINT"}, Usage: "workers' endpoint as Dynamo spells it, ns.component.endpoint; sets --namespace and --component"},
		&cli.BoolFlag{Name: "embedded", EnvVars: []string{"DYN_ROUTER_EMBEDDED"}, Usage: "also run NATS (with JetStream) and etcd inside the process, on the addresses of --nats-url and --etcd-endpoints"},
		&cli.StringFlag{Name: "data-dir", EnvVars: []string{"DYN_ROUTER_DATA_DIR"}, Usage: "with --embedded, where NATS and etcd keep their data (default: a temporary directory, removed at exit)"},
		&cli.StringFlag{Name: "system-host", Value: "0.0.0.0", EnvVars: []string{"DYN_SYSTEM_HOST"}, Usage: "status server host"},
		&cli.IntFlag{Name: "system-port", Value: -1, DefaultText: "unset (off)", EnvVars: []string{"DYN_SYSTEM_PORT"}, Usage: "status server port (/metrics, /health, /live); 0 picks a free port; unset (-1) turns the server off, as in Dynamo"},
		&cli.StringFlag{Name: "system-health-path", Value: "/health", EnvVars: []string{"DYN_SYSTEM_HEALTH_PATH"}, Usage: "path of the health probe"},
		&cli.StringFlag{Name: "system-live-path", Value: "/live", EnvVars: []string{"DYN_SYSTEM_LIVE_PATH"}, Usage: "path of the liveness probe"},
		&cli.StringFlag{Name: "system-starting-health-status", Value: "notready", EnvVars: []string{"DYN_SYSTEM_STARTING_HEALTH_STATUS"}, Usage: "health reported until every check has passed once: notready or ready"},
		&cli.StringFlag{Name: "http-host", Value: httpapi.DefaultHost, EnvVars: []string{"DYN_ROUTER_HTTP_HOST"}, Usage: "HTTP API host"},
		&cli.IntFlag{Name: "http-port", Value: -1, DefaultText: "unset (off)", EnvVars: []string{"DYN_ROUTER_HTTP_PORT"}, Usage: "HTTP API port: the NATS endpoints at POST /v1/route, /v1/mark_prefill, /v1/mark_free, /v1/overlap_scores, /v1/potential_loads with the same JSON; 0 picks a free port; unset (-1) turns it off"},
		&cli.StringFlag{Name: "log-format", Value: "auto", EnvVars: []string{"DYN_LOG_FORMAT"}, Usage: "auto (colour text on a terminal, JSON otherwise), text or json"},
		&cli.StringFlag{Name: "log-level", Value: "info", EnvVars: []string{"DYN_LOG_LEVEL"}, Usage: "debug, info, warn or error"},
		&cli.DurationFlag{Name: "shutdown-timeout", Value: 10 * time.Second, EnvVars: []string{"DYN_ROUTER_SHUTDOWN_TIMEOUT"}, Usage: "how long a SIGINT/SIGTERM shutdown may take before the router gives up waiting (" + shutdownTimeouts.String() + ")"},
		&cli.DurationFlag{Name: "lease-ttl", Value: 10 * time.Second, EnvVars: []string{"DYN_ROUTER_LEASE_TTL"}, Usage: "TTL of the router's own etcd lease, which names its instance id and holds its replica key v1/instances/{ns}/{router component}/route/{id hex} (" + leaseTTLs.String() + ")"},
		&cli.IntFlag{Name: "router-max-index-entries", Value: 0, EnvVars: []string{"DYN_ROUTER_MAX_INDEX_ENTRIES"}, Usage: "cap on (worker, block) entries in the KV index; past it the least recently used prefixes are evicted; 0 means no cap"},
		&cli.IntFlag{Name: "router-min-initial-workers", Value: 0, EnvVars: []string{"DYN_ROUTER_MIN_INITIAL_WORKERS"}, Usage: "not ready until this many workers are registered"},
		&cli.IntFlag{Name: "router-block-size", Value: workers.DefaultBlockSize, EnvVars: []string{"DYN_ROUTER_BLOCK_SIZE"}, Usage: "KV block size in tokens; must equal the engines' (a worker whose card differs is flagged)"},
		&cli.BoolFlag{Name: "router-kv-events", Value: true, EnvVars: []string{"DYN_ROUTER_USE_KV_EVENTS"}, Usage: "index the workers' KV events; off means approximate mode (see --no-router-kv-events)"},
		&cli.BoolFlag{Name: "no-router-kv-events", Usage: "approximate mode: ignore KV events and index each routing decision for --router-ttl-secs"},
		&cli.IntFlag{Name: "router-event-threads", Value: events.DefaultEventThreads, EnvVars: []string{"DYN_ROUTER_EVENT_THREADS"}, Usage: "goroutines applying KV events to the index; a worker rank's events always go to the same one, in order"},
		&cli.IntFlag{Name: "router-event-queue-capacity", Value: events.DefaultQueueCapacity, EnvVars: []string{"DYN_ROUTER_EVENT_QUEUE_CAPACITY"}, Usage: "decoded KV events each event goroutine may hold; a full queue is counted and the rank cleared"},
		&cli.BoolFlag{Name: "router-clear-on-event-loss", Value: true, EnvVars: []string{"DYN_ROUTER_CLEAR_ON_EVENT_LOSS"}, Usage: "clear a worker rank whose KV events were lost (event_id gap, reset or full queue), so the index never claims evicted blocks"},
		&cli.BoolFlag{Name: "router-durable-kv-events", EnvVars: []string{"DYN_ROUTER_DURABLE_KV_EVENTS"}, Usage: "read KV events from JetStream with a durable consumer, snapshot the index to the object store, and recover it at start"},
		&cli.Uint64Flag{Name: "router-snapshot-threshold", Value: events.DefaultSnapshotThreshold, EnvVars: []string{"DYN_ROUTER_SNAPSHOT_THRESHOLD"}, Usage: "durable mode: snapshot the index and purge the stream past this many messages"},
		&cli.BoolFlag{Name: "router-reset-states", EnvVars: []string{"DYN_ROUTER_RESET_STATES"}, Usage: "durable mode: start clean, purging the stream and deleting the snapshot"},
		&cli.DurationFlag{Name: "router-warm-start-timeout", Value: events.DefaultWarmStartTimeout, EnvVars: []string{"DYN_ROUTER_WARM_START_TIMEOUT"}, Usage: "how long a router joining running replicas may wait for a peer's snapshot of the index (notready meanwhile) before it starts from the live KV events alone; 0 turns the warm start off; durable mode never uses it (0.." + shortDuration(events.MaxWarmStartTimeout) + ")"},
		&cli.DurationFlag{Name: "router-unknown-worker-grace", Value: workers.DefaultUnknownWorkerGrace, EnvVars: []string{"DYN_ROUTER_UNKNOWN_WORKER_GRACE"}, Usage: "how long a worker that sends KV events may stay unregistered in etcd before its blocks are dropped"},
		&cli.IntFlag{Name: "worker-default-total-kv-blocks", EnvVars: []string{"DYN_WORKER_DEFAULT_TOTAL_KV_BLOCKS"}, Usage: "KV cache size assumed for workers whose model card does not state it; 0 means unknown (no limit)"},
		&cli.IntFlag{Name: "worker-default-max-num-seqs", EnvVars: []string{"DYN_WORKER_DEFAULT_MAX_NUM_SEQS"}, Usage: "batch size assumed for workers whose model card does not state it; 0 means unknown"},
		&cli.IntFlag{Name: "worker-default-max-num-batched-tokens", EnvVars: []string{"DYN_WORKER_DEFAULT_MAX_NUM_BATCHED_TOKENS"}, Usage: "token budget per forward pass assumed for workers whose card does not state it; 0 means unknown"},
		&cli.DurationFlag{Name: "etcd-timeout", Value: workers.DefaultEtcdTimeout, EnvVars: []string{"DYN_ETCD_TIMEOUT"}, Usage: "bound on each etcd request of worker discovery"},
		&cli.StringFlag{Name: "router-mode", Value: "kv", EnvVars: []string{"DYN_ROUTER_MODE"}, Usage: "kv (KV-aware), round-robin, random, llmd-precise-prefix (llm-d's precise-prefix scoring profile) or dynamo-current (Dynamo's current cost): the baselines share the bookkeeping and metrics"},
		&cli.Float64Flag{Name: "router-kv-overlap-score-weight", DefaultText: "unset", EnvVars: []string{"DYN_ROUTER_KV_OVERLAP_SCORE_WEIGHT"}, Usage: "legacy cost weight of prefill against decode load; when set, replaces the credit form (Dynamo's older formula)"},
		&cli.Float64Flag{Name: "router-kv-overlap-score-credit", Value: scheduler.DefaultOverlapScoreCredit, EnvVars: []string{"DYN_ROUTER_KV_OVERLAP_SCORE_CREDIT"}, Usage: "blocks of prefill credited per cached block (current cost formula): 0..1, or any value ≥ 0 with --router-mode dynamo-current"},
		&cli.Float64Flag{Name: "router-prefill-load-scale", Value: scheduler.DefaultPrefillLoadScale, EnvVars: []string{"DYN_ROUTER_PREFILL_LOAD_SCALE"}, Usage: "weight of prefill blocks against decode blocks (current cost formula)"},
		&cli.IntFlag{Name: "router-saturation-prefill-tokens", EnvVars: []string{"DYN_ROUTER_SATURATION_PREFILL_TOKENS"}, Usage: "with --router-mode kv: when every worker has more prefill tokens in flight than this (the fleet is saturated), prefill work weighs --router-prefill-load-scale-saturated instead of --router-prefill-load-scale; 0 leaves this test out (0.." + fmt.Sprint(scheduler.MaxTokens) + ")"},
		&cli.IntFlag{Name: "router-saturation-decode-blocks", EnvVars: []string{"DYN_ROUTER_SATURATION_DECODE_BLOCKS"}, Usage: "with --router-mode kv: the fleet is saturated too when every worker has more active KV blocks than this; 0 leaves this test out (0.." + fmt.Sprint(scheduler.MaxTokens) + ")"},
		&cli.Float64Flag{Name: "router-prefill-load-scale-saturated", Value: scheduler.DefaultPrefillLoadScaleSaturated, EnvVars: []string{"DYN_ROUTER_PREFILL_LOAD_SCALE_SATURATED"}, Usage: "weight of prefill blocks against decode blocks while the fleet is saturated (see --router-saturation-prefill-tokens, --router-saturation-decode-blocks)"},
		&cli.Float64Flag{Name: "router-cache-affinity", Value: scheduler.DefaultCacheAffinity, EnvVars: []string{"DYN_ROUTER_CACHE_AFFINITY"}, Usage: "with --router-mode kv: blocks of cost taken off a worker per block of the prompt it holds on the device, besides the overlap credit and outside --router-prefill-load-scale, so that load moves conversations off the workers that hold them less readily; 0 is off"},
		&cli.Float64Flag{Name: "router-host-cache-hit-weight", Value: scheduler.DefaultHostCacheHitWeight, EnvVars: []string{"DYN_ROUTER_HOST_CACHE_HIT_WEIGHT"}, Usage: "blocks of prefill credited per cached block whose fastest copy is in host memory (0..1; a device block is credited --router-kv-overlap-score-credit)"},
		&cli.Float64Flag{Name: "router-disk-cache-hit-weight", Value: scheduler.DefaultDiskCacheHitWeight, EnvVars: []string{"DYN_ROUTER_DISK_CACHE_HIT_WEIGHT"}, Usage: "blocks of prefill credited per cached block whose fastest copy is on disk or external storage (0..1)"},
		&cli.Float64Flag{Name: "router-kv-overlap-score-credit-decay", EnvVars: []string{"DYN_ROUTER_KV_OVERLAP_SCORE_CREDIT_DECAY"}, Usage: "with --router-mode dynamo-current: fades the overlap credit of a worker as its prefill backlog exceeds the least loaded one's; 0 is off"},
		&cli.Float64Flag{Name: "router-decode-active-request-weight", EnvVars: []string{"DYN_ROUTER_DECODE_ACTIVE_REQUEST_WEIGHT"}, Usage: "with --router-mode dynamo-current: blocks of cost added per request active on a worker; 0 is off"},
		&cli.Float64Flag{Name: "router-temperature", EnvVars: []string{"DYN_ROUTER_TEMPERATURE"}, Usage: "0 picks the cheapest worker (random among ties); above 0 samples a softmax over normalised costs"},
		&cli.IntFlag{Name: "router-ttl-secs", Value: int(scheduler.DefaultTTL / time.Second), EnvVars: []string{"DYN_ROUTER_TTL_SECS"}, Usage: "approximate mode: seconds a routed prompt stays indexed (re-use refreshes it)"},
		&cli.IntFlag{Name: "router-approx-max-entries", Value: scheduler.DefaultApproxMaxEntries, EnvVars: []string{"DYN_ROUTER_APPROX_MAX_ENTRIES"}, Usage: "approximate mode: cap on indexed blocks, pruned to 80% past it"},
		&cli.BoolFlag{Name: "router-replica-sync", EnvVars: []string{"DYN_ROUTER_REPLICA_SYNC"}, Usage: "share active-sequence events with other router replicas so all see the same loads"},
		&cli.BoolFlag{Name: "router-track-active-blocks", Value: true, EnvVars: []string{"DYN_ROUTER_TRACK_ACTIVE_BLOCKS"}, Usage: "count each worker's decode blocks from the requests routed to it"},
		&cli.BoolFlag{Name: "router-assume-kv-reuse", Value: true, EnvVars: []string{"DYN_ROUTER_ASSUME_KV_REUSE"}, Usage: "blocks shared by two active requests on one worker count once"},
		&cli.DurationFlag{Name: "router-stale-timeout", Value: scheduler.DefaultStaleTimeout, EnvVars: []string{"DYN_ROUTER_STALE_TIMEOUT"}, Usage: "free requests never freed after this long"},
		&cli.DurationFlag{Name: "router-prefill-timeout", Value: scheduler.DefaultPrefillTimeout, EnvVars: []string{"DYN_ROUTER_PREFILL_TIMEOUT"}, Usage: "free requests never marked prefilled after this long (0: never; at most --router-stale-timeout)"},
		&cli.Float64Flag{Name: "router-queue-threshold", DefaultText: "unset", EnvVars: []string{"DYN_ROUTER_QUEUE_THRESHOLD"}, Usage: "queue requests while every worker's active prefill tokens exceed this fraction of max_num_batched_tokens; unset means no queue"},
		&cli.StringFlag{Name: "router-queue-policy", Value: "fcfs", EnvVars: []string{"DYN_ROUTER_QUEUE_POLICY"}, Usage: "queue order: fcfs (with per-request priority_jump) or wspt (shortest weighted prompt first)"},
		&cli.IntFlag{Name: "router-queue-capacity", Value: scheduler.DefaultQueueCapacity, EnvVars: []string{"DYN_ROUTER_QUEUE_CAPACITY"}, Usage: "requests the queue may hold; past it, queue_full"},
		&cli.DurationFlag{Name: "router-queue-timeout", Value: scheduler.DefaultQueueTimeout, EnvVars: []string{"DYN_ROUTER_QUEUE_TIMEOUT"}, Usage: "longest wait in the queue before a timeout error; keep it below the frontend's request timeout"},
		&cli.DurationFlag{Name: "router-queue-aging-limit", Value: scheduler.DefaultQueueAgingLimit, EnvVars: []string{"DYN_ROUTER_QUEUE_AGING_LIMIT"}, Usage: "a request waiting this long is admitted to the least loaded worker, so big prompts never starve"},
		&cli.Float64Flag{Name: "active-decode-blocks-threshold", DefaultText: "unset", EnvVars: []string{"DYN_ACTIVE_DECODE_BLOCKS_THRESHOLD"}, Usage: "a worker is busy past this fraction of its KV blocks in active decode; unset means no limit"},
		&cli.IntFlag{Name: "active-prefill-tokens-threshold", DefaultText: "unset", EnvVars: []string{"DYN_ACTIVE_PREFILL_TOKENS_THRESHOLD"}, Usage: "a worker is busy past this many active prefill tokens; unset means no limit"},
		&cli.Float64Flag{Name: "active-prefill-tokens-threshold-frac", DefaultText: "unset", EnvVars: []string{"DYN_ACTIVE_PREFILL_TOKENS_THRESHOLD_FRAC"}, Usage: "a worker is busy past this fraction of max_num_batched_tokens in active prefill; unset means no limit"},
		&cli.StringFlag{Name: "router-model-name", EnvVars: []string{"DYN_ROUTER_MODEL_NAME"}, Usage: "the model label of the queue metrics"},
		&cli.Uint64Flag{Name: "router-seed", EnvVars: []string{"DYN_ROUTER_SEED"}, Usage: "seed of tie breaks, sampling and random mode, for reproducible runs; 0 means a random seed"},
		&cli.IntFlag{Name: "router-handlers", EnvVars: []string{"DYN_ROUTER_HANDLERS"}, Usage: "NATS subscriptions per endpoint in the router's queue group; 0 means one per CPU"},
		&cli.DurationFlag{Name: "router-drain-timeout", Value: service.DefaultDrainTimeout, EnvVars: []string{"DYN_ROUTER_DRAIN_TIMEOUT"}, Usage: "at shutdown, how long to wait for requests in flight"},
		&cli.DurationFlag{Name: "etcd-probe-interval", Value: workers.DefaultEtcdProbeInterval, EnvVars: []string{"DYN_ETCD_PROBE_INTERVAL"}, Usage: "how often discovery checks that etcd answers while it watches"},
		&cli.DurationFlag{Name: "router-workers-max-staleness", Value: workers.DefaultMaxStaleness, EnvVars: []string{"DYN_ROUTER_WORKERS_MAX_STALENESS"}, Usage: "how long an etcd outage may last before the last known workers are no longer trusted and /health turns notready; until then the router keeps routing and reports etcd as degraded; 0 means never"},
	}
}

// parseServe reads the flags into a serveConfig and validates it, returning
// every problem, one per line.
func parseServe(c *cli.Context) (serveConfig, error) {
	cfg := serveConfig{
		NATSURL:          c.String("nats-url"),
		Namespace:        c.String("namespace"),
		Component:        c.String("component"),
		PrefillComponent: c.String("prefill-component"),
		RouterComponent:  c.String("router-component"),
		Embedded:         c.Bool("embedded"),
		DataDir:          c.String("data-dir"),
		SystemHost:       c.String("system-host"),
		SystemPort:       c.Int("system-port"),
		HTTPHost:         c.String("http-host"),
		HTTPPort:         c.Int("http-port"),
		HealthPath:       c.String("system-health-path"),
		LivePath:         c.String("system-live-path"),
		StartingStatus:   c.String("system-starting-health-status"),
		LogFormat:        c.String("log-format"),
		LogLevel:         c.String("log-level"),
		ShutdownTimeout:  c.Duration("shutdown-timeout"),
		LeaseTTL:         c.Duration("lease-ttl"),
		MaxIndexEntries:  c.Int("router-max-index-entries"),
		KVEvents:         c.Bool("router-kv-events") && !c.Bool("no-router-kv-events"),
		WorkersFile:      c.String("workers-file"),
		EventPlane:       c.String("event-plane"),
	}
	endpoint := workers.DefaultEndpoint
	for _, ep := range strings.Split(c.String("etcd-endpoints"), ",") {
		if ep = strings.TrimSpace(ep); ep != "" {
			cfg.EtcdEndpoints = append(cfg.EtcdEndpoints, ep)
		}
	}
	var (
		errs []error
		err  error
	)
	if ep := c.String("endpoint"); ep != "" {
		parts := strings.Split(ep, ".")
		if len(parts) != 3 || parts[0] == "" || parts[1] == "" || parts[2] == "" {
			errs = append(errs, fmt.Errorf("--endpoint: %q is not ns.component.endpoint", ep))
		} else {
			cfg.Namespace, cfg.Component, endpoint = parts[0], parts[1], parts[2]
		}
	}
	cfg.SystemEnabled = cfg.SystemPort >= 0
	cfg.HTTPEnabled = cfg.HTTPPort >= 0
	errs = append(errs, cfg.validate()...)

	cfg.Events = events.Config{
		Namespace: cfg.Namespace, Component: cfg.Component, PrefillComponent: cfg.PrefillComponent, RouterComponent: cfg.RouterComponent,
		EventThreads:      c.Int("router-event-threads"),
		QueueCapacity:     c.Int("router-event-queue-capacity"),
		ClearOnLoss:       c.Bool("router-clear-on-event-loss"),
		Durable:           c.Bool("router-durable-kv-events"),
		SnapshotThreshold: c.Uint64("router-snapshot-threshold"),
		SnapshotInterval:  events.DefaultSnapshotInterval,
		ResetStates:       c.Bool("router-reset-states"),
		WarmStartTimeout:  c.Duration("router-warm-start-timeout"),
		RouterID:          "pending", // the router's lease id, set at start
	}
	cfg.Workers = workers.Config{
		Namespace: cfg.Namespace, Component: cfg.Component, PrefillComponent: cfg.PrefillComponent, RouterComponent: cfg.RouterComponent,
		Endpoint:           endpoint,
		BlockSize:          c.Int("router-block-size"),
		MinInitialWorkers:  c.Int("router-min-initial-workers"),
		UnknownWorkerGrace: c.Duration("router-unknown-worker-grace"),
		Defaults: workers.RuntimeDefaults{
			TotalKVBlocks:       c.Int("worker-default-total-kv-blocks"),
			MaxNumSeqs:          c.Int("worker-default-max-num-seqs"),
			MaxNumBatchedTokens: c.Int("worker-default-max-num-batched-tokens"),
		},
		EtcdTimeout:       c.Duration("etcd-timeout"),
		EtcdProbeInterval: c.Duration("etcd-probe-interval"),
		MaxStaleness:      c.Duration("router-workers-max-staleness"),
		WorkersFile:       cfg.WorkersFile,
		NoEtcd:            len(cfg.EtcdEndpoints) == 0,
	}
	cfg.Seed = c.Uint64("router-seed")
	sc := scheduler.DefaultConfig()
	sc.BlockSize = cfg.Workers.BlockSize
	if sc.Mode, err = scheduler.ParseMode(c.String("router-mode")); err != nil {
		errs = append(errs, fmt.Errorf("--router-mode: %w", err))
	}
	if sc.QueuePolicy, err = scheduler.ParseQueuePolicy(c.String("router-queue-policy")); err != nil {
		errs = append(errs, fmt.Errorf("--router-queue-policy: %w", err))
	}
	if c.IsSet("router-kv-overlap-score-weight") {
		w := c.Float64("router-kv-overlap-score-weight")
		sc.OverlapScoreWeight = &w
	}
	sc.OverlapScoreCredit = c.Float64("router-kv-overlap-score-credit")
	sc.PrefillLoadScale = c.Float64("router-prefill-load-scale")
	sc.SaturationPrefillTokens = c.Int("router-saturation-prefill-tokens")
	sc.SaturationDecodeBlocks = c.Int("router-saturation-decode-blocks")
	sc.PrefillLoadScaleSaturated = c.Float64("router-prefill-load-scale-saturated")
	sc.CacheAffinity = c.Float64("router-cache-affinity")
	sc.HostCacheHitWeight = c.Float64("router-host-cache-hit-weight")
	sc.DiskCacheHitWeight = c.Float64("router-disk-cache-hit-weight")
	sc.Temperature = c.Float64("router-temperature")
	sc.OverlapScoreCreditDecay = c.Float64("router-kv-overlap-score-credit-decay")
	sc.DecodeActiveRequestWeight = c.Float64("router-decode-active-request-weight")
	sc.UseKVEvents = cfg.KVEvents
	sc.TTL = time.Duration(c.Int("router-ttl-secs")) * time.Second
	sc.ApproxMaxEntries = c.Int("router-approx-max-entries")
	sc.ReplicaSync = c.Bool("router-replica-sync")
	sc.TrackActiveBlocks = c.Bool("router-track-active-blocks")
	sc.AssumeKVReuse = c.Bool("router-assume-kv-reuse")
	sc.StaleTimeout = c.Duration("router-stale-timeout")
	sc.PrefillTimeout = c.Duration("router-prefill-timeout")
	if c.IsSet("router-queue-threshold") {
		v := c.Float64("router-queue-threshold")
		sc.QueueThreshold = &v
	}
	sc.QueueCapacity = c.Int("router-queue-capacity")
	sc.QueueTimeout = c.Duration("router-queue-timeout")
	sc.QueueAgingLimit = c.Duration("router-queue-aging-limit")
	if c.IsSet("active-decode-blocks-threshold") {
		v := c.Float64("active-decode-blocks-threshold")
		sc.ActiveDecodeBlocksThreshold = &v
	}
	if c.IsSet("active-prefill-tokens-threshold") {
		v := c.Int("active-prefill-tokens-threshold")
		sc.ActivePrefillTokensThreshold = &v
	}
	if c.IsSet("active-prefill-tokens-threshold-frac") {
		v := c.Float64("active-prefill-tokens-threshold-frac")
		sc.ActivePrefillTokensThresholdFrac = &v
	}
	sc.Model = c.String("router-model-name")
	cfg.Scheduler = sc
	cfg.Service = service.Config{
		Namespace: cfg.Namespace, Component: cfg.RouterComponent,
		Handlers:     c.Int("router-handlers"),
		DrainTimeout: c.Duration("router-drain-timeout"),
	}

	checks := []error{cfg.Events.Validate(), cfg.Workers.Validate(), cfg.Scheduler.Validate(), cfg.Service.Validate()}
	if cfg.SystemEnabled {
		checks = append(checks, cfg.statusConfig().Validate())
	}
	if cfg.HTTPEnabled {
		checks = append(checks, cfg.httpConfig().Validate())
	}
	return cfg, errors.Join(append(errs, onePerFlag(errs, checks)...)...)
}

// checkServe is the flagCheck of `router serve`: parseServe's problems.
func checkServe(c *cli.Context) error {
	_, err := parseServe(c)
	return err
}

// onePerFlag returns the problems of the components' checks (each an
// errors.Join of lines that start with the flag, "--flag: ...") whose flag
// no earlier line names: several components check the same flag (names,
// --router-block-size, --system-port) against the same range, and a flag
// is reported once, by the first that finds it wrong.
func onePerFlag(reported []error, checks []error) []error {
	seen := map[string]bool{}
	for _, err := range reported {
		seen[flagOf(err.Error())] = true
	}
	var out []error
	for _, err := range checks {
		for _, line := range lines(err) {
			if f := flagOf(line); !seen[f] || f == "" {
				seen[f] = true
				out = append(out, errors.New(line))
			}
		}
	}
	return out
}

// flagOf returns the flag a problem starts with ("--flag: ..."), or "".
func flagOf(problem string) string {
	f, _, ok := strings.Cut(problem, ":")
	if !ok || !strings.HasPrefix(f, "--") || strings.ContainsAny(f, " \t") {
		return ""
	}
	return f
}

// statusConfig is the status server's configuration.
func (cfg serveConfig) statusConfig() status.Config {
	return status.Config{
		Host: cfg.SystemHost, Port: cfg.SystemPort,
		HealthPath: cfg.HealthPath, LivePath: cfg.LivePath, StartingStatus: cfg.StartingStatus,
	}
}

// httpConfig is the HTTP API's configuration: the flags', the fixed
// limits of httpapi.DefaultConfig, and the drain timeout of the NATS
// endpoints, which bounds its requests alike (stack.New sets its queue
// timeout from the scheduler's).
func (cfg serveConfig) httpConfig() httpapi.Config {
	hc := httpapi.DefaultConfig()
	hc.Host, hc.Port = cfg.HTTPHost, cfg.HTTPPort
	hc.DrainTimeout = cfg.Service.DrainTimeout
	return hc
}

// validate checks what no component checks itself.
func (cfg serveConfig) validate() []error {
	var errs []error
	if u, err := url.Parse(cfg.NATSURL); err != nil || u.Host == "" || (u.Scheme != "nats" && u.Scheme != "tls") {
		errs = append(errs, fmt.Errorf("--nats-url: %q is not a nats:// URL", cfg.NATSURL))
	}
	switch {
	case len(cfg.EtcdEndpoints) == 0 && cfg.Embedded:
		errs = append(errs, errors.New("--etcd-endpoints: empty, but --embedded needs an address for its etcd"))
	case len(cfg.EtcdEndpoints) == 0 && cfg.WorkersFile == "":
		errs = append(errs, errors.New("--etcd-endpoints: no endpoint given (empty runs without etcd, which needs --workers-file)"))
	}
	if err := stack.CheckEventPlane(cfg.EventPlane, len(cfg.EtcdEndpoints) == 0); err != nil {
		errs = append(errs, err)
	}
	for _, ep := range cfg.EtcdEndpoints {
		if u, err := url.Parse(ep); err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
			errs = append(errs, fmt.Errorf("--etcd-endpoints: %q is not an http:// URL", ep))
		}
	}
	for _, n := range []struct{ flag, v string }{{"--namespace", cfg.Namespace}, {"--component", cfg.Component},
		{"--prefill-component", cfg.PrefillComponent}, {"--router-component", cfg.RouterComponent}} {
		if !validName(n.v) {
			errs = append(errs, fmt.Errorf("%s: %q must be 1 to 128 letters, digits, '-' or '_'", n.flag, n.v))
		}
	}
	if cfg.Component == cfg.PrefillComponent {
		errs = append(errs, fmt.Errorf("--prefill-component: %q is also the worker component", cfg.PrefillComponent))
	}
	if cfg.SystemPort < -1 || cfg.SystemPort > 65535 {
		errs = append(errs, fmt.Errorf("--system-port: %d is out of range (allowed 0..65535, or -1 for off)", cfg.SystemPort))
	}
	if cfg.HTTPPort < -1 || cfg.HTTPPort > 65535 {
		errs = append(errs, fmt.Errorf("--http-port: %d is out of range (allowed 0..65535, or -1 for off)", cfg.HTTPPort))
	}
	if cfg.HTTPPort > 0 && cfg.HTTPPort == cfg.SystemPort {
		errs = append(errs, fmt.Errorf("--http-port: %d is also --system-port: the HTTP API and the status server need a port each", cfg.HTTPPort))
	}
	if !shutdownTimeouts.contains(cfg.ShutdownTimeout) {
		errs = append(errs, fmt.Errorf("--shutdown-timeout: %v is out of range (allowed %v)", cfg.ShutdownTimeout, shutdownTimeouts))
	}
	if !leaseTTLs.contains(cfg.LeaseTTL) {
		errs = append(errs, fmt.Errorf("--lease-ttl: %v is out of range (allowed %v)", cfg.LeaseTTL, leaseTTLs))
	}
	if cfg.MaxIndexEntries < 0 {
		errs = append(errs, fmt.Errorf("--router-max-index-entries: %d is negative (allowed ≥ 0, 0 means no cap)", cfg.MaxIndexEntries))
	}
	if cfg.DataDir != "" && !cfg.Embedded {
		errs = append(errs, errors.New("--data-dir: only meaningful with --embedded"))
	}
	// newLogger knows the levels and formats; asked about one at a time,
	// it reports both when both are wrong.
	if _, err := newLogger(io.Discard, "json", cfg.LogLevel); err != nil {
		errs = append(errs, err)
	}
	if _, err := newLogger(io.Discard, cfg.LogFormat, "info"); err != nil {
		errs = append(errs, err)
	}
	return errs
}

// validName reports whether s is a usable namespace or component name: it
// becomes part of NATS subjects and etcd keys.
func validName(s string) bool {
	if s == "" || len(s) > 128 {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
			return false
		}
	}
	return true
}

func serveCommand() *cli.Command {
	return &cli.Command{
		Name:  "serve",
		Usage: "run the router daemon",
		Description: "Subscribes to the workers' KV events and load on NATS, discovers workers in etcd, and answers " +
			"route, mark_prefill, mark_free, overlap_scores and potential_loads requests on NATS. " +
			"With --embedded it also runs NATS and etcd itself, so it needs nothing installed.",
		Flags: serveFlags(),
		Action: func(c *cli.Context) error {
			if c.NArg() > 0 {
				return usageError("serve: unexpected argument %q", c.Args().First())
			}
			cfg, err := parseServe(c)
			if err != nil {
				return listProblems("serve", lines(err))
			}
			log, err := newLogger(c.App.ErrWriter, cfg.LogFormat, cfg.LogLevel)
			if err != nil {
				return usageError("serve: %v", err)
			}
			return serve(c.Context, cfg, log, c.App.Writer)
		},
	}
}

// exitError is a failure at run time (exit status 1) with a one-line reason.
func exitError(format string, args ...any) error {
	return cli.Exit(fmt.Sprintf(format, args...), 1)
}
