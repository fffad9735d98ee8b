package replay

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"math"
	"slices"
	"time"
)

// Record is what happened to one request. Durations other than RouteRTT
// are simulated time.
type Record struct {
	Index       int
	Arrival     time.Duration
	InputLength int
	// WorkerID is the worker the router chose; WorkerIndex its position in
	// the fleet, or -1 when unknown.
	WorkerID    uint64
	WorkerIndex int
	// OverlapBlocks and RouterBlocks are the router's prediction: blocks
	// of the prompt the chosen worker holds, of RouterBlocks in all.
	OverlapBlocks, RouterBlocks int
	// PromptBlocks and CachedBlocks are the worker's own count: full
	// prompt blocks, and how many were prefix-cache hits.
	PromptBlocks, CachedBlocks int
	// TTFT is from arrival to the first token, E2E to the last; ITL is the
	// mean time between output tokens.
	TTFT, E2E, ITL time.Duration
	OutputTokens   int
	// RouteRTT is the wall time of the route call, as the frontend sees it.
	RouteRTT time.Duration
	// Done is true once the last token came; Err says why a request
	// failed, and Reason is the failure's kind, for counting (see
	// Summary.FailedBy).
	Done   bool
	Err    string
	Reason string `json:",omitempty"`
}

// Result is one replay.
type Result struct {
	Mode     string
	Workload string
	Lockstep bool
	Records  []Record
	// Wall is how long the replay took.
	Wall time.Duration
	// RouterOverheadMs is the router's own mean decision time from its
	// dynamo_router_overhead_total_ms histogram, when its metrics were
	// read; NaN otherwise.
	RouterOverheadMs float64
}

// Summary condenses a Result into the figures of the report.
type Summary struct {
	Mode      string
	Requests  int
	Completed int
	Failed    int
	// FailedBy counts the failed requests by Record.Reason ("unfinished"
	// for those that neither finished nor failed).
	FailedBy map[string]int `json:",omitempty"`
	// Span is the simulated time from the first arrival to the last token.
	Span time.Duration
	// OfferedRate and AchievedRate are requests per simulated second:
	// arrivals over the arrival window, completions over the span.
	OfferedRate, AchievedRate float64
	// HitRate is the workers' prefix-cache hit rate: cached prompt blocks
	// over prompt blocks, over completed requests. PredictedHitRate is the
	// router's overlap over the router's blocks.
	HitRate, PredictedHitRate float64
	TTFT                      Percentiles
	ITL                       Percentiles
	E2E                       Percentiles
	// OutputThroughput is output tokens per simulated second over the span.
	OutputThroughput float64
	// RouteRTT is the wall time of route calls as the frontend sees them.
	RouteRTT Percentiles
	// RouterOverheadMs is the router's own mean decision time, NaN when
	// unknown.
	RouterOverheadMs float64
	// PerWorker counts the requests sent to each worker, by fleet index.
	PerWorker []int
	// Digest is a hash of every routing decision (request index → worker
	// id): equal digests mean identical routing.
	Digest string
}

// Percentiles of a duration distribution.
type Percentiles struct {
	P50, P90, P99, Mean time.Duration
}

func percentiles(ds []time.Duration) Percentiles {
	if len(ds) == 0 {
		return Percentiles{}
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	var sum float64
	for _, d := range s {
		sum += float64(d)
	}
	return Percentiles{P50: quantile(s, 0.5), P90: quantile(s, 0.9), P99: quantile(s, 0.99), Mean: time.Duration(sum / float64(len(s)))}
}

// quantile returns the nearest-rank q-quantile of sorted values.
func quantile[T any](sorted []T, q float64) T {
	i := int(math.Ceil(q*float64(len(sorted)))) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

// Summarize computes the summary of a result.
func (r *Result) Summarize() Summary {
	s := Summary{Mode: r.Mode, Requests: len(r.Records), RouterOverheadMs: r.RouterOverheadMs}
	var ttft, itl, e2e, rtt []time.Duration
	var cached, prompt, overlap, routerBlocks, outTokens int
	var first, lastArrival, lastDone time.Duration = math.MaxInt64, 0, 0
	h := sha256.New()
	var buf [16]byte
	maxIndex := -1
	for _, rec := range r.Records {
		first = min(first, rec.Arrival)
		lastArrival = max(lastArrival, rec.Arrival)
		binary.LittleEndian.PutUint64(buf[:8], uint64(rec.Index))
		binary.LittleEndian.PutUint64(buf[8:], rec.WorkerID)
		h.Write(buf[:])
		if rec.RouteRTT > 0 {
			rtt = append(rtt, rec.RouteRTT)
		}
		maxIndex = max(maxIndex, rec.WorkerIndex)
		if !rec.Done {
			s.Failed++
			reason := rec.Reason
			if reason == "" {
				reason = ReasonUnfinished
			}
			if s.FailedBy == nil {
				s.FailedBy = map[string]int{}
			}
			s.FailedBy[reason]++
			continue
		}
		s.Completed++
		ttft = append(ttft, rec.TTFT)
		e2e = append(e2e, rec.E2E)
		if rec.OutputTokens > 1 {
			itl = append(itl, rec.ITL)
		}
		cached += rec.CachedBlocks
		prompt += rec.PromptBlocks
		overlap += rec.OverlapBlocks
		routerBlocks += rec.RouterBlocks
		outTokens += rec.OutputTokens
		lastDone = max(lastDone, rec.Arrival+rec.E2E)
	}
	s.Digest = hex.EncodeToString(h.Sum(nil))[:16]
	s.PerWorker = make([]int, maxIndex+1)
	for _, rec := range r.Records {
		if rec.WorkerIndex >= 0 {
			s.PerWorker[rec.WorkerIndex]++
		}
	}
	if s.Completed == 0 {
		return s
	}
	s.Span = lastDone - first
	if w := lastArrival - first; w > 0 {
		s.OfferedRate = float64(len(r.Records)-1) / w.Seconds()
	}
	if s.Span > 0 {
		s.AchievedRate = float64(s.Completed) / s.Span.Seconds()
		s.OutputThroughput = float64(outTokens) / s.Span.Seconds()
	}
	if prompt > 0 {
		s.HitRate = float64(cached) / float64(prompt)
	}
	if routerBlocks > 0 {
		s.PredictedHitRate = float64(overlap) / float64(routerBlocks)
	}
	s.TTFT, s.ITL, s.E2E, s.RouteRTT = percentiles(ttft), percentiles(itl), percentiles(e2e), percentiles(rtt)
	return s
}

// TTFTs returns the TTFT of every completed request, sorted.
func (r *Result) TTFTs() []time.Duration {
	var out []time.Duration
	for _, rec := range r.Records {
		if rec.Done {
			out = append(out, rec.TTFT)
		}
	}
	slices.Sort(out)
	return out
}

// progress writes a progress line every ProgressInterval until ctx ends.
func (r *Replayer) progress(ctx context.Context) {
	start := time.Now()
	t := time.NewTicker(r.cfg.ProgressInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		r.mu.Lock()
		r.writeProgressLocked(time.Since(start))
		r.mu.Unlock()
	}
}

// writeProgressLocked writes one progress line. r.mu is held.
func (r *Replayer) writeProgressLocked(wall time.Duration) {
	p90 := "-"
	if len(r.ttfts) > 0 {
		s := slices.Clone(r.ttfts)
		slices.Sort(s)
		p90 = fmt.Sprintf("%.2fs", quantile(s, 0.9))
	}
	writeLine(r.opts.Progress, fmt.Sprintf("replay %s: %d/%d sent, %d done, %d failed, ttft p90 %s, wall %s",
		r.cfg.Mode, r.sent, len(r.wl.Requests), r.finished-r.errs, r.errs, p90, wall.Round(time.Second)))
}

func writeLine(w io.Writer, s string) { _, _ = io.WriteString(w, s+"\n") }
