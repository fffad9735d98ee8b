package replay

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"time"

	"github.com/kvrouter/router/traces"
)

// MooncakeBlockTokens is the number of tokens of one hash id of a Mooncake
// trace.
const MooncakeBlockTokens = 512

// Request is one request of a workload.
type Request struct {
	// Index is the request's position in the workload.
	Index int
	// Arrival is when the request arrives, in simulated time since the
	// start of the replay.
	Arrival time.Duration
	// InputLength and OutputLength count tokens; OutputLength is at least 1.
	InputLength, OutputLength int
	// HashIDs name the prompt's blocks of Workload.BlockTokens tokens;
	// requests that share leading ids share that prefix.
	HashIDs []uint64
}

// Workload is a list of requests in arrival order, and how to make their
// tokens.
type Workload struct {
	// Name describes the workload in reports.
	Name string
	// BlockTokens is the number of tokens each hash id stands for.
	BlockTokens int
	Requests    []Request
}

// Tokens appends the prompt of r to dst: BlockTokens synthetic token ids
// per hash id (traces.Tokens: a function of the id and the position only),
// cut to InputLength.
func (w *Workload) Tokens(r *Request, dst []uint32) []uint32 {
	start := len(dst)
	dst = traces.Tokens(r.HashIDs, w.BlockTokens, dst)
	if len(dst)-start > r.InputLength {
		dst = dst[:start+r.InputLength]
	}
	return dst
}

// TraceOptions select and scale part of a trace.
type TraceOptions struct {
	// RateScale multiplies the request rate: arrivals come at
	// timestamp/RateScale. 1 replays the trace's own rate.
	RateScale float64
	// Window keeps the requests whose timestamp is before it (0 keeps
	// all), measured on the trace's own clock.
	Window time.Duration
	// MaxRequests keeps at most this many (0 keeps all).
	MaxRequests int
}

// ErrEmptyWorkload means a workload has no request to replay.
var ErrEmptyWorkload = errors.New("workload has no requests")

// FromTrace turns Mooncake trace requests into a workload. Requests keep
// their file order; an arrival earlier than the one before is moved up to
// it, since the trace's timestamps may go backwards.
func FromTrace(name string, reqs []traces.Request, opts TraceOptions) (*Workload, error) {
	if opts.RateScale <= 0 || math.IsInf(opts.RateScale, 0) || math.IsNaN(opts.RateScale) {
		return nil, fmt.Errorf("--rate-scale: %g must be a positive number", opts.RateScale)
	}
	w := &Workload{Name: name, BlockTokens: MooncakeBlockTokens}
	var last time.Duration
	for _, tr := range reqs {
		if opts.Window > 0 && time.Duration(tr.Timestamp)*time.Millisecond >= opts.Window {
			continue
		}
		if opts.MaxRequests > 0 && len(w.Requests) >= opts.MaxRequests {
			break
		}
		at := max(time.Duration(float64(tr.Timestamp)*float64(time.Millisecond)/opts.RateScale), last)
		last = at
		in := min(tr.InputLength, len(tr.HashIDs)*MooncakeBlockTokens)
		if in < 1 {
			continue // nothing to prefill: not a request a router sees
		}
		w.Requests = append(w.Requests, Request{
			Index: len(w.Requests), Arrival: at,
			InputLength: in, OutputLength: max(tr.OutputLength, 1), HashIDs: tr.HashIDs,
		})
	}
	if len(w.Requests) == 0 {
		return nil, ErrEmptyWorkload
	}
	return w, nil
}

// SyntheticConfig describes a synthetic multi-turn chat workload: users
// hold conversations that start from one of a few shared system prompts and
// grow by a user turn per request, with Poisson arrivals.
type SyntheticConfig struct {
	// Seed makes the workload; the same seed gives the same workload.
	Seed uint64
	// Requests is the number of requests.
	Requests int
	// Rate is the mean arrival rate, requests per simulated second.
	Rate float64
	// Users is the number of concurrent conversations.
	Users int
	// SystemPrompts is the number of distinct system prompts, and
	// SystemBlocks their length in blocks.
	SystemPrompts, SystemBlocks int
	// TurnBlocks is the mean number of new blocks a turn adds.
	TurnBlocks int
	// MaxBlocks ends a conversation once its prompt would pass it.
	MaxBlocks int
	// OutputTokens is the mean output length.
	OutputTokens int
	// BlockTokens is the number of tokens a block stands for.
	BlockTokens int
}

// DefaultSyntheticConfig returns a chat workload of 1,000 requests at 10/s
// from 64 users over 4 system prompts of 2,048 tokens, turns of ~1,024
// tokens, conversations up to 32,768 tokens, 256 output tokens, blocks of
// 512 tokens.
func DefaultSyntheticConfig() SyntheticConfig {
	return SyntheticConfig{
		Seed: 1, Requests: 1000, Rate: 10, Users: 64,
		SystemPrompts: 4, SystemBlocks: 4, TurnBlocks: 2, MaxBlocks: 64,
		OutputTokens: 256, BlockTokens: MooncakeBlockTokens,
	}
}

// Validate reports every field out of range, naming its flag.
func (c SyntheticConfig) Validate() error {
	var errs []error
	check := func(flag string, v, lo, hi int) {
		if v < lo || v > hi {
			errs = append(errs, fmt.Errorf("--%s: %d is outside %d..%d", flag, v, lo, hi))
		}
	}
	check("requests", c.Requests, 1, 10_000_000)
	check("users", c.Users, 1, 1_000_000)
	check("system-prompts", c.SystemPrompts, 1, 1_000_000)
	check("system-blocks", c.SystemBlocks, 0, 100_000)
	check("turn-blocks", c.TurnBlocks, 1, 100_000)
	check("max-blocks", c.MaxBlocks, c.SystemBlocks+c.TurnBlocks, 1_000_000)
	check("output-tokens", c.OutputTokens, 1, 1_000_000)
	check("block-tokens", c.BlockTokens, 1, 1<<16)
	if !(c.Rate > 0 && c.Rate <= 1e6) {
		errs = append(errs, fmt.Errorf("--rate: %g is outside (0, 1e6]", c.Rate))
	}
	return errors.Join(errs...)
}

// Synthetic makes a synthetic chat workload. Hash ids 1..SystemPrompts ×
// SystemBlocks are the system prompts; every turn's blocks get fresh ids.
func Synthetic(cfg SyntheticConfig) (*Workload, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	rng := rand.New(rand.NewPCG(cfg.Seed, 0x73796e7468)) // "synth"
	next := uint64(cfg.SystemPrompts*cfg.SystemBlocks) + 1
	convs := make([][]uint64, cfg.Users)
	w := &Workload{
		Name:        fmt.Sprintf("synthetic chat (seed %d, %d users, %.3g req/s)", cfg.Seed, cfg.Users, cfg.Rate),
		BlockTokens: cfg.BlockTokens,
	}
	var at float64
	for i := range cfg.Requests {
		at += rng.ExpFloat64() / cfg.Rate
		u := rng.IntN(cfg.Users)
		turn := 1 + rng.IntN(2*cfg.TurnBlocks) // mean TurnBlocks + 1/2
		if len(convs[u]) == 0 || len(convs[u])+turn > cfg.MaxBlocks {
			sys := rng.IntN(cfg.SystemPrompts)
			convs[u] = convs[u][:0]
			for b := range cfg.SystemBlocks {
				convs[u] = append(convs[u], uint64(sys*cfg.SystemBlocks+b)+1)
			}
		}
		for range turn {
			convs[u] = append(convs[u], next)
			next++
		}
		ids := append([]uint64(nil), convs[u]...)
		out := cfg.OutputTokens/2 + rng.IntN(cfg.OutputTokens+1)
		w.Requests = append(w.Requests, Request{
			Index: i, Arrival: time.Duration(at * float64(time.Second)),
			InputLength: len(ids) * cfg.BlockTokens, OutputLength: max(out, 1), HashIDs: ids,
		})
	}
	return w, nil
}
