package events

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

// Defaults of Config, Dynamo's where Dynamo has one (docs/compat.md §9).
const (
	// DefaultNamespace is Dynamo's default namespace.
	DefaultNamespace = "dynamo"
	// DefaultComponent is the component of aggregated and decode workers.
	DefaultComponent = "backend"
	// DefaultPrefillComponent is the component of prefill workers.
	DefaultPrefillComponent = "prefill"
	// DefaultRouterComponent is the router's own component, where the
	// package's metric families live.
	DefaultRouterComponent = "router"
	// DefaultEventThreads is Dynamo's --router-event-threads.
	DefaultEventThreads = 4
	// DefaultQueueCapacity is the events each shard queue holds.
	DefaultQueueCapacity = 65536
	// DefaultSnapshotThreshold is Dynamo's --router-snapshot-threshold.
	DefaultSnapshotThreshold = 1_000_000
	// DefaultSnapshotInterval is how often a durable subscriber checks the
	// size of its stream (Dynamo checks every second).
	DefaultSnapshotInterval = time.Second
	// DefaultWarmStartTimeout bounds a joining replica's wait for a peer's
	// index snapshot (ours; see WarmStartTimeout).
	DefaultWarmStartTimeout = 10 * time.Second
)

// Limits of Config.
const (
	maxEventThreads  = 1024
	maxQueueCapacity = 1 << 24
	// MaxWarmStartTimeout is the longest WarmStartTimeout: a router that
	// is notready for longer than this only to load an index is better off
	// starting cold and saying so.
	MaxWarmStartTimeout = 5 * time.Minute
)

// Config says which subjects a Subscriber listens to and how it applies what
// it hears. It is plain data: cmd/ binds flags and environment variables to
// it, DefaultConfig fills Dynamo's defaults, Validate checks it once.
type Config struct {
	// Namespace is the Dynamo namespace (flag --namespace).
	Namespace string
	// Component is the component of aggregated and decode workers (flag
	// --component).
	Component string
	// PrefillComponent is the component of prefill workers (flag
	// --prefill-component); empty means no prefill workers.
	PrefillComponent string
	// RouterComponent is the router's own component (flag
	// --router-component), and must equal metrics.Config.Component: the
	// package's families are created in the component scope of the
	// metrics.Router it is given (NewMetrics), which carries that value.
	RouterComponent string

	// EventThreads is the number of goroutines that apply events to the
	// index (flag --router-event-threads). Events of one worker rank always
	// go to the same one, in order.
	EventThreads int
	// QueueCapacity is how many decoded events each of those goroutines may
	// have waiting (flag --router-event-queue-capacity). A full queue is
	// counted and handled (see doc.go), never grown.
	QueueCapacity int
	// ClearOnLoss makes the subscriber clear a worker rank whose events were
	// lost (an event_id gap, an event_id going backwards, a full queue), so
	// that the index never claims blocks the worker may have evicted (flag
	// --router-clear-on-event-loss; ours, on by default).
	ClearOnLoss bool

	// Durable reads events from a JetStream stream with a durable consumer
	// and recovers the index from a snapshot and the stream at start (flag
	// --router-durable-kv-events).
	Durable bool
	// RouterID is the router's instance id, the name of its durable consumer
	// (durable mode only).
	RouterID string
	// SnapshotThreshold is the number of messages in a stream past which a
	// durable subscriber snapshots the index and purges what the snapshot
	// covers (flag --router-snapshot-threshold).
	SnapshotThreshold uint64
	// SnapshotInterval is how often a durable subscriber compares its stream
	// with SnapshotThreshold.
	SnapshotInterval time.Duration
	// ResetStates starts clean (flag --router-reset-states): the stream is
	// purged and the snapshot deleted instead of loaded (durable mode only).
	ResetStates bool

	// WarmStartTimeout bounds how long a router joining a running group
	// waits for a peer's index snapshot before it starts from the live
	// events alone (flag --router-warm-start-timeout, ours; 0 turns the
	// warm start off). Durable mode ignores it: it rebuilds the index from
	// JetStream instead. See package warmstart.
	WarmStartTimeout time.Duration
}

// DefaultConfig returns Dynamo's defaults: plain subscriptions, 4 event
// threads, snapshots past 1,000,000 stream messages; and ours: a warm start
// from a peer within 10 s.
func DefaultConfig() Config {
	return Config{
		Namespace:         DefaultNamespace,
		Component:         DefaultComponent,
		PrefillComponent:  DefaultPrefillComponent,
		RouterComponent:   DefaultRouterComponent,
		EventThreads:      DefaultEventThreads,
		QueueCapacity:     DefaultQueueCapacity,
		ClearOnLoss:       true,
		SnapshotThreshold: DefaultSnapshotThreshold,
		SnapshotInterval:  DefaultSnapshotInterval,
		WarmStartTimeout:  DefaultWarmStartTimeout,
	}
}

// Validate reports every field that is out of range, one error per field
// joined with errors.Join, each naming its flag first ("--flag: value
// problem (allowed range)").
func (c Config) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if err := checkToken(c.Namespace); err != nil {
		bad("--namespace: %q %w", c.Namespace, err)
	}
	if err := checkToken(c.Component); err != nil {
		bad("--component: %q %w", c.Component, err)
	}
	if c.PrefillComponent != "" {
		if err := checkToken(c.PrefillComponent); err != nil {
			bad("--prefill-component: %q %w", c.PrefillComponent, err)
		} else if c.PrefillComponent == c.Component {
			bad("--prefill-component: %q must differ from --component", c.PrefillComponent)
		}
	}
	if strings.TrimSpace(c.RouterComponent) == "" {
		bad("--router-component: %q must not be empty", c.RouterComponent)
	}
	if c.EventThreads < 1 || c.EventThreads > maxEventThreads {
		bad("--router-event-threads: %d is out of range (allowed 1..%d)", c.EventThreads, maxEventThreads)
	}
	if c.QueueCapacity < 1 || c.QueueCapacity > maxQueueCapacity {
		bad("--router-event-queue-capacity: %d is out of range (allowed 1..%d)", c.QueueCapacity, maxQueueCapacity)
	}
	if c.WarmStartTimeout < 0 || c.WarmStartTimeout > MaxWarmStartTimeout {
		bad("--router-warm-start-timeout: %v is out of range (allowed 0 to %s; 0 turns the warm start off)", c.WarmStartTimeout,
			strings.TrimSuffix(MaxWarmStartTimeout.String(), "0s"))
	}
	if c.Durable {
		if err := checkConsumerName(c.RouterID); err != nil {
			bad("--router-durable-kv-events: the router instance id %q, its durable consumer, %w", c.RouterID, err)
		}
		if c.SnapshotThreshold < 1 {
			bad("--router-snapshot-threshold: %d is out of range (allowed ≥ 1)", c.SnapshotThreshold)
		}
		if c.SnapshotInterval <= 0 {
			bad("snapshot interval: %v is out of range (allowed > 0)", c.SnapshotInterval)
		}
	}
	return errors.Join(errs...)
}

// components returns the worker components to listen to.
func (c Config) components() []string {
	if c.PrefillComponent == "" {
		return []string{c.Component}
	}
	return []string{c.Component, c.PrefillComponent}
}

// Subjects returns the core NATS subjects a component's workers publish KV
// events on: the current kv-events and the older kv_events.
func Subjects(namespace, component string) []string {
	base := "namespace." + namespace + ".component." + component + "."
	return []string{base + "kv-events", base + "kv_events"}
}

// StreamName returns the JetStream stream of a component's KV events in
// durable mode, named as Dynamo names it: the kv-events subject slugified,
// with '.' and '_' turned into '-'.
func StreamName(namespace, component string) string {
	return slug("namespace." + namespace + ".component." + component + ".kv-events")
}

// BucketName returns the object store bucket holding a component's index
// snapshot, named as Dynamo names it.
func BucketName(namespace, component string) string {
	return slug("namespace." + namespace + ".component." + component + "-radix-bucket")
}

// LockBucketName returns the key-value bucket holding a component's
// snapshot lock (SnapshotLockKey): one router at a time checks, writes and
// purges.
func LockBucketName(namespace, component string) string {
	return slug("namespace." + namespace + ".component." + component + "-radix-lock")
}

// SnapshotLockKey is the key of the snapshot lock in its bucket; its value
// is the holder's router id.
const SnapshotLockKey = "snapshot"

// SnapshotLockTTL is how long a snapshot lock lasts if its holder never
// releases it (a router killed mid-upload): longer than any upload.
const SnapshotLockTTL = 2 * time.Minute

// SnapshotObject is the name of the snapshot object in the bucket.
const SnapshotObject = "radix-state"

// slug lowercases s and turns every character outside [a-z0-9-] into '-',
// which is what Dynamo's Slug::slugify followed by replace('_', '-') does to
// the names it builds from subjects.
func slug(s string) string {
	b := []byte(strings.ToLower(s))
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			b[i] = '-'
		}
	}
	return string(b)
}

// checkToken reports whether s can be one token of a NATS subject.
func checkToken(s string) error {
	if s == "" {
		return errors.New("must not be empty")
	}
	if strings.ContainsAny(s, ".*> \t\r\n") {
		return errors.New("must not contain '.', '*', '>' or white space")
	}
	return nil
}

// checkConsumerName reports whether s can name a JetStream consumer.
func checkConsumerName(s string) error {
	if s == "" {
		return errors.New("must not be empty in durable mode")
	}
	if len(s) > 128 {
		return errors.New("must be at most 128 characters")
	}
	if strings.ContainsAny(s, ".*>/\\ \t\r\n") {
		return errors.New("must not contain '.', '*', '>', '/', '\\' or white space")
	}
	return nil
}
