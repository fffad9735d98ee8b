package service

import (
	"encoding/json"
	"errors"
	"math"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/kvrouter/router/indexer"
	"github.com/kvrouter/router/metrics"
	"github.com/kvrouter/router/scheduler"
)

func TestDecodeRoute(t *testing.T) {
	f := func(v float64) *float64 { return &v }
	tests := []struct {
		name string
		in   string
		want scheduler.Request
	}{
		{name: "tokens", in: `{"token_ids":[1,2,3]}`, want: scheduler.Request{Tokens: []uint32{1, 2, 3}}},
		{name: "everything", in: `{"request_id":"r-1","token_ids":[0, 4294967295],"isl":3,"lora_name":"adapter-a","worker_type":"disaggregated",
			"book":false,"priority_jump":1.5,"do_not_queue":true,"allowed_worker_ids":[7,18446744073709551615],
			"router_config_override":{"overlap_score_weight":2,"router_temperature":0.5,"overlap_score_credit":null}}`,
			want: scheduler.Request{
				ID: "r-1", Tokens: []uint32{0, 4294967295}, ISL: 3, LoRAName: "adapter-a", Type: scheduler.WorkerTypeDisaggregated,
				QueryOnly: true, PriorityJump: 1.5, DoNotQueue: true, AllowedWorkerIDs: []indexer.WorkerID{7, math.MaxUint64},
				Override: &scheduler.Override{OverlapScoreWeight: f(2), Temperature: f(0.5)},
			}},
		{name: "block hashes, negative as i64 bits", in: `{"block_hashes":[9143094415614847814,-1]}`,
			want: scheduler.Request{BlockHashes: []indexer.LocalHash{9143094415614847814, math.MaxUint64}}},
		{name: "nulls are absent", in: `{"token_ids":[5],"block_hashes":null,"lora_name":null,"request_id":null}`, want: scheduler.Request{Tokens: []uint32{5}}},
		{name: "empty prompt", in: `{"token_ids":[]}`, want: scheduler.Request{Tokens: []uint32{}}},
		{name: "escapes", in: `{"request_id":"a\"b\\c\u00e9\ud83d\ude00","token_ids":[1]}`, want: scheduler.Request{ID: "a\"b\\cé😀", Tokens: []uint32{1}}},
		{name: "white space", in: " \n{ \"token_ids\" : [ 1 , 2 ] }\t", want: scheduler.Request{Tokens: []uint32{1, 2}}},
		{name: "retry", in: `{"request_id":"r","token_ids":[1],"retry":true}`, want: scheduler.Request{ID: "r", Tokens: []uint32{1}, Retry: true}},
		{name: "retry null", in: `{"token_ids":[1],"retry":null}`, want: scheduler.Request{Tokens: []uint32{1}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var r request
			if err := decodeRequest([]byte(tt.in), &r, routeFields, 16); err != nil {
				t.Fatalf("decode: %v", err)
			}
			if diff := cmp.Diff(tt.want, r.sched, cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("request (-want +got):\n%s", diff)
			}
		})
	}
}

func TestDecodeRouteRejects(t *testing.T) {
	tests := []struct {
		name, in, reason, msg string
	}{
		{"not json", `hello`, metrics.BadRequestMalformed, "malformed JSON"},
		{"truncated", `{"token_ids":[1,2`, metrics.BadRequestMalformed, "malformed JSON"},
		{"trailing garbage", `{"token_ids":[1]} x`, metrics.BadRequestMalformed, "malformed JSON at byte 18: data after the request"},
		{"array", `[1,2]`, metrics.BadRequestMalformed, "expected an object, found an array"},
		{"neither", `{"isl":5}`, metrics.BadRequestNoTokens, "neither token_ids nor block_hashes"},
		{"both", `{"token_ids":[1],"block_hashes":[2]}`, metrics.BadRequestMalformed, "exclusive"},
		{"unknown field", `{"token_ids":[1],"tokens":[2]}`, metrics.BadRequestMalformed, `unknown field "tokens"`},
		{"unknown field even if null", `{"token_ids":[1],"bogus":null}`, metrics.BadRequestMalformed, `unknown field "bogus"`},
		{"case matters", `{"Token_IDs":[1]}`, metrics.BadRequestMalformed, `unknown field "Token_IDs"`},
		{"repeated field", `{"token_ids":[1],"token_ids":[2]}`, metrics.BadRequestMalformed, "token_ids appears twice"},
		{"unknown worker_type", `{"token_ids":[1],"worker_type":"gpu"}`, metrics.BadRequestWorkerType, `worker_type: "gpu" is unknown`},
		{"negative isl", `{"token_ids":[1],"isl":-1}`, metrics.BadRequestOutOfRange, "isl: expected an unsigned integer, found -1"},
		{"absurd isl", `{"token_ids":[1],"isl":1000001}`, metrics.BadRequestOutOfRange, "isl: 1000001 is out of range"},
		{"token over u32", `{"token_ids":[4294967296]}`, metrics.BadRequestOutOfRange, "token_ids: 4294967296 is out of range"},
		{"fractional token", `{"token_ids":[1.5]}`, metrics.BadRequestOutOfRange, "token_ids: expected an integer, found a number with a fraction or exponent"},
		{"token as string", `{"token_ids":["1"]}`, metrics.BadRequestMalformed, "token_ids: expected an integer, found a string"},
		{"leading zero", `{"token_ids":[01]}`, metrics.BadRequestMalformed, "malformed JSON at byte 16: token_ids: number with a leading zero"},
		{"leading zero later", `{"token_ids":[1,007]}`, metrics.BadRequestMalformed, "malformed JSON"},
		{"trailing comma", `{"token_ids":[1,]}`, metrics.BadRequestMalformed, "malformed JSON at byte 16: unexpected ']'"},
		{"missing comma", `{"token_ids":[1 2]}`, metrics.BadRequestMalformed, "token_ids: expected ',' or ']' in an array"},
		{"token over u32 later", `{"token_ids":[1, 4294967296 ]}`, metrics.BadRequestOutOfRange, "token_ids: 4294967296 is out of range"},
		{"negative priority_jump", `{"token_ids":[1],"priority_jump":-2}`, metrics.BadRequestOutOfRange, "priority_jump: -2 is out of range"},
		{"absurd priority_jump", `{"token_ids":[1],"priority_jump":1e300}`, metrics.BadRequestOutOfRange, "priority_jump"},
		{"empty allowed", `{"token_ids":[1],"allowed_worker_ids":[]}`, metrics.BadRequestMalformed, "allowed_worker_ids: empty"},
		{"book not bool", `{"token_ids":[1],"book":1}`, metrics.BadRequestMalformed, "book: expected true or false, found a number"},
		{"retry not bool", `{"token_ids":[1],"retry":"yes"}`, metrics.BadRequestMalformed, "retry: expected true or false, found a string"},
		{"empty request_id", `{"token_ids":[1],"request_id":""}`, metrics.BadRequestMalformed, "request_id: empty"},
		{"long request_id", `{"token_ids":[1],"request_id":"` + strings.Repeat("x", 300) + `"}`, metrics.BadRequestTooLarge, "request_id: 300 bytes"},
		{"credit over 1", `{"token_ids":[1],"router_config_override":{"overlap_score_credit":2}}`, metrics.BadRequestOutOfRange, "router_config_override.overlap_score_credit"},
		{"unknown override", `{"token_ids":[1],"router_config_override":{"temperature":1}}`, metrics.BadRequestMalformed, `router_config_override: unknown field "temperature"`},
		{"negative temperature", `{"token_ids":[1],"router_config_override":{"router_temperature":-1}}`, metrics.BadRequestOutOfRange, "router_config_override.router_temperature: -1 is out of range"},
		{"too many block hashes", `{"block_hashes":[` + strings.Repeat("1,", 62500) + `1]}`, metrics.BadRequestTooLarge, "block_hashes: more than 62500 blocks"},
		{"invalid utf-8", "{\"token_ids\":[1],\"lora_name\":\"\xff\"}", metrics.BadRequestMalformed, "lora_name: not valid UTF-8"},
		{"control character", "{\"token_ids\":[1],\"lora_name\":\"a\nb\"}", metrics.BadRequestMalformed, "control character"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var r request
			err := decodeRequest([]byte(tt.in), &r, routeFields, 16)
			var re *requestError
			if !errors.As(err, &re) {
				t.Fatalf("decode = %v, want a request error", err)
			}
			if re.reason != tt.reason || !strings.Contains(re.msg, tt.msg) {
				t.Errorf("decode = reason %q, %q; want %q, containing %q", re.reason, re.msg, tt.reason, tt.msg)
			}
		})
	}
}

func TestDecodePromptRequestRefusesRouteFields(t *testing.T) {
	var r request
	err := decodeRequest([]byte(`{"token_ids":[1],"book":true}`), &r, promptFields, 16)
	if err == nil || !strings.Contains(err.Error(), `unknown field "book"`) {
		t.Errorf("overlap_scores with book = %v, want unknown field", err)
	}
}

func TestDecodeMark(t *testing.T) {
	tests := []struct {
		name string
		in   string
		free bool
		want markRequest
		err  string
	}{
		{name: "prefill", in: `{"request_id":"r-1"}`, want: markRequest{id: "r-1", outputTokens: -1}},
		{name: "free with output tokens", in: `{"request_id":"r-1","output_tokens":120}`, free: true, want: markRequest{id: "r-1", outputTokens: 120}},
		{name: "output tokens on prefill", in: `{"request_id":"r-1","output_tokens":1}`, err: `unknown field "output_tokens"`},
		{name: "missing id", in: `{}`, free: true, err: "request_id: missing"},
		{name: "negative output", in: `{"request_id":"r","output_tokens":-3}`, free: true, err: "output_tokens: expected an unsigned integer, found -3"},
		{name: "router id", in: `{"request_id":"r","router_id":18446744073709551615}`, want: markRequest{id: "r", outputTokens: -1, routerID: math.MaxUint64}},
		{name: "router id on free", in: `{"router_id":42,"request_id":"r","output_tokens":1}`, free: true, want: markRequest{id: "r", outputTokens: 1, routerID: 42}},
		{name: "router id null", in: `{"request_id":"r","router_id":null}`, want: markRequest{id: "r", outputTokens: -1}},
		{name: "router id twice", in: `{"request_id":"r","router_id":1,"router_id":2}`, err: "router_id appears twice"},
		{name: "router id as string", in: `{"request_id":"r","router_id":"2a"}`, err: "router_id: expected an integer, found a string"},
		{name: "negative router id", in: `{"request_id":"r","router_id":-1}`, err: "router_id: expected an unsigned integer, found -1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := decodeMark([]byte(tt.in), tt.free)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("decodeMark = %v, want %q", err, tt.err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Errorf("decodeMark = %+v, %v; want %+v", got, err, tt.want)
			}
		})
	}
}

func TestAppendString(t *testing.T) {
	for _, s := range []string{"", "plain", "q\"b\\s", "\x00\x1f\n", "é😀", "bad\xffutf8", "</script>"} {
		b := appendString(nil, s)
		var got string
		if err := json.Unmarshal(b, &got); err != nil {
			t.Fatalf("appendString(%q) = %s: %v", s, b, err)
		}
		want := strings.ToValidUTF8(s, "\ufffd")
		if got != want {
			t.Errorf("round trip of %q = %q", s, got)
		}
	}
}

// FuzzDecodeRoute feeds the route decoder arbitrary bytes. It must never
// panic; what it accepts must be valid JSON that encoding/json reads to the
// same fields; and re-encoding what it accepted must decode to the same
// request.
func FuzzDecodeRoute(f *testing.F) {
	for _, s := range []string{
		`{"token_ids":[1,2,3]}`,
		`{"request_id":"r-1","block_hashes":[-5,7],"isl":3,"worker_type":"auto","book":false,"priority_jump":0.5,"do_not_queue":true,"allowed_worker_ids":[1],"router_config_override":{"overlap_score_weight":1,"router_temperature":0}}`,
		`{"token_ids":[1],"lora_name":"a\u00e9"}`,
		`{"token_ids":[1e2]}`, `{"token_ids":[-0]}`, `{}`, `[`, `{"token_ids":[01]}`,
		`{"token_ids":[ 1 ,4294967295,0, 22 ] }`, `{"token_ids":[1,-2]}`,
		`{"request_id":"r","token_ids":[1],"retry":true}`, `{"token_ids":[1],"retry":null}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var r request
		if err := decodeRequest(data, &r, routeFields, 16); err != nil {
			var re *requestError
			if !errors.As(err, &re) || re.msg == "" {
				t.Fatalf("error %v is not a request error with a message", err)
			}
			return
		}
		if !json.Valid(data) {
			t.Fatalf("accepted invalid JSON %q", data)
		}
		var ref struct {
			RequestID *string          `json:"request_id"`
			TokenIDs  []uint32         `json:"token_ids"`
			ISL       *int             `json:"isl"`
			LoRAName  *string          `json:"lora_name"`
			Override  *json.RawMessage `json:"router_config_override"`
			Retry     *bool            `json:"retry"`
		}
		if err := json.Unmarshal(data, &ref); err != nil {
			t.Fatalf("accepted %q, which encoding/json refuses: %v", data, err)
		}
		q := r.sched
		if ref.RequestID != nil && *ref.RequestID != q.ID || ref.LoRAName != nil && *ref.LoRAName != q.LoRAName ||
			ref.ISL != nil && *ref.ISL != q.ISL || !cmp.Equal(ref.TokenIDs, q.Tokens, cmpopts.EquateEmpty()) ||
			ref.Retry != nil && *ref.Retry != q.Retry {
			t.Fatalf("encoding/json reads %q differently: %+v vs %+v", data, ref, q)
		}
		// Round trip through a canonical encoding.
		enc := encodeRequest(q)
		var r2 request
		if err := decodeRequest(enc, &r2, routeFields, 16); err != nil {
			t.Fatalf("re-encoded %s: %v", enc, err)
		}
		if diff := cmp.Diff(q, r2.sched, cmpopts.EquateEmpty()); diff != "" {
			t.Fatalf("round trip of %q through %s (-first +second):\n%s", data, enc, diff)
		}
	})
}

// FuzzDecodeMark feeds the mark decoders arbitrary bytes. They must never
// panic; what they accept must be valid JSON that encoding/json reads to
// the same fields, into the client's types, which hold no other field.
func FuzzDecodeMark(f *testing.F) {
	for _, s := range []string{
		`{"request_id":"r-1"}`, `{"request_id":"r-1","output_tokens":120,"router_id":42}`,
		`{"request_id":"r","router_id":18446744073709551615}`, `{"request_id":"r","router_id":null}`,
		`{"request_id":"r","router_id":-1}`, `{"request_id":"\u00e9","output_tokens":null}`, `{}`, `[`,
	} {
		f.Add([]byte(s), true)
		f.Add([]byte(s), false)
	}
	f.Fuzz(func(t *testing.T, data []byte, free bool) {
		m, err := decodeMark(data, free)
		if err != nil {
			var re *requestError
			if !errors.As(err, &re) || re.msg == "" {
				t.Fatalf("error %v is not a request error with a message", err)
			}
			return
		}
		if !json.Valid(data) {
			t.Fatalf("accepted invalid JSON %q", data)
		}
		var ref struct {
			RequestID    string  `json:"request_id"`
			OutputTokens *int    `json:"output_tokens"`
			RouterID     *uint64 `json:"router_id"`
		}
		if err := json.Unmarshal(data, &ref); err != nil {
			t.Fatalf("accepted %q, which encoding/json refuses: %v", data, err)
		}
		want := markRequest{id: ref.RequestID, outputTokens: -1}
		if ref.OutputTokens != nil {
			want.outputTokens = *ref.OutputTokens
		}
		if ref.RouterID != nil {
			want.routerID = *ref.RouterID
		}
		if m != want || !free && ref.OutputTokens != nil {
			t.Fatalf("encoding/json reads %q as %+v, the decoder as %+v", data, want, m)
		}
	})
}

// encodeRequest writes a request as a client would, with encoding/json.
func encodeRequest(q scheduler.Request) []byte {
	m := map[string]any{"book": !q.QueryOnly, "priority_jump": q.PriorityJump, "do_not_queue": q.DoNotQueue, "worker_type": q.Type.String(), "isl": q.ISL, "retry": q.Retry}
	if q.ID != "" {
		m["request_id"] = q.ID
	}
	if q.LoRAName != "" {
		m["lora_name"] = q.LoRAName
	}
	if q.Tokens != nil {
		m["token_ids"] = q.Tokens
	} else {
		m["block_hashes"] = q.BlockHashes
	}
	if q.AllowedWorkerIDs != nil {
		m["allowed_worker_ids"] = q.AllowedWorkerIDs
	}
	if o := q.Override; o != nil {
		m["router_config_override"] = map[string]*float64{
			"overlap_score_weight": o.OverlapScoreWeight, "overlap_score_credit": o.OverlapScoreCredit,
			"prefill_load_scale": o.PrefillLoadScale, "router_temperature": o.Temperature,
		}
	}
	b, err := json.Marshal(m)
	if err != nil {
		panic(err)
	}
	return b
}
