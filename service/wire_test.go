package service

import (
	"bytes"
	"encoding/json"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/kvrouter/router/client"
	"github.com/kvrouter/router/indexer"
	"github.com/kvrouter/router/internal/testutil"
	"github.com/kvrouter/router/scheduler"
)

// The client package's wire types describe what the decoder takes and the
// encoder writes; these tests hold the three together, so that a document
// checked against the types (docs/openapi.yaml) is checked against the
// router, and a frontend that uses the client speaks the router's JSON.

// jsonNames returns the JSON names of t's fields, in order.
func jsonNames(t reflect.Type) []string {
	var names []string
	for _, f := range testutil.JSONFields(t) {
		names = append(names, f.Name)
	}
	return names
}

// The decoder's tables of fields are the request types' fields.
func TestWireRequestFieldsMatchDecoder(t *testing.T) {
	var override []string
	for _, f := range overrideFields {
		override = append(override, f.name)
	}
	tests := []struct {
		name string
		typ  any
		want []string
	}{
		{"route", client.RouteRequest{}, requestFields[:]},
		{"prompt", client.Prompt{}, requestFields[:4]},
		{"router_config_override", client.RouterConfigOverride{}, override},
		{"mark_prefill", client.MarkPrefillRequest{}, []string{"request_id", "router_id"}},
		{"mark_free", client.MarkFreeRequest{}, []string{"request_id", "output_tokens", "router_id"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := jsonNames(reflect.TypeOf(tc.typ))
			if diff := cmp.Diff(slices.Sorted(slices.Values(tc.want)), slices.Sorted(slices.Values(got))); diff != "" {
				t.Errorf("fields (-decoder +type):\n%s", diff)
			}
		})
	}
}

// A request written with the types, every field set, decodes to what it
// says; and the mark decoders refuse any field the types lack.
func TestWireRequestsDecode(t *testing.T) {
	t.Run("route", func(t *testing.T) {
		for _, prompt := range []string{"token_ids", "block_hashes"} {
			in := client.RouteRequest{
				RequestID: "r-1", Prompt: client.Prompt{ISL: 12, LoRAName: "a"}, WorkerType: client.WorkerTypeDisaggregated, Book: ptr(false),
				PriorityJump: 1.5, DoNotQueue: true, AllowedWorkerIDs: []client.WorkerID{7, 9},
				RouterConfigOverride: &client.RouterConfigOverride{OverlapScoreWeight: ptr(1.0), OverlapScoreCredit: ptr(0.5), PrefillLoadScale: ptr(2.0), RouterTemperature: ptr(0.1)},
				Retry:                true,
			}
			if prompt == "token_ids" {
				in.TokenIDs = []uint32{1, 2, 3, 4}
			} else {
				in.BlockHashes = []uint64{1 << 63, 5}
			}
			body, err := json.Marshal(in)
			if err != nil {
				t.Fatal(err)
			}
			var req request
			if err := decodeRequest(body, &req, routeFields, 4); err != nil {
				t.Fatalf("%s: %v", body, err)
			}
			q := req.sched
			want := scheduler.Request{
				ID: "r-1", ISL: 12, LoRAName: "a", Type: scheduler.WorkerTypeDisaggregated, QueryOnly: true,
				PriorityJump: 1.5, DoNotQueue: true, AllowedWorkerIDs: []indexer.WorkerID{7, 9},
				Override: &scheduler.Override{OverlapScoreWeight: ptr(1.0), OverlapScoreCredit: ptr(0.5), PrefillLoadScale: ptr(2.0), Temperature: ptr(0.1)},
				Retry:    true,
			}
			if prompt == "token_ids" {
				want.Tokens = []uint32{1, 2, 3, 4}
			} else {
				want.BlockHashes = []indexer.LocalHash{1 << 63, 5}
			}
			if diff := cmp.Diff(want, q); diff != "" {
				t.Errorf("%s decoded (-want +got):\n%s", body, diff)
			}
		}
	})
	t.Run("prompt", func(t *testing.T) {
		body, _ := json.Marshal(client.Prompt{TokenIDs: []uint32{}, ISL: 3, LoRAName: "b"})
		var req request
		if err := decodeRequest(body, &req, promptFields, 4); err != nil {
			t.Fatalf("%s: %v", body, err)
		}
		if diff := cmp.Diff(scheduler.Request{Tokens: []uint32{}, ISL: 3, LoRAName: "b"}, req.sched); diff != "" {
			t.Errorf("%s decoded (-want +got):\n%s", body, diff)
		}
	})
	t.Run("marks", func(t *testing.T) {
		body, _ := json.Marshal(client.MarkFreeRequest{RequestID: "r", OutputTokens: ptr(12), RouterID: 1 << 63})
		m, err := decodeMark(body, true)
		if err != nil || m != (markRequest{id: "r", outputTokens: 12, routerID: 1 << 63}) {
			t.Errorf("mark_free %s = %+v, %v", body, m, err)
		}
		body, _ = json.Marshal(client.MarkPrefillRequest{RequestID: "r", RouterID: 0xabc})
		if m, err = decodeMark(body, false); err != nil || m != (markRequest{id: "r", outputTokens: -1, routerID: 0xabc}) {
			t.Errorf("mark_prefill %s = %+v, %v", body, m, err)
		}
		// mark_prefill has no output_tokens, as its type has none.
		if _, err := decodeMark([]byte(`{"request_id":"r","output_tokens":1}`), false); err == nil || !strings.Contains(err.Error(), "unknown field") {
			t.Errorf("mark_prefill with output_tokens: %v, want unknown field", err)
		}
	})
}

// Every reply the encoder writes decodes into its type with no field left
// over, re-encodes to the same JSON, and sets every field of the type in
// at least one sample.
func TestWireRepliesMatchEncoder(t *testing.T) {
	w := func(id uint64, rank uint32) indexer.Worker {
		return indexer.Worker{ID: indexer.WorkerID(id), DPRank: indexer.DPRank(rank)}
	}
	tests := []struct {
		name    string
		typ     reflect.Type
		samples [][]byte
	}{
		{"route", reflect.TypeFor[client.Decision](), [][]byte{
			appendDecision(nil, scheduler.Decision{RequestID: "r", Choice: scheduler.Choice{Worker: w(7, 1), OverlapBlocks: 2}, NumBlocks: 4, Type: scheduler.WorkerTypeAggregated}, 0xabc, nil),
			appendDecision(nil, scheduler.Decision{Choice: scheduler.Choice{Worker: w(11, 0), OverlapBlocks: 3}, NumBlocks: 4, Type: scheduler.WorkerTypeDisaggregated,
				Prefill: scheduler.Choice{Worker: w(11, 0), OverlapBlocks: 3}, Decode: scheduler.Choice{Worker: w(7, 2)}}, 0, testURLs),
		}},
		{"mark", reflect.TypeFor[client.MarkReply](), [][]byte{appendSuccess(nil, true), appendSuccess(nil, false)}},
		{"overlap_scores", reflect.TypeFor[client.Overlaps](), [][]byte{
			appendOverlaps(nil, 16, 4, []scheduler.Overlap{{Worker: w(7, 0), OverlapBlocks: 3}, {Worker: w(9, 1), Kind: scheduler.KindPrefill, OverlapBlocks: 1}}, true),
			appendOverlaps(nil, 16, 0, nil, false),
			appendOverlaps(nil, 16, 10, []scheduler.Overlap{{Worker: w(3, 0), OverlapBlocks: 10, Host: 3, Disk: 2, External: 1}}, false),
		}},
		{"potential_loads", reflect.TypeFor[client.Loads](), [][]byte{
			appendLoads(nil, []scheduler.Load{{Worker: w(7, 0), PotentialPrefillTokens: 16, PotentialDecodeBlocks: 4, ActiveRequests: 1}}, scheduler.Pending{Requests: 2, ISLTokens: 30}),
			appendLoads(nil, nil, scheduler.Pending{}),
		}},
		{"error", reflect.TypeFor[client.ErrorReply](), [][]byte{AppendError(nil, "bad_request", "token_ids: \"x\"")}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			seen := map[string]bool{}
			for _, s := range tc.samples {
				v := reflect.New(tc.typ)
				dec := json.NewDecoder(bytes.NewReader(s))
				dec.DisallowUnknownFields()
				if err := dec.Decode(v.Interface()); err != nil {
					t.Fatalf("%s does not decode into %v: %v", s, tc.typ, err)
				}
				again, err := json.Marshal(v.Interface())
				if err != nil {
					t.Fatal(err)
				}
				var a, b any
				_ = json.Unmarshal(s, &a)
				_ = json.Unmarshal(again, &b)
				if diff := cmp.Diff(a, b); diff != "" {
					t.Errorf("%s through %v (-encoder +type):\n%s", s, tc.typ, diff)
				}
				collectKeys(a, "", seen)
			}
			for _, path := range fieldPaths(tc.typ, "") {
				if !seen[path] {
					t.Errorf("%v field %s is never written by the encoder", tc.typ, path)
				}
			}
		})
	}
}

// testURLs gives workers 7 and 11 a URL.
var testURLs = staticURLs{7: "http://10.0.0.7:8000", 11: "http://10.0.0.11:8000"}

// staticURLs is a fixed WorkerURLs.
type staticURLs map[indexer.WorkerID]string

func (u staticURLs) WorkerURL(id indexer.WorkerID) string { return u[id] }

// A route reply names the URL of each worker it names whose URL is known,
// and leaves out the others.
func TestDecisionWorkerURLs(t *testing.T) {
	w := func(id uint64) indexer.Worker { return indexer.Worker{ID: indexer.WorkerID(id)} }
	disagg := scheduler.Decision{Choice: scheduler.Choice{Worker: w(11)}, Type: scheduler.WorkerTypeDisaggregated,
		Prefill: scheduler.Choice{Worker: w(11)}, Decode: scheduler.Choice{Worker: w(7)}}
	tests := []struct {
		name string
		d    scheduler.Decision
		urls WorkerURLs
		want string
	}{
		{"aggregated", scheduler.Decision{Choice: scheduler.Choice{Worker: w(7)}, Type: scheduler.WorkerTypeAggregated}, testURLs,
			`{"worker_id":7,"dp_rank":0,"overlap_blocks":0,"num_blocks":0,"worker_type":"aggregated","worker_url":"http://10.0.0.7:8000"}`},
		{"unknown url", scheduler.Decision{Choice: scheduler.Choice{Worker: w(9)}, Type: scheduler.WorkerTypeAggregated}, testURLs,
			`{"worker_id":9,"dp_rank":0,"overlap_blocks":0,"num_blocks":0,"worker_type":"aggregated"}`},
		{"no urls", scheduler.Decision{Choice: scheduler.Choice{Worker: w(7)}, Type: scheduler.WorkerTypeAggregated}, nil,
			`{"worker_id":7,"dp_rank":0,"overlap_blocks":0,"num_blocks":0,"worker_type":"aggregated"}`},
		{"disaggregated", disagg, testURLs,
			`{"worker_id":11,"dp_rank":0,"overlap_blocks":0,"num_blocks":0,"worker_type":"disaggregated",` +
				`"prefill":{"worker_id":11,"dp_rank":0,"overlap_blocks":0},"decode":{"worker_id":7,"dp_rank":0},` +
				`"worker_url":"http://10.0.0.11:8000","prefill_worker_url":"http://10.0.0.11:8000","decode_worker_url":"http://10.0.0.7:8000"}`},
		{"disaggregated, decode url unknown", disagg, staticURLs{11: "https://p"},
			`{"worker_id":11,"dp_rank":0,"overlap_blocks":0,"num_blocks":0,"worker_type":"disaggregated",` +
				`"prefill":{"worker_id":11,"dp_rank":0,"overlap_blocks":0},"decode":{"worker_id":7,"dp_rank":0},` +
				`"worker_url":"https://p","prefill_worker_url":"https://p"}`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := string(appendDecision(nil, tc.d, 0, tc.urls)); got != tc.want {
				t.Errorf("reply\n got %s\nwant %s", got, tc.want)
			}
		})
	}
}

// collectKeys records the dotted path of every object key of v.
func collectKeys(v any, prefix string, seen map[string]bool) {
	switch v := v.(type) {
	case map[string]any:
		for k, e := range v {
			seen[prefix+k] = true
			collectKeys(e, prefix+k+".", seen)
		}
	case []any:
		for _, e := range v {
			collectKeys(e, prefix, seen)
		}
	}
}

// fieldPaths returns the dotted JSON paths of t's fields, nested structs
// (also through pointers and slices) included.
func fieldPaths(t reflect.Type, prefix string) []string {
	var out []string
	for _, f := range testutil.JSONFields(t) {
		name := f.Name
		out = append(out, prefix+name)
		ft := f.Type
		for ft.Kind() == reflect.Pointer || ft.Kind() == reflect.Slice {
			ft = ft.Elem()
		}
		if ft.Kind() == reflect.Struct {
			out = append(out, fieldPaths(ft, prefix+name+".")...)
		}
	}
	return out
}
