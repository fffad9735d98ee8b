package sim

import (
	"errors"
	"fmt"
	"slices"
	"time"
)

// Errors of Engine.Submit.
var (
	// ErrQueueFull means the engine's waiting queue is at MaxWaiting.
	ErrQueueFull = errors.New("waiting queue full")
	// ErrTooLong means the request's prompt and output need more KV blocks
	// than the whole cache has: it could never run.
	ErrTooLong = errors.New("request longer than the kv cache")
	// ErrBadRequest means the request contradicts itself (block count and
	// prompt length disagree, no output token asked for, a duplicate id).
	ErrBadRequest = errors.New("bad request")
)

// EngineConfig sizes one simulated engine, with vLLM's names.
type EngineConfig struct {
	// BlockSize is the number of tokens of a KV block (vLLM --block-size).
	BlockSize int
	// NumGPUBlocks is the number of KV blocks of the cache.
	NumGPUBlocks int
	// MaxNumSeqs caps the sequences running at once (vLLM --max-num-seqs).
	MaxNumSeqs int
	// MaxNumBatchedTokens caps the tokens of one step, prefill chunks and
	// decodes together (vLLM --max-num-batched-tokens): longer prompts are
	// prefilled in chunks over several steps.
	MaxNumBatchedTokens int
	// MaxWaiting caps the requests waiting to start; past it Submit fails
	// with ErrQueueFull.
	MaxWaiting int
	// Timing is the cost model.
	Timing Timing
}

// Limits of EngineConfig.
const (
	MaxBlockSize  = 1 << 16
	MaxGPUBlocks  = 1 << 26
	MaxNumSeqs    = 1 << 16
	MaxBatchToks  = 1 << 24
	MaxWaitingCap = 1 << 20
)

// DefaultEngineConfig returns the defaults: Dynamo's mocker block size (64)
// and vLLM's scheduler defaults, with a cache of 8,192 blocks (524,288
// tokens, about what an 8B model leaves for KV on an 80 GB GPU).
func DefaultEngineConfig() EngineConfig {
	return EngineConfig{
		BlockSize:           64,
		NumGPUBlocks:        8192,
		MaxNumSeqs:          256,
		MaxNumBatchedTokens: 8192,
		MaxWaiting:          4096,
		Timing:              DefaultTiming(),
	}
}

// Validate reports every field out of range, naming its flag.
func (c EngineConfig) Validate() error {
	var errs []error
	check := func(flag string, v, lo, hi int) {
		if v < lo || v > hi {
			errs = append(errs, fmt.Errorf("--%s: %d is outside %d..%d", flag, v, lo, hi))
		}
	}
	check("block-size", c.BlockSize, 1, MaxBlockSize)
	check("num-gpu-blocks", c.NumGPUBlocks, 1, MaxGPUBlocks)
	check("max-num-seqs", c.MaxNumSeqs, 1, MaxNumSeqs)
	check("max-num-batched-tokens", c.MaxNumBatchedTokens, 1, MaxBatchToks)
	check("max-waiting", c.MaxWaiting, 1, MaxWaitingCap)
	if c.MaxNumBatchedTokens < c.MaxNumSeqs {
		errs = append(errs, fmt.Errorf("--max-num-batched-tokens: %d is below --max-num-seqs %d (vLLM refuses this too)",
			c.MaxNumBatchedTokens, c.MaxNumSeqs))
	}
	if err := c.Timing.Validate(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// Request is a generate request as the engine takes it.
type Request struct {
	// ID names the request in its notices; unique among the engine's
	// unfinished requests.
	ID string
	// PromptTokens is the prompt length.
	PromptTokens int
	// Blocks are the prompt's full blocks, first first:
	// PromptTokens/BlockSize of them.
	Blocks []Block
	// MaxTokens is the number of tokens to generate (at least 1; the
	// simulated model never stops early).
	MaxTokens int
}

// NoticeKind says what a Notice reports.
type NoticeKind uint8

// The kinds of notice.
const (
	// NoticeFirstToken: the prefill is done and the first output token
	// exists.
	NoticeFirstToken NoticeKind = iota + 1
	// NoticeDone: the last output token exists; the request is finished.
	NoticeDone
)

// String names the kind as the generate protocol does.
func (k NoticeKind) String() string {
	switch k {
	case NoticeFirstToken:
		return "first_token"
	case NoticeDone:
		return "done"
	}
	return fmt.Sprintf("notice(%d)", uint8(k))
}

// Notice reports progress of a request. Times are simulated, on the clock of
// the engine's caller.
type Notice struct {
	Kind      NoticeKind
	RequestID string
	// Submitted, Scheduled (admitted to the running batch), FirstToken and
	// Done (zero until it happens) are the request's milestones.
	Submitted, Scheduled, FirstToken, Done time.Duration
	// PromptBlocks is the number of full prompt blocks, CachedBlocks how
	// many of them were prefix-cache hits when the request was scheduled.
	PromptBlocks, CachedBlocks int
	// OutputTokens is the number of tokens generated so far.
	OutputTokens int
}

// EngineStats are an engine's counts and current load.
type EngineStats struct {
	Submitted, Rejected, Finished uint64
	// PromptBlocks and CachedBlocks add up the notices' figures over every
	// scheduled request: their ratio is the prefix cache hit rate.
	PromptBlocks, CachedBlocks uint64
	Steps                      uint64
	Waiting, Running           int
	// PrefillTokens is the prompt tokens still to compute of the running
	// requests.
	PrefillTokens int
	Cache         CacheStats
}

// seq is a request inside the engine.
type seq struct {
	Request
	hashes []uint64 // sequence hashes of Blocks

	submitted, scheduled, firstToken time.Duration
	cached                           int // prompt blocks found in the cache when scheduled
	computed                         int // prompt tokens with KV, cached ones included
	held                             int // leading prompt blocks referenced in the cache
	reserved                         int // blocks reserved and not yet turned into cached blocks
	generated                        int
}

// context is the number of tokens with KV of a decoding sequence.
func (s *seq) context() int { return s.PromptTokens + s.generated }

// plan is the work of the step in flight.
type plan struct {
	prefills []*seq
	chunks   []chunk
	decodes  []*seq
}

func (p *plan) reset() {
	clear(p.prefills)
	clear(p.decodes)
	p.prefills, p.chunks, p.decodes = p.prefills[:0], p.chunks[:0], p.decodes[:0]
}

func (p *plan) empty() bool { return len(p.prefills) == 0 && len(p.decodes) == 0 }

// Engine is a simulated vLLM-like engine: a waiting queue, a running batch
// of at most MaxNumSeqs sequences, steps of at most MaxNumBatchedTokens
// tokens with chunked prefill, a prefix-caching KV cache, and a cost model
// that says how long each step takes.
//
// The engine is a pure state machine driven by explicit simulated times: it
// reads no clock and starts no goroutine, so it is deterministic. Submit
// queues a request (and starts a step if the engine was idle); Next says
// when the step in flight ends; Advance completes every step that ends by
// a given time, starting the next one at the end of each. A Worker drives it
// from a clock.
//
// Scheduling follows vLLM v1: each step serves the running sequences first,
// in the order they started (one token for each decoding sequence, a chunk
// of what the budget leaves for each one still prefilling), then admits
// waiting requests first come first served while the token budget and
// MaxNumSeqs allow. A request is admitted only when the cache can reserve
// every block it will need, prompt and output: the simulator never preempts,
// where vLLM allocates as it goes and preempts when it runs out. A prompt
// whose blocks are all cached still computes its last token, as in vLLM,
// so at most (PromptTokens-1)/BlockSize blocks can be hits. Computed prompt
// blocks are cached (and their stored events emitted) at the end of the
// step that completes them; output tokens are never cached (their ids are
// unknowable, so no later prompt could match them).
//
// An Engine is not safe for concurrent use.
type Engine struct {
	cfg   EngineConfig
	cache *Cache

	waiting []*seq // FIFO: waiting[0] is next
	running []*seq // in the order they were admitted
	ids     map[string]struct{}

	busy    bool
	stepEnd time.Duration
	plan    plan

	stats EngineStats
}

// NewEngine returns an idle engine with an empty cache.
func NewEngine(cfg EngineConfig) (*Engine, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Engine{cfg: cfg, cache: NewCache(cfg.NumGPUBlocks), ids: make(map[string]struct{})}, nil
}

// Config returns the engine's configuration.
func (e *Engine) Config() EngineConfig { return e.cfg }

// blocksFor returns the KV blocks a request needs in all.
func (e *Engine) blocksFor(r *Request) int {
	return (r.PromptTokens + r.MaxTokens + e.cfg.BlockSize - 1) / e.cfg.BlockSize
}

// Submit queues a request that arrives at now, and starts a step at now if
// the engine was idle. now must not be before the time of the last call to
// Advance.
func (e *Engine) Submit(now time.Duration, r Request) error {
	switch {
	case r.PromptTokens < 1 || r.MaxTokens < 1:
		e.stats.Rejected++
		return fmt.Errorf("%w: prompt of %d tokens, %d output tokens (both must be at least 1)", ErrBadRequest, r.PromptTokens, r.MaxTokens)
	case len(r.Blocks) != r.PromptTokens/e.cfg.BlockSize:
		e.stats.Rejected++
		return fmt.Errorf("%w: %d blocks for a prompt of %d tokens in blocks of %d", ErrBadRequest, len(r.Blocks), r.PromptTokens, e.cfg.BlockSize)
	case e.blocksFor(&r) > e.cfg.NumGPUBlocks:
		e.stats.Rejected++
		return fmt.Errorf("%w: %d + %d tokens need %d blocks, the cache has %d", ErrTooLong, r.PromptTokens, r.MaxTokens, e.blocksFor(&r), e.cfg.NumGPUBlocks)
	}
	if _, dup := e.ids[r.ID]; dup {
		e.stats.Rejected++
		return fmt.Errorf("%w: request id %q is already running", ErrBadRequest, r.ID)
	}
	if len(e.waiting) >= e.cfg.MaxWaiting {
		e.stats.Rejected++
		return fmt.Errorf("%w: %d requests waiting", ErrQueueFull, len(e.waiting))
	}
	s := &seq{Request: r, submitted: now, hashes: make([]uint64, len(r.Blocks))}
	for i, b := range r.Blocks {
		s.hashes[i] = b.Hash
	}
	e.ids[r.ID] = struct{}{}
	e.waiting = append(e.waiting, s)
	e.stats.Submitted++
	if !e.busy {
		e.start(now)
	}
	return nil
}

// Next returns the end of the step in flight; ok is false when the engine
// is idle.
func (e *Engine) Next() (end time.Duration, ok bool) { return e.stepEnd, e.busy }

// Advance completes every step that ends at or before now, each followed at
// once by the next if there is work, and appends what happened to dst.
func (e *Engine) Advance(now time.Duration, dst []Notice) []Notice {
	for e.busy && e.stepEnd <= now {
		end := e.stepEnd
		dst = e.finish(end, dst)
		e.start(end)
	}
	return dst
}

// TakeEvents appends the KV events since the last call to dst.
func (e *Engine) TakeEvents(dst []Event) []Event { return e.cache.TakeEvents(dst) }

// Cache returns the engine's cache, for tests. Changing it breaks the
// engine.
func (e *Engine) Cache() *Cache { return e.cache }

// Stats returns the engine's counts and load.
func (e *Engine) Stats() EngineStats {
	st := e.stats
	st.Waiting, st.Running = len(e.waiting), len(e.running)
	for _, s := range e.running {
		st.PrefillTokens += s.PromptTokens - s.computed
	}
	st.Cache = e.cache.Stats()
	return st
}

// start plans a step beginning at `at`, or leaves the engine idle if there
// is nothing to do.
func (e *Engine) start(at time.Duration) {
	e.plan.reset()
	budget := e.cfg.MaxNumBatchedTokens
	decodeContext := 0
	for _, s := range e.running {
		if budget == 0 {
			break
		}
		if s.computed == s.PromptTokens {
			e.plan.decodes = append(e.plan.decodes, s)
			decodeContext += s.context()
			budget--
			continue
		}
		n := min(s.PromptTokens-s.computed, budget)
		e.plan.prefills = append(e.plan.prefills, s)
		e.plan.chunks = append(e.plan.chunks, chunk{tokens: n, context: s.computed})
		budget -= n
	}
	// A request may not start before it arrives: with nothing running, an
	// idle engine starts when the first waiting request arrives.
	if len(e.running) == 0 && len(e.waiting) > 0 && e.waiting[0].submitted > at {
		at = e.waiting[0].submitted
	}
	for budget > 0 && len(e.running) < e.cfg.MaxNumSeqs && len(e.waiting) > 0 {
		s := e.waiting[0]
		if s.submitted > at || !e.admit(at, s) {
			break // first come, first served: nobody overtakes the head
		}
		e.waiting[0] = nil
		e.waiting = e.waiting[1:]
		e.running = append(e.running, s)
		n := min(s.PromptTokens-s.computed, budget)
		e.plan.prefills = append(e.plan.prefills, s)
		e.plan.chunks = append(e.plan.chunks, chunk{tokens: n, context: s.computed})
		budget -= n
	}
	if e.plan.empty() {
		e.busy = false
		return
	}
	e.busy = true
	e.stepEnd = at + e.cfg.Timing.step(e.plan.chunks, len(e.plan.decodes), decodeContext)
	e.stats.Steps++
}

// admit reserves the cache for s, reusing its cached prefix; false when the
// cache has no room now.
func (e *Engine) admit(at time.Duration, s *seq) bool {
	maxHits := (s.PromptTokens - 1) / e.cfg.BlockSize
	hits := e.cache.Match(s.hashes[:min(maxHits, len(s.hashes))])
	need := e.blocksFor(&s.Request) - hits
	if err := e.cache.Admit(s.hashes[:hits], need); err != nil {
		return false
	}
	s.scheduled = at
	s.cached, s.held, s.reserved = hits, hits, need
	s.computed = hits * e.cfg.BlockSize
	e.stats.PromptBlocks += uint64(len(s.Blocks))
	e.stats.CachedBlocks += uint64(hits)
	return true
}

// finish completes the step in flight at end.
func (e *Engine) finish(end time.Duration, dst []Notice) []Notice {
	for i, s := range e.plan.prefills {
		s.computed += e.plan.chunks[i].tokens
		if full := s.computed / e.cfg.BlockSize; full > s.held {
			var parent uint64
			if s.held > 0 {
				parent = s.hashes[s.held-1]
			}
			e.cache.Commit(s.held > 0, parent, s.Blocks[s.held:full])
			s.reserved -= full - s.held
			s.held = full
		}
		if s.computed == s.PromptTokens {
			s.generated, s.firstToken = 1, end
			dst = append(dst, e.notice(NoticeFirstToken, s, 0))
		}
	}
	for _, s := range e.plan.decodes {
		s.generated++
	}
	done := false
	for _, s := range e.running {
		if s.generated >= s.MaxTokens {
			e.cache.Release(s.hashes[:s.held], s.reserved)
			s.reserved = 0
			delete(e.ids, s.ID)
			e.stats.Finished++
			dst = append(dst, e.notice(NoticeDone, s, end))
			done = true
		}
	}
	if done {
		e.running = slices.DeleteFunc(e.running, func(s *seq) bool { return s.generated >= s.MaxTokens })
	}
	return dst
}

func (e *Engine) notice(k NoticeKind, s *seq, done time.Duration) Notice {
	return Notice{
		Kind: k, RequestID: s.ID,
		Submitted: s.submitted, Scheduled: s.scheduled, FirstToken: s.firstToken, Done: done,
		PromptBlocks: len(s.Blocks), CachedBlocks: s.cached, OutputTokens: s.generated,
	}
}
