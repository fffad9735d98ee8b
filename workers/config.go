package workers

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/kvrouter/router/blockhash"
)

// ErrInvalidConfig is wrapped by every error of Config.Validate.
var ErrInvalidConfig = errors.New("invalid workers config")

// Defaults of Config, Dynamo's where Dynamo has one.
const (
	// DefaultNamespace is Dynamo's default namespace.
	DefaultNamespace = "dynamo"
	// DefaultComponent is the component of aggregated and decode workers.
	DefaultComponent = "backend"
	// DefaultPrefillComponent is the component of prefill workers.
	DefaultPrefillComponent = "prefill"
	// DefaultEndpoint is the endpoint workers serve and register under.
	DefaultEndpoint = "generate"
	// DefaultRouterComponent is the router's own component, the
	// dynamo_component label of its metrics.
	DefaultRouterComponent = "router"
	// DefaultBlockSize is the standalone Dynamo router's block size.
	DefaultBlockSize = 128
	// DefaultUnknownWorkerGrace is how long events of an unregistered
	// worker stay indexed before they are dropped.
	DefaultUnknownWorkerGrace = 30 * time.Second
	// DefaultEtcdTimeout bounds each etcd request (list, probe).
	DefaultEtcdTimeout = 5 * time.Second
	// DefaultEtcdProbeInterval is how often a live watch checks that etcd
	// still answers.
	DefaultEtcdProbeInterval = 2 * time.Second
	// DefaultMaxStaleness is how long an etcd outage may last before the
	// last known workers are no longer vouched for.
	DefaultMaxStaleness = 5 * time.Minute
)

// Limits that Validate and the decoders enforce.
const (
	// MaxBlockSize is the largest block size a model card may state. The
	// flag's range is the hasher's, blockhash.MaxBlockSize, which is
	// smaller: a card between the two is a block-size mismatch, not a
	// malformed card.
	MaxBlockSize = 1 << 20
	// MaxDPSize is the largest data_parallel_size a card may state: each
	// rank is a scheduling candidate.
	MaxDPSize = 4096
	// maxCount bounds the counts of a card (blocks, sequences, tokens).
	maxCount = 1 << 48
)

// RuntimeDefaults stand in for the runtime_config numbers a worker's model
// card does not state (no card, a null field, or 0). Zero means unknown: the
// scheduler then applies no limit based on that number.
type RuntimeDefaults struct {
	// TotalKVBlocks is the KV cache size in blocks
	// (flag --worker-default-total-kv-blocks).
	TotalKVBlocks int
	// MaxNumSeqs is the engine's batch size in sequences
	// (flag --worker-default-max-num-seqs).
	MaxNumSeqs int
	// MaxNumBatchedTokens is the engine's token budget per forward pass
	// (flag --worker-default-max-num-batched-tokens).
	MaxNumBatchedTokens int
}

// Config says which workers the registry tracks and how. It is plain data;
// flags and env vars are bound in cmd/.
type Config struct {
	// Namespace is the Dynamo namespace (flag --namespace, env DYN_NAMESPACE).
	Namespace string
	// Component is the component of aggregated and decode workers
	// (flag --component).
	Component string
	// PrefillComponent is the component of prefill workers
	// (flag --prefill-component).
	PrefillComponent string
	// Endpoint is the endpoint whose instances are workers: the last part of
	// flag --endpoint, which Dynamo spells ns.component.endpoint.
	Endpoint string
	// RouterComponent is the router's own component (flag
	// --router-component), and must equal metrics.Config.Component: the
	// package's families are created in the component scope of the
	// metrics.Router it is given (NewMetrics), which carries that value.
	RouterComponent string
	// BlockSize is the router's KV block size in tokens (flag
	// --router-block-size, env DYN_ROUTER_BLOCK_SIZE). A worker whose card
	// states another is a block-size mismatch.
	BlockSize int
	// MinInitialWorkers is how many workers must be registered before the
	// registry is ready the first time (flag --router-min-initial-workers,
	// env DYN_ROUTER_MIN_INITIAL_WORKERS).
	MinInitialWorkers int
	// UnknownWorkerGrace is how long a worker that sends KV events may stay
	// unregistered before its blocks are dropped (flag
	// --router-unknown-worker-grace).
	UnknownWorkerGrace time.Duration
	// Defaults fill what a worker's model card does not state.
	Defaults RuntimeDefaults
	// EtcdTimeout bounds each etcd request of discovery (flag --etcd-timeout).
	EtcdTimeout time.Duration
	// EtcdProbeInterval is how often discovery checks that etcd answers
	// while it watches (flag --etcd-probe-interval). etcd's client retries
	// a broken watch forever without telling anyone, so a dead etcd is only
	// noticed by asking it something.
	EtcdProbeInterval time.Duration
	// MaxStaleness is how long an etcd outage may last, counted from when
	// discovery finds etcd unreachable, before the registry stops vouching
	// for the last known workers and is no longer ready (flag
	// --router-workers-max-staleness, env DYN_ROUTER_WORKERS_MAX_STALENESS).
	// Until then an outage leaves the registry ready and serving them. 0
	// means never: an etcd outage alone never makes the registry unready.
	MaxStaleness time.Duration
	// WorkersFile is the path of the workers file (flag --workers-file, env
	// DYN_ROUTER_WORKERS_FILE), a second source of workers beside etcd
	// (FileSource); "" for none.
	WorkersFile string
	// NoEtcd turns etcd discovery off (flag --etcd-endpoints empty): the
	// workers file, then required, is the only source of workers, and the
	// registry reports etcd as not in use rather than unreachable.
	NoEtcd bool
}

// DefaultConfig returns Dynamo's defaults.
func DefaultConfig() Config {
	return Config{
		Namespace:          DefaultNamespace,
		Component:          DefaultComponent,
		PrefillComponent:   DefaultPrefillComponent,
		Endpoint:           DefaultEndpoint,
		RouterComponent:    DefaultRouterComponent,
		BlockSize:          DefaultBlockSize,
		UnknownWorkerGrace: DefaultUnknownWorkerGrace,
		EtcdTimeout:        DefaultEtcdTimeout,
		EtcdProbeInterval:  DefaultEtcdProbeInterval,
		MaxStaleness:       DefaultMaxStaleness,
	}
}

// Validate reports every setting out of range, one error per setting joined
// with errors.Join, each naming its flag first ("--flag: value problem
// (allowed range)") and wrapping ErrInvalidConfig.
func (c Config) Validate() error {
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, invalidConfig(fmt.Sprintf(format, args...)))
	}
	names := []struct{ flag, value string }{
		{"--namespace", c.Namespace},
		{"--component", c.Component},
		{"--prefill-component", c.PrefillComponent},
		{"--endpoint", c.Endpoint},
		{"--router-component", c.RouterComponent},
	}
	for _, n := range names {
		if err := validName(n.value); err != nil {
			bad("%s: %q %v", n.flag, n.value, err)
		}
	}
	if c.Component == c.PrefillComponent && validName(c.Component) == nil {
		bad("--prefill-component: %q must differ from --component", c.PrefillComponent)
	}
	// The hasher's range: a block size the router could not hash is no
	// block size, whatever a model card says (MaxBlockSize bounds cards).
	if c.BlockSize < 1 || c.BlockSize > blockhash.MaxBlockSize {
		bad("--router-block-size: %d is out of range (allowed 1..%d)", c.BlockSize, blockhash.MaxBlockSize)
	}
	if c.MinInitialWorkers < 0 || c.MinInitialWorkers > 1_000_000 {
		bad("--router-min-initial-workers: %d is out of range (allowed 0..1000000)", c.MinInitialWorkers)
	}
	if c.UnknownWorkerGrace <= 0 || c.UnknownWorkerGrace > 24*time.Hour {
		bad("--router-unknown-worker-grace: %v is out of range (allowed > 0 and ≤ 24h)", c.UnknownWorkerGrace)
	}
	defaults := []struct {
		flag  string
		value int
	}{
		{"--worker-default-total-kv-blocks", c.Defaults.TotalKVBlocks},
		{"--worker-default-max-num-seqs", c.Defaults.MaxNumSeqs},
		{"--worker-default-max-num-batched-tokens", c.Defaults.MaxNumBatchedTokens},
	}
	for _, d := range defaults {
		if d.value < 0 || d.value > maxCount {
			bad("%s: %d is out of range (allowed 0..%d, 0 means unknown)", d.flag, d.value, int64(maxCount))
		}
	}
	if c.EtcdTimeout <= 0 || c.EtcdTimeout > 5*time.Minute {
		bad("--etcd-timeout: %v is out of range (allowed > 0 and ≤ 5m)", c.EtcdTimeout)
	}
	if c.EtcdProbeInterval <= 0 || c.EtcdProbeInterval > 5*time.Minute {
		bad("--etcd-probe-interval: %v is out of range (allowed > 0 and ≤ 5m)", c.EtcdProbeInterval)
	}
	if c.NoEtcd && c.WorkersFile == "" {
		bad("--etcd-endpoints: empty turns etcd discovery off, which needs --workers-file (DYN_ROUTER_WORKERS_FILE): no worker could register")
	}
	if c.MaxStaleness < 0 || c.MaxStaleness > 7*24*time.Hour {
		bad("--router-workers-max-staleness: %v is out of range (allowed 0..168h, 0 means never)", c.MaxStaleness)
	}
	return errors.Join(errs...)
}

// invalidConfig is one problem of Config.Validate: its message names the
// flag, and it wraps ErrInvalidConfig without repeating that in the text,
// so that a command line lists each problem once, flag first.
type invalidConfig string

func (e invalidConfig) Error() string { return string(e) }
func (e invalidConfig) Unwrap() error { return ErrInvalidConfig }

// validName checks a namespace, component or endpoint name: it becomes a
// segment of etcd keys (so no '/') and of NATS subjects (so no '.', '*', '>'
// or white space).
func validName(s string) error {
	if s == "" {
		return errors.New("must not be empty")
	}
	if i := strings.IndexAny(s, "/.*> \t\r\n"); i >= 0 {
		return fmt.Errorf("must not contain %q", s[i])
	}
	return nil
}
