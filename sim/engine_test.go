package sim

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/nats-io/nats.go"

	"github.com/kvrouter/router/blockhash"
)

const ms = time.Millisecond

// testEngineConfig has round figures: a step costs 10 ms, plus 1 ms per
// prompt token and 2 ms per decoding sequence; blocks of 4 tokens.
func testEngineConfig() EngineConfig {
	return EngineConfig{
		BlockSize: 4, NumGPUBlocks: 64, MaxNumSeqs: 8, MaxNumBatchedTokens: 64, MaxWaiting: 8,
		Timing: Timing{StepOverhead: 10 * ms, PrefillPerToken: ms, DecodePerSeq: 2 * ms},
	}
}

func newTestEngine(t *testing.T, mod func(*EngineConfig)) *Engine {
	t.Helper()
	cfg := testEngineConfig()
	if mod != nil {
		mod(&cfg)
	}
	e, err := NewEngine(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// prompt returns a request for tokens first..first+n-1, hashed as the router
// hashes them, in blocks of 4.
func prompt(id string, first uint32, n, maxTokens int) Request {
	toks := make([]uint32, n)
	for i := range toks {
		toks[i] = first + uint32(i)
	}
	h, _ := blockhash.NewHasher(4, blockhash.Options{})
	locals := h.LocalHashes(nil, toks)
	return Request{ID: id, PromptTokens: n, Blocks: chain(locals...), MaxTokens: maxTokens}
}

// drain advances until the engine is idle and returns every notice.
func drain(e *Engine) []Notice {
	var out []Notice
	for {
		end, ok := e.Next()
		if !ok {
			return out
		}
		out = e.Advance(end, out)
	}
}

func TestEngineTiming(t *testing.T) {
	tests := []struct {
		name   string
		mod    func(*EngineConfig)
		submit []struct {
			at  time.Duration
			req Request
		}
		want []Notice
	}{
		{
			name: "prefill then decode steps",
			submit: []struct {
				at  time.Duration
				req Request
			}{{0, prompt("a", 1, 8, 3)}},
			// Prefill of 8 tokens: 10 + 8 = 18 ms; two decode steps of
			// 10 + 2 = 12 ms each.
			want: []Notice{
				{Kind: NoticeFirstToken, RequestID: "a", FirstToken: 18 * ms, PromptBlocks: 2, OutputTokens: 1},
				{Kind: NoticeDone, RequestID: "a", FirstToken: 18 * ms, Done: 42 * ms, PromptBlocks: 2, OutputTokens: 3},
			},
		},
		{
			name: "chunked prefill",
			mod:  func(c *EngineConfig) { c.MaxNumBatchedTokens, c.MaxNumSeqs = 4, 4 },
			submit: []struct {
				at  time.Duration
				req Request
			}{{0, prompt("a", 1, 10, 1)}},
			// Chunks of 4, 4 and 2 tokens: 14 + 14 + 12 ms.
			want: []Notice{
				{Kind: NoticeFirstToken, RequestID: "a", FirstToken: 40 * ms, PromptBlocks: 2, OutputTokens: 1},
				{Kind: NoticeDone, RequestID: "a", FirstToken: 40 * ms, Done: 40 * ms, PromptBlocks: 2, OutputTokens: 1},
			},
		},
		{
			name: "decode step grows with the batch",
			submit: []struct {
				at  time.Duration
				req Request
			}{{0, prompt("a", 1, 4, 3)}, {0, prompt("b", 100, 4, 2)}},
			// a alone: 10 + 4 = 14 ms (an idle engine starts at once); a
			// decoding with b's prefill: 10 + 2 + 4 = 16 ms; both decoding:
			// 10 + 2×2 = 14 ms, against 12 ms for one.
			want: []Notice{
				{Kind: NoticeFirstToken, RequestID: "a", FirstToken: 14 * ms, PromptBlocks: 1, OutputTokens: 1},
				{Kind: NoticeFirstToken, RequestID: "b", Scheduled: 14 * ms, FirstToken: 30 * ms, PromptBlocks: 1, OutputTokens: 1},
				{Kind: NoticeDone, RequestID: "a", FirstToken: 14 * ms, Done: 44 * ms, PromptBlocks: 1, OutputTokens: 3},
				{Kind: NoticeDone, RequestID: "b", Scheduled: 14 * ms, FirstToken: 30 * ms, Done: 44 * ms, PromptBlocks: 1, OutputTokens: 2},
			},
		},
		{
			name: "max_num_seqs makes the second wait",
			mod:  func(c *EngineConfig) { c.MaxNumSeqs = 1 },
			submit: []struct {
				at  time.Duration
				req Request
			}{{0, prompt("a", 1, 4, 2)}, {0, prompt("b", 100, 4, 1)}},
			// a: 14 ms prefill, 12 ms decode; b starts at 26 ms: 14 ms.
			want: []Notice{
				{Kind: NoticeFirstToken, RequestID: "a", FirstToken: 14 * ms, PromptBlocks: 1, OutputTokens: 1},
				{Kind: NoticeDone, RequestID: "a", FirstToken: 14 * ms, Done: 26 * ms, PromptBlocks: 1, OutputTokens: 2},
				{Kind: NoticeFirstToken, RequestID: "b", Scheduled: 26 * ms, FirstToken: 40 * ms, PromptBlocks: 1, OutputTokens: 1},
				{Kind: NoticeDone, RequestID: "b", Scheduled: 26 * ms, FirstToken: 40 * ms, Done: 40 * ms, PromptBlocks: 1, OutputTokens: 1},
			},
		},
		{
			name: "a request joins at the next step after it arrives",
			submit: []struct {
				at  time.Duration
				req Request
			}{{0, prompt("a", 1, 8, 2)}, {5 * ms, prompt("b", 100, 4, 1)}},
			// a's prefill runs 0..18 ms; b joins the step at 18 ms, with
			// a's decode: 10 + 4 + 2 = 16 ms.
			want: []Notice{
				{Kind: NoticeFirstToken, RequestID: "a", FirstToken: 18 * ms, PromptBlocks: 2, OutputTokens: 1},
				{Kind: NoticeFirstToken, RequestID: "b", Submitted: 5 * ms, Scheduled: 18 * ms, FirstToken: 34 * ms, PromptBlocks: 1, OutputTokens: 1},
				{Kind: NoticeDone, RequestID: "a", FirstToken: 18 * ms, Done: 34 * ms, PromptBlocks: 2, OutputTokens: 2},
				{Kind: NoticeDone, RequestID: "b", Submitted: 5 * ms, Scheduled: 18 * ms, FirstToken: 34 * ms, Done: 34 * ms, PromptBlocks: 1, OutputTokens: 1},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newTestEngine(t, tt.mod)
			var got []Notice
			for _, s := range tt.submit {
				got = e.Advance(s.at, got)
				if err := e.Submit(s.at, s.req); err != nil {
					t.Fatal(err)
				}
			}
			got = append(got, drain(e)...)
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Fatalf("notices (-want +got):\n%s", diff)
			}
			if st := e.Stats(); st.Running != 0 || st.Waiting != 0 || st.Cache.Reserved != 0 || st.Cache.Referenced != 0 {
				t.Fatalf("idle engine still holds work or blocks: %+v", st)
			}
		})
	}
}

func TestEnginePrefixReuse(t *testing.T) {
	e := newTestEngine(t, nil)
	if err := e.Submit(0, prompt("a", 1, 8, 1)); err != nil {
		t.Fatal(err)
	}
	drain(e)
	tests := []struct {
		name       string
		req        Request
		cached     int
		prefillEnd time.Duration // after the submit at 1 s
	}{
		// Same 8 tokens: the last token is always computed, so only the
		// first block is a hit; 4 tokens computed.
		{"same prompt", prompt("b", 1, 8, 1), 1, 14 * ms},
		// 9 tokens sharing the first 8: both blocks hit, 1 token computed.
		{"longer prompt", prompt("c", 1, 9, 1), 2, 11 * ms},
		// A different first token: nothing shared.
		{"other prompt", prompt("d", 2, 8, 1), 0, 18 * ms},
	}
	at := time.Second
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := e.Submit(at, tt.req); err != nil {
				t.Fatal(err)
			}
			ns := drain(e)
			if len(ns) != 2 || ns[0].CachedBlocks != tt.cached || ns[0].FirstToken-at != tt.prefillEnd {
				t.Fatalf("notices %+v: want %d cached blocks and first token %v after arrival", ns, tt.cached, tt.prefillEnd)
			}
			at += time.Second
		})
	}
	if st := e.Stats(); st.PromptBlocks != 8 || st.CachedBlocks != 3 {
		t.Fatalf("stats: %d prompt, %d cached blocks; want 8 and 3", st.PromptBlocks, st.CachedBlocks)
	}
}

func TestEngineEmitsEventsAsChunksComplete(t *testing.T) {
	e := newTestEngine(t, func(c *EngineConfig) { c.MaxNumBatchedTokens, c.MaxNumSeqs = 4, 4 })
	req := prompt("a", 1, 10, 1)
	if err := e.Submit(0, req); err != nil {
		t.Fatal(err)
	}
	var got [][]Event
	for {
		end, ok := e.Next()
		if !ok {
			break
		}
		e.Advance(end, nil)
		got = append(got, e.TakeEvents(nil))
	}
	b := req.Blocks
	want := [][]Event{
		{{Kind: EventStored, Blocks: b[:1]}},
		{{Kind: EventStored, HasParent: true, Parent: b[0].Hash, Blocks: b[1:2]}},
		nil, // the last chunk fills no block
	}
	if diff := cmp.Diff(want, got, cmpopts.EquateEmpty()); diff != "" {
		t.Fatalf("events per step (-want +got):\n%s", diff)
	}
}

func TestEngineSubmitErrors(t *testing.T) {
	e := newTestEngine(t, func(c *EngineConfig) { c.MaxWaiting, c.NumGPUBlocks, c.MaxNumSeqs = 2, 8, 1 })
	if err := e.Submit(0, prompt("a", 1, 8, 4)); err != nil {
		t.Fatal(err)
	}
	if err := e.Submit(0, prompt("b", 1, 8, 4)); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		req  Request
		want error
	}{
		{"longer than the cache", prompt("x", 1, 30, 3), ErrTooLong},
		{"no output", prompt("x", 1, 8, 0), ErrBadRequest},
		{"blocks disagree with length", Request{ID: "x", PromptTokens: 8, MaxTokens: 1}, ErrBadRequest},
		{"duplicate id", prompt("a", 1, 4, 1), ErrBadRequest},
		{"queue full", prompt("y", 1, 4, 1), ErrQueueFull},
	}
	// b is waiting (max_num_seqs 1); fill the queue to its cap of 2.
	if err := e.Submit(0, prompt("c", 1, 4, 1)); err != nil {
		t.Fatal(err)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := e.Submit(0, tt.req); !errors.Is(err, tt.want) {
				t.Fatalf("Submit = %v, want %v", err, tt.want)
			}
		})
	}
}

func TestEngineConfigValidate(t *testing.T) {
	if err := DefaultEngineConfig().Validate(); err != nil {
		t.Fatalf("defaults: %v", err)
	}
	tests := []struct {
		name string
		mod  func(*EngineConfig)
		flag string
	}{
		{"block size", func(c *EngineConfig) { c.BlockSize = 0 }, "--block-size"},
		{"blocks", func(c *EngineConfig) { c.NumGPUBlocks = -1 }, "--num-gpu-blocks"},
		{"batch below seqs", func(c *EngineConfig) { c.MaxNumBatchedTokens = 16 }, "--max-num-batched-tokens"},
		{"negative cost", func(c *EngineConfig) { c.Timing.DecodePerSeq = -1 }, "--decode-per-seq"},
		{"free steps", func(c *EngineConfig) { c.Timing.StepOverhead = 0 }, "--step-overhead"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := DefaultEngineConfig()
			tt.mod(&c)
			err := c.Validate()
			if err == nil || !strings.Contains(err.Error(), tt.flag) {
				t.Fatalf("Validate = %v, want an error naming %s", err, tt.flag)
			}
		})
	}
}

// recorder is a publisher that keeps what it gets, with the wall time
// (fake, in a synctest bubble) since it was made.
type recorder struct {
	start time.Time
	mu    sync.Mutex
	msgs  []recorded
}

type recorded struct {
	subject string
	data    []byte
	wall    time.Duration
}

func (r *recorder) Publish(subject string, data []byte) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.msgs = append(r.msgs, recorded{subject, append([]byte(nil), data...), time.Since(r.start)})
	return nil
}

func (r *recorder) on(subject string) []recorded {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []recorded
	for _, m := range r.msgs {
		if m.subject == subject {
			out = append(out, m)
		}
	}
	return out
}

// TestWorkerPacesStepsInRealTime runs a worker's real-time step loop in a
// synctest bubble: with speed-up 2, simulated steps of 18 and 12 ms take 9
// and 6 ms of (fake) wall time, and replies carry simulated times.
func TestWorkerPacesStepsInRealTime(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		clock := NewWallClock(2)
		cfg := WorkerConfig{Namespace: "ns", Component: "backend", Engine: testEngineConfig()}
		w, err := newWorker(cfg, 0, nil, nil, clock, slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		rec := &recorder{start: time.Now()}
		w.pub = rec
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error)
		go func() { done <- w.loop(ctx, clock) }()

		body, _ := json.Marshal(GenerateRequest{RequestID: "r1", TokenIDs: []uint32{1, 2, 3, 4, 5, 6, 7, 8}, MaxTokens: 3})
		w.onGenerate(&nats.Msg{Subject: "x", Reply: "inbox", Data: body})
		time.Sleep(time.Second)
		synctest.Wait()
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}

		var got []GenerateReply
		var walls []time.Duration
		for _, m := range rec.on("inbox") {
			var r GenerateReply
			if err := json.Unmarshal(m.data, &r); err != nil {
				t.Fatal(err)
			}
			got = append(got, r)
			walls = append(walls, m.wall)
		}
		want := []GenerateReply{
			{RequestID: "r1", Event: ReplyAccepted},
			{RequestID: "r1", Event: ReplyFirstToken, FirstTokenAt: 0.018, PromptBlocks: 2, OutputTokens: 1},
			{RequestID: "r1", Event: ReplyDone, FirstTokenAt: 0.018, DoneAt: 0.042, PromptBlocks: 2, OutputTokens: 3},
		}
		if diff := cmp.Diff(want, got, cmpopts.EquateApprox(0, 1e-9)); diff != "" {
			t.Fatalf("replies (-want +got):\n%s", diff)
		}
		if diff := cmp.Diff([]time.Duration{0, 9 * ms, 21 * ms}, walls); diff != "" {
			t.Fatalf("wall times of the replies (-want +got):\n%s", diff)
		}
		// The engine stored both prompt blocks; one event per step.
		if evs := rec.on(EventsSubject("ns", "backend")); len(evs) != 1 {
			t.Fatalf("%d KV events, want 1 (both blocks stored by the prefill step)", len(evs))
		}
	})
}

func TestWorkerRejectsBadRequests(t *testing.T) {
	w, err := newWorker(WorkerConfig{Namespace: "ns", Component: "c", Engine: testEngineConfig()}, 0, nil, nil,
		&ManualClock{}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	rec := &recorder{start: time.Now()}
	w.pub = rec
	tests := []struct {
		name, body, code string
	}{
		{"not json", "hello", CodeBadRequest},
		{"no tokens", `{"request_id":"a","max_tokens":1}`, CodeBadRequest},
		{"too long", `{"request_id":"a","max_tokens":1000,"token_ids":[1,2,3]}`, CodeTooLong},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			reply := fmt.Sprint("inbox.", i)
			w.onGenerate(&nats.Msg{Reply: reply, Data: []byte(tt.body)})
			msgs := rec.on(reply)
			if len(msgs) != 1 {
				t.Fatalf("%d replies, want 1", len(msgs))
			}
			var r GenerateReply
			if err := json.Unmarshal(msgs[0].data, &r); err != nil {
				t.Fatal(err)
			}
			if r.Event != ReplyError || r.Error == nil || r.Error.Code != tt.code {
				t.Fatalf("reply %+v, want an error with code %s", r, tt.code)
			}
		})
	}
}
