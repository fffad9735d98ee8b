package workers

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/kvrouter/router/indexer"
	"github.com/kvrouter/router/internal/shutdown"
	"github.com/kvrouter/router/metrics"
)

// This file subscribes to the workers' load messages on
// namespace.{ns}.kv_metrics (docs/compat.md §3), in either of Dynamo's
// shapes, and hands them to the Registry.

// Errors of decodeLoad, told apart for the reason label.
var (
	errLoadJSON   = errors.New("malformed load message")
	errLoadSchema = errors.New("invalid load message")
)

// loadField is a set of the Load fields a message states.
type loadField uint16

const (
	fieldActiveDecodeBlocks loadField = 1 << iota
	fieldActivePrefillTokens
	fieldKVUsedBlocks
	fieldKVTotalBlocks
	fieldRequestActiveSlots
	fieldRequestTotalSlots
	fieldNumRequestsWaiting
	fieldGPUCacheUsage
	fieldGPUPrefixCacheHitRate

	// fieldsKVStats are the fields that dynamo_component_kvstats_* re-export:
	// a message stating none of them leaves those gauges alone.
	fieldsKVStats = fieldKVUsedBlocks | fieldKVTotalBlocks | fieldGPUCacheUsage | fieldGPUPrefixCacheHitRate
)

// loadUpdate is one decoded load message: which rank, and the fields it
// states.
type loadUpdate struct {
	worker indexer.Worker
	fields loadField
	load   Load
}

// merge applies the stated fields of u to l.
func (u loadUpdate) merge(l Load) Load {
	set := func(f loadField, dst *int, v int) {
		if u.fields&f != 0 {
			*dst = v
		}
	}
	set(fieldActiveDecodeBlocks, &l.ActiveDecodeBlocks, u.load.ActiveDecodeBlocks)
	set(fieldActivePrefillTokens, &l.ActivePrefillTokens, u.load.ActivePrefillTokens)
	set(fieldKVUsedBlocks, &l.KVUsedBlocks, u.load.KVUsedBlocks)
	set(fieldKVTotalBlocks, &l.KVTotalBlocks, u.load.KVTotalBlocks)
	set(fieldRequestActiveSlots, &l.RequestActiveSlots, u.load.RequestActiveSlots)
	set(fieldRequestTotalSlots, &l.RequestTotalSlots, u.load.RequestTotalSlots)
	set(fieldNumRequestsWaiting, &l.NumRequestsWaiting, u.load.NumRequestsWaiting)
	if u.fields&fieldGPUCacheUsage != 0 {
		l.GPUCacheUsage = u.load.GPUCacheUsage
	}
	if u.fields&fieldGPUPrefixCacheHitRate != 0 {
		l.GPUPrefixCacheHitRate = u.load.GPUPrefixCacheHitRate
	}
	return l
}

// The wire shapes. Every number is optional so that "absent" and "0" stay
// apart; Dynamo's classic shape has them all, ActiveLoad only some.
type (
	loadJSON struct {
		WorkerID *uint64 `json:"worker_id"`
		// Classic: {"worker_id", "data": {"worker_stats", "kv_stats"}}.
		Data *loadDataJSON `json:"data"`
		// ActiveLoad: {"worker_id", "dp_rank", "active_decode_blocks"?,
		// "active_prefill_tokens"?, "kv_used_blocks"?}.
		DPRank              *uint64 `json:"dp_rank"`
		ActiveDecodeBlocks  *uint64 `json:"active_decode_blocks"`
		ActivePrefillTokens *uint64 `json:"active_prefill_tokens"`
		KVUsedBlocks        *uint64 `json:"kv_used_blocks"`
	}
	loadDataJSON struct {
		forwardPassJSON
		// Some Dynamo versions tag the metrics with their kind.
		Engine     *forwardPassJSON `json:"engine_load_metrics"`
		Predictive *struct {
			KVActiveBlocks *uint64 `json:"kv_active_blocks"`
		} `json:"predictive_load_metrics"`
	}
	forwardPassJSON struct {
		WorkerStats *struct {
			DataParallelRank   *uint64 `json:"data_parallel_rank"`
			RequestActiveSlots *uint64 `json:"request_active_slots"`
			RequestTotalSlots  *uint64 `json:"request_total_slots"`
			NumRequestsWaiting *uint64 `json:"num_requests_waiting"`
		} `json:"worker_stats"`
		KVStats *struct {
			KVActiveBlocks        *uint64  `json:"kv_active_blocks"`
			KVTotalBlocks         *uint64  `json:"kv_total_blocks"`
			GPUCacheUsagePerc     *float64 `json:"gpu_cache_usage_perc"`
			GPUPrefixCacheHitRate *float64 `json:"gpu_prefix_cache_hit_rate"`
		} `json:"kv_stats"`
	}
)

// decodeLoad decodes one load message of either shape. The two are told
// apart by "data": the classic shape nests its numbers there, ActiveLoad
// has them at the top level.
func decodeLoad(data []byte) (loadUpdate, error) {
	t := bytes.TrimSpace(data)
	if len(t) == 0 || t[0] != '{' {
		return loadUpdate{}, fmt.Errorf("%w: not a JSON object", errLoadJSON)
	}
	var m loadJSON
	if err := json.Unmarshal(t, &m); err != nil {
		return loadUpdate{}, fmt.Errorf("%w: %v", errLoadJSON, err)
	}
	if m.WorkerID == nil {
		return loadUpdate{}, fmt.Errorf("%w: no worker_id", errLoadSchema)
	}
	u := loadUpdate{worker: indexer.Worker{ID: indexer.WorkerID(*m.WorkerID)}}
	d := decoder{u: &u}
	if m.Data != nil {
		fp := m.Data.forwardPassJSON
		if m.Data.Engine != nil {
			fp = *m.Data.Engine
		}
		if p := m.Data.Predictive; p != nil {
			d.count("kv_active_blocks", p.KVActiveBlocks, fieldKVUsedBlocks, &u.load.KVUsedBlocks)
		}
		if ws := fp.WorkerStats; ws != nil {
			d.rank("data_parallel_rank", ws.DataParallelRank)
			d.count("request_active_slots", ws.RequestActiveSlots, fieldRequestActiveSlots, &u.load.RequestActiveSlots)
			d.count("request_total_slots", ws.RequestTotalSlots, fieldRequestTotalSlots, &u.load.RequestTotalSlots)
			d.count("num_requests_waiting", ws.NumRequestsWaiting, fieldNumRequestsWaiting, &u.load.NumRequestsWaiting)
		}
		if kv := fp.KVStats; kv != nil {
			d.count("kv_active_blocks", kv.KVActiveBlocks, fieldKVUsedBlocks, &u.load.KVUsedBlocks)
			d.count("kv_total_blocks", kv.KVTotalBlocks, fieldKVTotalBlocks, &u.load.KVTotalBlocks)
			d.fraction("gpu_cache_usage_perc", kv.GPUCacheUsagePerc, fieldGPUCacheUsage, &u.load.GPUCacheUsage)
			d.fraction("gpu_prefix_cache_hit_rate", kv.GPUPrefixCacheHitRate, fieldGPUPrefixCacheHitRate, &u.load.GPUPrefixCacheHitRate)
		}
	} else {
		d.rank("dp_rank", m.DPRank)
		d.count("active_decode_blocks", m.ActiveDecodeBlocks, fieldActiveDecodeBlocks, &u.load.ActiveDecodeBlocks)
		d.count("active_prefill_tokens", m.ActivePrefillTokens, fieldActivePrefillTokens, &u.load.ActivePrefillTokens)
		d.count("kv_used_blocks", m.KVUsedBlocks, fieldKVUsedBlocks, &u.load.KVUsedBlocks)
	}
	if d.err != nil {
		return loadUpdate{}, d.err
	}
	if u.fields == 0 {
		return loadUpdate{}, fmt.Errorf("%w: worker %d: no load figures", errLoadSchema, u.worker.ID)
	}
	return u, nil
}

// decoder checks the numbers of one message, keeping the first error.
type decoder struct {
	u   *loadUpdate
	err error
}

func (d *decoder) rank(name string, v *uint64) {
	if v == nil || d.err != nil {
		return
	}
	if *v > math.MaxUint32 {
		d.err = fmt.Errorf("%w: %s %d over 32 bits", errLoadSchema, name, *v)
		return
	}
	d.u.worker.DPRank = indexer.DPRank(*v)
}

func (d *decoder) count(name string, v *uint64, f loadField, dst *int) {
	if v == nil || d.err != nil {
		return
	}
	if *v > maxCount {
		d.err = fmt.Errorf("%w: %s %d over %d", errLoadSchema, name, *v, uint64(maxCount))
		return
	}
	*dst = int(*v)
	d.u.fields |= f
}

func (d *decoder) fraction(name string, v *float64, f loadField, dst *float64) {
	if v == nil || d.err != nil {
		return
	}
	// Dynamo documents 0 to 1; engines that send a percentage are let
	// through rather than guessed at, but nothing negative or absurd.
	if *v < 0 || *v > 100 {
		d.err = fmt.Errorf("%w: %s %v outside [0, 100]", errLoadSchema, name, *v)
		return
	}
	*dst = *v
	d.u.fields |= f
}

// LoadSubscriber feeds the Registry with the workers' load messages from
// NATS. It owns one plain subscription (every router replica needs every
// message, so no queue group); nats.go runs its handler on one goroutine.
type LoadSubscriber struct {
	cfg      Config
	nc       *nats.Conn
	reg      *Registry
	rejected *prometheus.CounterVec
	log      *slog.Logger
	logs     *logLimiter

	// dropped is the subscription's slow-consumer drop count already
	// counted; touched by the handler goroutine only.
	dropped int
}

// NewLoadSubscriber returns a subscriber of namespace.{cfg.Namespace}.kv_metrics
// feeding reg. It counts what it rejects in the package's Metrics, built
// from m, and starts nothing.
func NewLoadSubscriber(cfg Config, nc *nats.Conn, reg *Registry, m *metrics.Router, log *slog.Logger) (*LoadSubscriber, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if nc == nil || reg == nil || m == nil {
		return nil, errors.New("load subscriber: nil nats connection, registry or metrics")
	}
	wm, err := NewMetrics(m)
	if err != nil {
		return nil, fmt.Errorf("load subscriber: %w", err)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &LoadSubscriber{
		cfg: cfg, nc: nc, reg: reg, rejected: wm.LoadRejected,
		log:  log.With("subject", LoadSubject(cfg.Namespace)),
		logs: newLogLimiter(10 * time.Second),
	}, nil
}

// LoadSubject returns the subject of the workers' load messages.
func LoadSubject(namespace string) string { return "namespace." + namespace + ".kv_metrics" }

// Run subscribes, handles messages until ctx is done, then drains the
// subscription and returns once its last message is handled. It fails only
// if the subscription cannot be made.
func (s *LoadSubscriber) Run(ctx context.Context) error {
	subject := LoadSubject(s.cfg.Namespace)
	sub, err := s.nc.Subscribe(subject, func(msg *nats.Msg) { s.handle(msg.Sub, msg.Data) })
	if err != nil {
		return fmt.Errorf("subscribe %s: %w", subject, err)
	}
	// Bounded: load messages are periodic and the next one supersedes a
	// lost one, so dropping beats queueing without bound.
	if err := sub.SetPendingLimits(4096, 16<<20); err != nil {
		_ = sub.Unsubscribe()
		return fmt.Errorf("subscribe %s: pending limits: %w", subject, err)
	}
	<-ctx.Done()
	closed := sub.StatusChanged(nats.SubscriptionClosed)
	if err := sub.Drain(); err != nil {
		// The connection is closed already: nothing is delivered any more.
		return nil
	}
	// At most 5s, and never past the router's shutdown deadline.
	dctx, cancel := shutdown.DrainContext(ctx, 5*time.Second)
	defer cancel()
	select {
	case <-closed:
	case <-dctx.Done():
		_ = sub.Unsubscribe()
	}
	return nil
}

// handle processes one message. sub may be nil (tests feed bytes directly).
func (s *LoadSubscriber) handle(sub *nats.Subscription, data []byte) {
	if sub != nil {
		if n, err := sub.Dropped(); err == nil && n > s.dropped {
			s.reject(metrics.LoadRejectSlowConsumer, float64(n-s.dropped), fmt.Errorf("nats dropped %d load messages of a slow subscription", n-s.dropped))
			s.dropped = n
		}
	}
	u, err := decodeLoad(data)
	switch {
	case errors.Is(err, errLoadJSON):
		s.reject(metrics.LoadRejectJSON, 1, err)
		return
	case err != nil:
		s.reject(metrics.LoadRejectSchema, 1, err)
		return
	}
	if err := s.reg.applyLoad(u, time.Now()); err != nil {
		s.reject(metrics.LoadRejectUnknownWorker, 1, err)
	}
}

// reject counts n rejected messages and logs the reason, at most once per
// interval per reason.
func (s *LoadSubscriber) reject(reason string, n float64, err error) {
	s.rejected.WithLabelValues(reason).Add(n)
	if suppressed, ok := s.logs.allow(reason); ok {
		s.log.Warn("rejected worker load message", "reason", reason, "error", err, "suppressed", suppressed)
	}
}

// logLimiter lets one log line per key through per interval and counts the
// ones it held back.
type logLimiter struct {
	every time.Duration
	// mu guards the maps; a leaf lock (docs/locks.md).
	mu   sync.Mutex
	last map[string]time.Time
	held map[string]int
}

func newLogLimiter(every time.Duration) *logLimiter {
	return &logLimiter{every: every, last: map[string]time.Time{}, held: map[string]int{}}
}

// allow reports whether to log for key now, and how many lines were held
// back since the last one.
func (l *logLimiter) allow(key string) (suppressed int, ok bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := time.Now()
	if last, seen := l.last[key]; seen && now.Sub(last) < l.every {
		l.held[key]++
		return 0, false
	}
	l.last[key] = now
	suppressed = l.held[key]
	l.held[key] = 0
	return suppressed, true
}
