package scheduler

import (
	"errors"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/kvrouter/router/blockhash"
)

// Mode is how the router chooses a worker (flag --router-mode).
type Mode uint8

// The routing modes. Every mode shares the same bookkeeping, filters, queue
// and metrics; only the choice among eligible ranks differs.
const (
	// ModeKV chooses the rank of least cost (docs/compat.md §5).
	ModeKV Mode = iota
	// ModeRoundRobin takes the eligible ranks in turn.
	ModeRoundRobin
	// ModeRandom takes an eligible rank uniformly at random.
	ModeRandom
	// ModeLLMDPrecisePrefix scores as llm-d's precise-prefix-cache
	// scheduling profile does: 2 × prefix + 1 × KV utilisation + 1 × queue,
	// each in [0, 1], highest wins (peer.go).
	ModeLLMDPrecisePrefix
	// ModeDynamoCurrent is Dynamo's current cost: ModeKV's with the credit
	// decay, the per-request decode weight and a credit above 1 (peer.go).
	ModeDynamoCurrent
	// numModes counts the modes above; it is none.
	numModes
)

// modeNames lists the modes' flag values for error messages, in flag
// order.
func modeNames() string {
	names := make([]string, numModes)
	for m := range numModes {
		names[m] = m.String()
	}
	return strings.Join(names, ", ")
}

// usesIndex reports whether the mode scores prompts against the KV index:
// it hashes them, looks them up and times the decision.
func (m Mode) usesIndex() bool { return m != ModeRoundRobin && m != ModeRandom }

// peer reports whether the mode is one of the peers' policies (peer.go),
// which are scored outside kv's path.
func (m Mode) peer() bool { return m == ModeLLMDPrecisePrefix || m == ModeDynamoCurrent }

// maxCredit is the largest overlap score credit the mode accepts: 1, as
// Dynamo accepted until it allowed any finite credit ≥ 0 (more credit than
// the block's own prefill), which ModeDynamoCurrent follows.
func (m Mode) maxCredit() float64 {
	if m == ModeDynamoCurrent {
		return maxWeight
	}
	return 1
}

// String returns the flag value of the mode.
func (m Mode) String() string {
	switch m {
	case ModeKV:
		return "kv"
	case ModeRoundRobin:
		return "round-robin"
	case ModeRandom:
		return "random"
	case ModeLLMDPrecisePrefix:
		return "llmd-precise-prefix"
	case ModeDynamoCurrent:
		return "dynamo-current"
	}
	return fmt.Sprintf("mode(%d)", uint8(m))
}

// ParseMode parses a --router-mode value. Its error states the value and the
// allowed ones, not the flag: the caller names the flag it read.
func ParseMode(s string) (Mode, error) {
	if s == "round_robin" { // accepted besides the flag value round-robin
		return ModeRoundRobin, nil
	}
	for m := range numModes {
		if m.String() == s {
			return m, nil
		}
	}
	return 0, fmt.Errorf("%q is not a mode (allowed %s)", s, modeNames())
}

// QueuePolicy orders the requests that wait in the threshold queue (flag
// --router-queue-policy).
type QueuePolicy uint8

// The queue policies, Dynamo's.
const (
	// PolicyFCFS serves in arrival order, a request's priority_jump (seconds)
	// moving it that much earlier. It bounds the tail of the waiting time.
	PolicyFCFS QueuePolicy = iota
	// PolicyWSPT serves the largest (1 + priority_jump) / new prompt tokens
	// first (Smith's rule), new tokens being the prompt less its best
	// predicted overlap. It minimises the mean waiting time.
	PolicyWSPT
)

// String returns the flag value of the policy.
func (p QueuePolicy) String() string {
	switch p {
	case PolicyFCFS:
		return "fcfs"
	case PolicyWSPT:
		return "wspt"
	}
	return fmt.Sprintf("policy(%d)", uint8(p))
}

// ParseQueuePolicy parses a --router-queue-policy value. Its error states
// the value and the allowed ones, not the flag: the caller names it.
func ParseQueuePolicy(s string) (QueuePolicy, error) {
	switch s {
	case "fcfs":
		return PolicyFCFS, nil
	case "wspt":
		return PolicyWSPT, nil
	}
	return 0, fmt.Errorf("%q is not a policy (allowed fcfs, wspt)", s)
}

// Defaults of Config: Dynamo's where Dynamo has one (docs/compat.md §9),
// ours otherwise.
const (
	// DefaultBlockSize is the standalone Dynamo router's block size.
	DefaultBlockSize = 128
	// DefaultOverlapScoreCredit and DefaultPrefillLoadScale are Dynamo's.
	DefaultOverlapScoreCredit = 1.0
	DefaultPrefillLoadScale   = 1.0
	// DefaultPrefillLoadScaleSaturated is the weight of prefill work when
	// the fleet is saturated (ours): Dynamo's scale. It applies only with
	// SaturationPrefillTokens or SaturationDecodeBlocks above 0, which is
	// off by default.
	DefaultPrefillLoadScaleSaturated = 1.0
	// DefaultCacheAffinity is the extra credit of a cached block (ours):
	// 0, off, which is Dynamo's cost.
	DefaultCacheAffinity = 0.0
	// DefaultHostCacheHitWeight and DefaultDiskCacheHitWeight are Dynamo's
	// credits of a cached block whose fastest copy is in host memory, and
	// on disk or external storage.
	DefaultHostCacheHitWeight = 0.75
	DefaultDiskCacheHitWeight = 0.25
	// DefaultTTL is Dynamo's --router-ttl-secs for approximate mode.
	DefaultTTL = 120 * time.Second
	// DefaultApproxMaxEntries caps approximate-mode entries (Dynamo: 2^20).
	DefaultApproxMaxEntries = 1 << 20
	// DefaultApproxPruneTo is the share of the cap kept by a prune (Dynamo:
	// 80 %).
	DefaultApproxPruneTo = 0.8
	// DefaultQueueCapacity bounds the threshold queue (ours).
	DefaultQueueCapacity = 4096
	// DefaultQueueTimeout is how long a request may wait in the queue (ours).
	// It is shorter than the usual NATS request timeouts of frontends on
	// purpose: a request released after its caller gave up would be booked
	// and never freed until the stale timeout.
	DefaultQueueTimeout = 10 * time.Second
	// DefaultQueueAgingLimit is the wait after which a request is served
	// before every later arrival, whatever the policy (ours; see doc.go on
	// starvation).
	DefaultQueueAgingLimit = 2 * time.Second
	// DefaultStaleTimeout frees requests never freed. Dynamo used 300 s in
	// one version and 3600 s in another; 300 s would free live requests
	// generating more than a few thousand tokens, so the longer one it is.
	DefaultStaleTimeout = time.Hour
	// DefaultPrefillTimeout frees requests never marked prefilled (ours):
	// a frontend that crashed after route leaves its bookings behind, and
	// a first token takes seconds, not minutes.
	DefaultPrefillTimeout = 5 * time.Minute
)

// Limits Validate enforces.
const (
	// MaxBlockSize is the largest block size accepted: the hasher's, so
	// that every package states one range for --router-block-size.
	MaxBlockSize = blockhash.MaxBlockSize
	// maxWeight bounds weights, scales and temperatures: larger values are
	// typos, and they keep costs finite.
	maxWeight = 1e6
	// maxQueueCapacity bounds QueueCapacity.
	maxQueueCapacity = 1 << 20
	// maxTimeout bounds every duration setting.
	maxTimeout = 24 * time.Hour
)

// Config holds the scheduler's settings. It is plain data: flags and
// environment variables are bound in cmd/ (the flag and variable of each
// field are named on it); DefaultConfig returns Dynamo's defaults and
// Validate checks a Config once at start.
type Config struct {
	// BlockSize is the KV block size in tokens (--router-block-size,
	// DYN_ROUTER_BLOCK_SIZE). It must equal the engines'.
	BlockSize int
	// Mode chooses among eligible ranks (--router-mode kv, round-robin,
	// random, llmd-precise-prefix or dynamo-current).
	Mode Mode

	// OverlapScoreWeight is Dynamo's legacy cost weight
	// (--router-kv-overlap-score-weight, DYN_ROUTER_KV_OVERLAP_SCORE_WEIGHT).
	// Nil means unset. When set it overrides the two fields below as newer
	// Dynamo maps it: PrefillLoadScale = weight, and OverlapScoreCredit = 0
	// if the weight is 0.
	OverlapScoreWeight *float64
	// OverlapScoreCredit is the credit, in blocks of prefill, of each block
	// already cached (--router-kv-overlap-score-credit, in [0, 1]; any
	// value ≥ 0 with ModeDynamoCurrent, as current Dynamo allows).
	OverlapScoreCredit float64
	// PrefillLoadScale weighs prefill blocks against decode blocks
	// (--router-prefill-load-scale, ≥ 0).
	PrefillLoadScale float64
	// SaturationPrefillTokens and SaturationDecodeBlocks turn on the
	// adaptive weight of prefill work (ours): the fleet is saturated when
	// every candidate rank of the kind being chosen has more than
	// SaturationPrefillTokens active prefill tokens, or more than
	// SaturationDecodeBlocks active blocks, and while it is ModeKV weighs
	// prefill work by PrefillLoadScaleSaturated instead of
	// PrefillLoadScale (--router-saturation-prefill-tokens,
	// DYN_ROUTER_SATURATION_PREFILL_TOKENS, and
	// --router-saturation-decode-blocks,
	// DYN_ROUTER_SATURATION_DECODE_BLOCKS; each 0..MaxTokens, 0 leaving
	// its test out; ModeKV only; both 0, the default, is off). Why: a
	// high weight keeps conversations on the ranks that hold them while
	// queues are short, which raises the hit rate and lowers TTFT, but
	// once every rank has a backlog of prefill work (long prompts) or of
	// decoding sequences (short prefills, long contexts) the cache saves
	// less than the queue costs (docs/replay.md, "Cost tuning"). The ranks
	// counted are the kind's candidates, before a request's
	// allowed_worker_ids and busy filters, so that the test reads kept
	// minima instead of a pass over the candidates. A request that
	// overrides prefill_load_scale or overlap_score_weight gets its own
	// scale, saturated or not.
	SaturationPrefillTokens int
	SaturationDecodeBlocks  int
	// PrefillLoadScaleSaturated is the weight of prefill work while the
	// fleet is saturated (--router-prefill-load-scale-saturated,
	// DYN_ROUTER_PREFILL_LOAD_SCALE_SATURATED, ≥ 0; read only when the
	// adaptive weight is on).
	PrefillLoadScaleSaturated float64
	// CacheAffinity lowers a rank's cost by this many blocks for each
	// block of the prompt it holds on the device (--router-cache-affinity,
	// DYN_ROUTER_CACHE_AFFINITY, 0..1e6, ModeKV only; 0, the default, is
	// off). It is outside the prefill term, so neither the prefill load
	// scale nor the clamp at zero of prefill work applies to it. Why: the
	// overlap credit prices a cached block by the prefill it saves this
	// request, but a conversation moved off the rank that holds it also
	// loses that rank's cache for its next turns and fills another rank's
	// cache with a second copy; under load a transient prefill queue on
	// the holder is enough to move it, and the hit rate falls
	// (docs/replay.md, "Cost tuning: an affinity for cached blocks"). A
	// request that overrides overlap_score_weight to 0 (no cache credit)
	// gets no affinity either.
	CacheAffinity float64
	// Temperature is 0 for the cheapest rank, or the softmax temperature
	// over normalised costs (--router-temperature, DYN_ROUTER_TEMPERATURE).
	// ModeLLMDPrecisePrefix ignores it: its picker takes the highest score.
	Temperature float64
	// OverlapScoreCreditDecay fades a rank's overlap credit as its active
	// prefill tokens exceed the least loaded eligible rank's
	// (--router-kv-overlap-score-credit-decay,
	// DYN_ROUTER_KV_OVERLAP_SCORE_CREDIT_DECAY, ≥ 0, ModeDynamoCurrent
	// only; 0, Dynamo's default, is off).
	OverlapScoreCreditDecay float64
	// DecodeActiveRequestWeight adds this many blocks of cost per request
	// active on a rank (--router-decode-active-request-weight,
	// DYN_ROUTER_DECODE_ACTIVE_REQUEST_WEIGHT, ≥ 0, ModeDynamoCurrent only;
	// 0, Dynamo's default, is off).
	DecodeActiveRequestWeight float64
	// HostCacheHitWeight is the credit, in blocks of prefill, of a cached
	// block whose fastest copy is in host memory
	// (--router-host-cache-hit-weight, DYN_ROUTER_HOST_CACHE_HIT_WEIGHT, in
	// [0, 1]). A block on the device is credited OverlapScoreCredit.
	HostCacheHitWeight float64
	// DiskCacheHitWeight is the credit of a cached block whose fastest copy
	// is on disk or in external storage, as Dynamo credits both
	// (--router-disk-cache-hit-weight, DYN_ROUTER_DISK_CACHE_HIT_WEIGHT, in
	// [0, 1]).
	DiskCacheHitWeight float64

	// UseKVEvents is true when workers publish KV events
	// (--router-kv-events / --no-router-kv-events, DYN_ROUTER_USE_KV_EVENTS).
	// False is approximate mode: the router indexes its own decisions.
	UseKVEvents bool
	// TTL is how long an approximate-mode entry lives unless reused
	// (--router-ttl-secs, seconds).
	TTL time.Duration
	// ApproxMaxEntries caps approximate-mode (rank, block) entries
	// (--router-approx-max-entries, ours); a prune keeps the
	// DefaultApproxPruneTo share of them, soonest to expire first.
	ApproxMaxEntries int

	// ReplicaSync shares the active-sequence bookkeeping with the other
	// router replicas (--router-replica-sync, DYN_ROUTER_REPLICA_SYNC).
	ReplicaSync bool
	// TrackActiveBlocks counts the KV blocks of active requests into the
	// decode load (--router-track-active-blocks).
	TrackActiveBlocks bool
	// AssumeKVReuse counts a block shared by two requests on one rank once
	// (--router-assume-kv-reuse); false counts every request's blocks apart.
	AssumeKVReuse bool
	// StaleTimeout frees a request never freed (--router-stale-timeout,
	// ours; Dynamo hard-codes it).
	StaleTimeout time.Duration
	// PrefillTimeout frees a request never marked prefilled this long after
	// it was booked (--router-prefill-timeout, DYN_ROUTER_PREFILL_TIMEOUT,
	// ours); 0 disables it, leaving such requests to StaleTimeout, which
	// it must not exceed.
	PrefillTimeout time.Duration

	// QueueThreshold turns the threshold queue on: a rank is busy when its
	// active prefill tokens exceed QueueThreshold × its
	// max_num_batched_tokens, and a request waits while every eligible rank
	// is busy (--router-queue-threshold, DYN_ROUTER_QUEUE_THRESHOLD). Nil
	// means off, Dynamo's default since PR #11599.
	QueueThreshold *float64
	// QueuePolicy orders waiting requests (--router-queue-policy fcfs|wspt).
	QueuePolicy QueuePolicy
	// QueueCapacity bounds the waiting requests (--router-queue-capacity,
	// ours); past it a request fails with ErrQueueFull.
	QueueCapacity int
	// QueueTimeout bounds a request's wait (--router-queue-timeout, ours);
	// past it the request fails with ErrTimeout.
	QueueTimeout time.Duration
	// QueueAgingLimit is the wait past which a request goes before every
	// later arrival, whatever its priority or size
	// (--router-queue-aging-limit, ours).
	QueueAgingLimit time.Duration

	// ActiveDecodeBlocksThreshold marks a rank busy when its active decode
	// blocks exceed this fraction of its total_kv_blocks
	// (--active-decode-blocks-threshold, in (0, 1]; nil is off).
	ActiveDecodeBlocksThreshold *float64
	// ActivePrefillTokensThreshold marks a rank busy when its active prefill
	// tokens exceed this many (--active-prefill-tokens-threshold; nil is off).
	ActivePrefillTokensThreshold *int
	// ActivePrefillTokensThresholdFrac marks a rank busy when its active
	// prefill tokens exceed this multiple of its max_num_batched_tokens
	// (--active-prefill-tokens-threshold-frac, > 0; nil is off).
	ActivePrefillTokensThresholdFrac *float64

	// Model is the model label of the queue metrics (--router-model-name,
	// ours; empty by default).
	Model string
}

// DefaultConfig returns Dynamo's defaults: block size 128, credit and scale
// 1.0, host and disk cache hits credited 0.75 and 0.25, temperature 0, KV
// events on, replica sync off, active blocks tracked with reuse, the queue
// off with policy fcfs; and ours: the adaptive weight off (saturated scale
// 1.0), bookings never marked prefilled freed after 5 minutes, never freed
// after an hour.
func DefaultConfig() Config {
	return Config{
		BlockSize:                 DefaultBlockSize,
		Mode:                      ModeKV,
		OverlapScoreCredit:        DefaultOverlapScoreCredit,
		PrefillLoadScale:          DefaultPrefillLoadScale,
		PrefillLoadScaleSaturated: DefaultPrefillLoadScaleSaturated,
		HostCacheHitWeight:        DefaultHostCacheHitWeight,
		DiskCacheHitWeight:        DefaultDiskCacheHitWeight,
		UseKVEvents:               true,
		TTL:                       DefaultTTL,
		ApproxMaxEntries:          DefaultApproxMaxEntries,
		TrackActiveBlocks:         true,
		AssumeKVReuse:             true,
		StaleTimeout:              DefaultStaleTimeout,
		PrefillTimeout:            DefaultPrefillTimeout,
		QueuePolicy:               PolicyFCFS,
		QueueCapacity:             DefaultQueueCapacity,
		QueueTimeout:              DefaultQueueTimeout,
		QueueAgingLimit:           DefaultQueueAgingLimit,
	}
}

// Validate reports every setting out of range, one error per setting joined
// with errors.Join, each naming its flag first and the allowed range
// ("--flag: value problem (allowed range)").
func (c Config) Validate() error {
	var errs []error
	add := func(err error) {
		if err != nil {
			errs = append(errs, err)
		}
	}
	if c.BlockSize < 1 || c.BlockSize > MaxBlockSize {
		add(fmt.Errorf("--router-block-size: %d is out of range (allowed 1..%d)", c.BlockSize, MaxBlockSize))
	}
	if c.Mode >= numModes {
		add(fmt.Errorf("--router-mode: %v is not a mode (allowed %s)", c.Mode, modeNames()))
	}
	if w := c.OverlapScoreWeight; w != nil {
		add(checkRange("--router-kv-overlap-score-weight", *w, 0, maxWeight))
	}
	add(checkRange("--router-kv-overlap-score-credit", c.OverlapScoreCredit, 0, c.Mode.maxCredit()))
	for _, f := range []struct {
		flag string
		v    float64
	}{
		{"--router-kv-overlap-score-credit-decay", c.OverlapScoreCreditDecay},
		{"--router-decode-active-request-weight", c.DecodeActiveRequestWeight},
	} {
		if err := checkRange(f.flag, f.v, 0, maxWeight); err != nil {
			add(err)
		} else if f.v != 0 && c.Mode != ModeDynamoCurrent {
			add(fmt.Errorf("%s: %v applies only with --router-mode dynamo-current (allowed 0 with --router-mode %v)", f.flag, f.v, c.Mode))
		}
	}
	add(checkRange("--router-prefill-load-scale", c.PrefillLoadScale, 0, maxWeight))
	add(checkRange("--router-prefill-load-scale-saturated", c.PrefillLoadScaleSaturated, 0, maxWeight))
	for _, f := range []struct {
		flag string
		v    int
	}{
		{"--router-saturation-prefill-tokens", c.SaturationPrefillTokens},
		{"--router-saturation-decode-blocks", c.SaturationDecodeBlocks},
	} {
		switch {
		case f.v < 0 || f.v > MaxTokens:
			add(fmt.Errorf("%s: %d is out of range (allowed 0 to disable, or 1..%d)", f.flag, f.v, MaxTokens))
		case f.v != 0 && c.Mode != ModeKV:
			add(fmt.Errorf("%s: %d applies only with --router-mode kv (allowed 0 with --router-mode %v)", f.flag, f.v, c.Mode))
		}
	}
	if err := checkRange("--router-cache-affinity", c.CacheAffinity, 0, maxWeight); err != nil {
		add(err)
	} else if c.CacheAffinity != 0 && c.Mode != ModeKV {
		add(fmt.Errorf("--router-cache-affinity: %v applies only with --router-mode kv (allowed 0 with --router-mode %v)", c.CacheAffinity, c.Mode))
	}
	add(checkRange("--router-host-cache-hit-weight", c.HostCacheHitWeight, 0, 1))
	add(checkRange("--router-disk-cache-hit-weight", c.DiskCacheHitWeight, 0, 1))
	add(checkRange("--router-temperature", c.Temperature, 0, maxWeight))
	add(checkDuration("--router-ttl-secs", c.TTL))
	if c.ApproxMaxEntries < 1 || c.ApproxMaxEntries > 1<<32 {
		add(fmt.Errorf("--router-approx-max-entries: %d is out of range (allowed 1..%d)", c.ApproxMaxEntries, int64(1)<<32))
	}
	add(checkDuration("--router-stale-timeout", c.StaleTimeout))
	if c.PrefillTimeout < 0 || c.PrefillTimeout > c.StaleTimeout {
		add(fmt.Errorf("--router-prefill-timeout: %v is out of range (allowed 0 to disable, or > 0 and ≤ --router-stale-timeout, %v)", c.PrefillTimeout, c.StaleTimeout))
	}
	if t := c.QueueThreshold; t != nil {
		add(checkRange("--router-queue-threshold", *t, 0, maxWeight))
	}
	if c.QueuePolicy > PolicyWSPT {
		add(fmt.Errorf("--router-queue-policy: %v is not a policy (allowed fcfs, wspt)", c.QueuePolicy))
	}
	if c.QueueCapacity < 1 || c.QueueCapacity > maxQueueCapacity {
		add(fmt.Errorf("--router-queue-capacity: %d is out of range (allowed 1..%d)", c.QueueCapacity, maxQueueCapacity))
	}
	add(checkDuration("--router-queue-timeout", c.QueueTimeout))
	add(checkDuration("--router-queue-aging-limit", c.QueueAgingLimit))
	if t := c.ActiveDecodeBlocksThreshold; t != nil {
		add(checkRange("--active-decode-blocks-threshold", *t, math.SmallestNonzeroFloat64, 1))
	}
	if t := c.ActivePrefillTokensThreshold; t != nil && (*t < 0 || *t > MaxTokens) {
		add(fmt.Errorf("--active-prefill-tokens-threshold: %d is out of range (allowed 0..%d)", *t, MaxTokens))
	}
	if t := c.ActivePrefillTokensThresholdFrac; t != nil {
		add(checkRange("--active-prefill-tokens-threshold-frac", *t, math.SmallestNonzeroFloat64, maxWeight))
	}
	return errors.Join(errs...)
}

// checkRange reports v outside [lo, hi] or not a number, naming the flag.
func checkRange(flag string, v, lo, hi float64) error {
	switch {
	case math.IsNaN(v) || math.IsInf(v, 0):
		return fmt.Errorf("%s: %v is not a finite number (allowed %s)", flag, v, rangeText(lo, hi))
	case v < 0 && lo >= 0:
		return fmt.Errorf("%s: %v is negative (allowed %s)", flag, v, rangeText(lo, hi))
	case v < lo || v > hi:
		return fmt.Errorf("%s: %v is out of range (allowed %s)", flag, v, rangeText(lo, hi))
	}
	return nil
}

func rangeText(lo, hi float64) string {
	switch {
	case lo == math.SmallestNonzeroFloat64:
		return fmt.Sprintf("> 0 and ≤ %v", hi)
	case hi == maxWeight:
		return fmt.Sprintf("≥ %v", lo)
	}
	return fmt.Sprintf("%v..%v", lo, hi)
}

// checkDuration reports a duration outside (0, 24h], naming the flag.
func checkDuration(flag string, d time.Duration) error {
	if d <= 0 || d > maxTimeout {
		return fmt.Errorf("%s: %v is out of range (allowed > 0 and ≤ %v)", flag, d, maxTimeout)
	}
	return nil
}

// costParams are the cost function's parameters for one decision: the
// configuration's, or a request's override.
type costParams struct {
	credit, scale, temperature float64
	// affinity is the cost, in blocks, taken off per device block held
	// (CacheAffinity); 0 when the request's weight ignores the cache.
	affinity float64
	// sat is the adaptive weight, off when the request sets its own
	// scale.
	sat saturation
}

// saturation is the adaptive weight of prefill work: the thresholds of
// active prefill tokens and of active blocks past which a rank is
// saturated (0: not tested), and the scale used while every rank is.
type saturation struct {
	prefillTokens, decodeBlocks int
	scale                       float64
}

// on reports whether the adaptive weight is on.
func (s saturation) on() bool { return s.prefillTokens > 0 || s.decodeBlocks > 0 }

// params derives the cost parameters from the configuration and an
// optional override, mapping the legacy weight as newer Dynamo does.
func (c Config) params(o *Override) costParams {
	p := costParams{credit: c.OverlapScoreCredit, scale: c.PrefillLoadScale, temperature: c.Temperature, affinity: c.CacheAffinity}
	if sat := (saturation{c.SaturationPrefillTokens, c.SaturationDecodeBlocks, c.PrefillLoadScaleSaturated}); sat.on() {
		p.sat = sat
	}
	weight := c.OverlapScoreWeight
	if o != nil {
		if o.PrefillLoadScale != nil || o.OverlapScoreWeight != nil {
			p.sat = saturation{} // the request's scale, whatever the load
		}
		if o.OverlapScoreCredit != nil {
			p.credit = *o.OverlapScoreCredit
		}
		if o.PrefillLoadScale != nil {
			p.scale = *o.PrefillLoadScale
		}
		if o.OverlapScoreWeight != nil {
			weight = o.OverlapScoreWeight
		}
		if o.Temperature != nil {
			p.temperature = *o.Temperature
		}
	}
	if weight != nil {
		p.scale = *weight
		if *weight == 0 {
			p.credit, p.affinity = 0, 0
		}
	}
	return p
}
