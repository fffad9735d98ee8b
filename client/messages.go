package client

import (
	"encoding/json"
	"slices"
	"strconv"
)

// This file holds the requests and replies of docs/api.md §3, field for
// field: the one definition of the router's JSON as Go types. The router's
// tests hold its decoder and encoder to them (service/wire_test.go), and
// docs/openapi.yaml is checked against them (httpapi/openapi_test.go).
// Requests leave out what the router treats as absent (with omitzero
// where an empty list means something else than no list); replies are
// read leniently, so that fields a newer router adds are ignored.

// Endpoint is one of the router's endpoints, the last token of its
// subject.
type Endpoint string

// The router's endpoints.
const (
	EndpointRoute          Endpoint = "route"
	EndpointMarkPrefill    Endpoint = "mark_prefill"
	EndpointMarkFree       Endpoint = "mark_free"
	EndpointOverlapScores  Endpoint = "overlap_scores"
	EndpointPotentialLoads Endpoint = "potential_loads"
)

// Endpoints returns every endpoint, in the order of docs/api.md.
func Endpoints() []Endpoint {
	return []Endpoint{EndpointRoute, EndpointMarkPrefill, EndpointMarkFree, EndpointOverlapScores, EndpointPotentialLoads}
}

// WorkerID is a worker's instance id (its etcd lease id).
type WorkerID uint64

// DPRank is a data-parallel rank of a worker.
type DPRank uint32

// WorkerType is a serving mode: what a route request asks for, and what a
// decision is (docs/api.md §3, "Two words for two things").
type WorkerType string

// The serving modes.
const (
	// WorkerTypeAuto is disaggregated when prefill workers are registered,
	// aggregated otherwise; the router's default.
	WorkerTypeAuto WorkerType = "auto"
	// WorkerTypeAggregated: one worker prefills and decodes.
	WorkerTypeAggregated WorkerType = "aggregated"
	// WorkerTypePrefill: the prefill half only.
	WorkerTypePrefill WorkerType = "prefill"
	// WorkerTypeDecode: the decode half only, chosen by load.
	WorkerTypeDecode WorkerType = "decode"
	// WorkerTypeDisaggregated: a prefill worker, then a decode worker, in
	// one decision.
	WorkerTypeDisaggregated WorkerType = "disaggregated"
)

// Prompt is the prompt of a request: token_ids or block_hashes, exactly
// one of them.
type Prompt struct {
	// TokenIDs is the prompt as tokens. Nil is absent; an empty non-nil
	// slice is an empty prompt, which the router takes.
	TokenIDs []uint32 `json:"token_ids,omitzero"`
	// BlockHashes is the prompt as LocalBlockHash values the caller
	// computed (router hash prints them). Nil is absent.
	BlockHashes []uint64 `json:"block_hashes,omitzero"`
	// ISL is the prompt's length in tokens; 0 lets the router count it
	// (len(TokenIDs), or len(BlockHashes) × its block size).
	ISL int `json:"isl,omitempty"`
	// LoRAName salts the block hashes of TokenIDs.
	LoRAName string `json:"lora_name,omitempty"`
}

// RouteRequest is the body of route.
type RouteRequest struct {
	// RequestID names the request in its marks; empty lets the router make
	// one, which the decision carries.
	RequestID string `json:"request_id,omitempty"`
	Prompt
	// WorkerType is the serving mode asked for; empty is auto.
	WorkerType WorkerType `json:"worker_type,omitempty"`
	// Book, when false, asks for a decision that changes nothing (Dynamo's
	// best_worker_id): no booking, nothing to mark. Nil is true.
	Book *bool `json:"book,omitempty"`
	// PriorityJump moves the request this many seconds earlier in the
	// router's wait queue.
	PriorityJump float64 `json:"priority_jump,omitempty"`
	// DoNotQueue fails the request with ErrQueueRejected instead of
	// waiting when every worker is busy.
	DoNotQueue bool `json:"do_not_queue,omitempty"`
	// AllowedWorkerIDs restricts the choice to these workers. Nil allows
	// every worker; an empty non-nil slice is sent, and refused as a bad
	// request, rather than silently allowing every worker.
	AllowedWorkerIDs []WorkerID `json:"allowed_worker_ids,omitzero"`
	// RouterConfigOverride changes the cost for this request only.
	RouterConfigOverride *RouterConfigOverride `json:"router_config_override,omitempty"`
	// Retry says this route is sent again after an attempt whose reply was
	// lost: a router that holds RequestID booked already answers with that
	// booking instead of refusing the id as a duplicate (docs/api.md §3).
	// The client sets it on the attempts it resends (WithRouteRetry); set it
	// yourself only to resend a route of your own, with the same
	// RequestID.
	Retry bool `json:"retry,omitempty"`
}

// RouterConfigOverride is router_config_override: each field set replaces
// the router's setting for one request (docs/compat.md §5.2, §5.3).
type RouterConfigOverride struct {
	OverlapScoreWeight *float64 `json:"overlap_score_weight,omitempty"`
	OverlapScoreCredit *float64 `json:"overlap_score_credit,omitempty"`
	PrefillLoadScale   *float64 `json:"prefill_load_scale,omitempty"`
	RouterTemperature  *float64 `json:"router_temperature,omitempty"`
}

// Worker is one rank of one worker.
type Worker struct {
	WorkerID WorkerID `json:"worker_id"`
	DPRank   DPRank   `json:"dp_rank"`
}

// Decision is route's reply.
type Decision struct {
	// RequestID is the request's id, given or made by the router; absent
	// from a decision that did not book.
	RequestID string `json:"request_id,omitempty"`
	// Worker is the chosen rank; in a disaggregated decision, the prefill
	// worker's.
	Worker
	// OverlapBlocks of the prompt's NumBlocks full blocks are cached on the
	// chosen rank.
	OverlapBlocks int `json:"overlap_blocks"`
	NumBlocks     int `json:"num_blocks"`
	// WorkerType is the decision's serving mode, not the chosen worker's
	// type: aggregated, disaggregated, prefill or decode.
	WorkerType WorkerType `json:"worker_type"`
	// Prefill and Decode are set in disaggregated decisions only: send the
	// prompt to Prefill, then decode on Decode.
	Prefill *PrefillWorker `json:"prefill,omitempty"`
	Decode  *Worker        `json:"decode,omitempty"`
	// WorkerURL is where the worker of Worker serves, as the router's
	// workers file gives it (docs/api.md §3); empty when the router does
	// not know. In a disaggregated decision, PrefillWorkerURL (the same)
	// and DecodeWorkerURL are the two workers'.
	WorkerURL        string `json:"worker_url,omitempty"`
	PrefillWorkerURL string `json:"prefill_worker_url,omitempty"`
	DecodeWorkerURL  string `json:"decode_worker_url,omitempty"`
	// RouterID is the id of the router replica that booked the request
	// (its etcd instance id); 0, absent, from a router that does not say.
	// The handle's marks go to that replica's own subjects
	// (Client.ReplicaSubject) and carry it (docs/api.md §3).
	RouterID uint64 `json:"router_id,omitempty"`
}

// PrefillWorker is the prefill half of a disaggregated decision.
type PrefillWorker struct {
	Worker
	OverlapBlocks int `json:"overlap_blocks"`
}

// Overlaps is overlap_scores' reply.
type Overlaps struct {
	// BlockSize is the router's block size in tokens.
	BlockSize int `json:"block_size"`
	// NumBlocks is the number of full blocks of the prompt.
	NumBlocks int `json:"num_blocks"`
	// Workers lists every rank holding at least one of them.
	Workers []WorkerOverlap `json:"workers"`
}

// WorkerOverlap is one rank's cached prefix of the prompt.
type WorkerOverlap struct {
	Worker
	// OverlapBlocks counts the prefix's blocks on every storage tier.
	OverlapBlocks int `json:"overlap_blocks"`
	// Tiers splits them by the tier of their fastest copy; nil when every
	// one is on the device (see DeviceBlocks).
	Tiers *Tiers `json:"tiers,omitempty"`
	// WorkerType is the role the rank plays in decisions now: aggregated
	// while no prefill worker is registered, else prefill or decode.
	WorkerType WorkerType `json:"worker_type"`
}

// DeviceBlocks returns how many of the overlap's blocks are on the
// device (the GPU's own KV cache).
func (o WorkerOverlap) DeviceBlocks() int {
	if o.Tiers == nil {
		return o.OverlapBlocks
	}
	return o.Tiers.Device
}

// Tiers counts a rank's cached blocks by the storage tier of their
// fastest copy; the router omits tiers with none.
type Tiers struct {
	Device   int `json:"device,omitempty"`
	Host     int `json:"host,omitempty"`
	Disk     int `json:"disk,omitempty"`
	External int `json:"external,omitempty"`
}

// Loads is potential_loads' reply.
type Loads struct {
	// Loads is every rank's load if the prompt went there.
	Loads []WorkerLoad `json:"loads"`
	// PendingCount and PendingISLTokens describe the router's wait queue.
	PendingCount     int `json:"pending_count"`
	PendingISLTokens int `json:"pending_isl_tokens"`
}

// WorkerLoad is one rank's potential load.
type WorkerLoad struct {
	Worker
	PotentialPrefillTokens int `json:"potential_prefill_tokens"`
	PotentialDecodeBlocks  int `json:"potential_decode_blocks"`
	ActiveRequests         int `json:"active_requests"`
}

// MarkPrefillRequest is the body of mark_prefill.
type MarkPrefillRequest struct {
	RequestID string `json:"request_id"`
	// RouterID is the route reply's router_id, the replica that booked the
	// request; 0 leaves it out. A replica that does not know the request
	// forwards the mark to that one (docs/api.md §3).
	RouterID uint64 `json:"router_id,omitempty"`
}

// MarkFreeRequest is the body of mark_free.
type MarkFreeRequest struct {
	RequestID string `json:"request_id"`
	// OutputTokens is how many tokens the request generated; nil when
	// unknown.
	OutputTokens *int `json:"output_tokens,omitempty"`
	// RouterID is as in MarkPrefillRequest.
	RouterID uint64 `json:"router_id,omitempty"`
}

// MarkReply is a mark's reply: Success is false for a request id the
// router does not know (ErrUnknownRequest).
type MarkReply struct {
	Success *bool `json:"success"`
}

// ErrorReply is the reply of a request that failed, on any endpoint and
// transport.
type ErrorReply struct {
	Error Error `json:"error"`
}

// appendJSON appends q as JSON, as json.Marshal writes it, writing the
// prompt's lists by hand: a prompt of thousands of tokens is most of a
// route request, and encoding/json takes several times as long over it.
func (q *RouteRequest) appendJSON(b []byte) ([]byte, error) {
	rest := *q
	rest.Prompt = Prompt{ISL: q.ISL, LoRAName: q.LoRAName}
	return appendWithPrompt(b, &q.Prompt, rest)
}

// appendJSON appends p as JSON, as json.Marshal writes it.
func (p *Prompt) appendJSON(b []byte) ([]byte, error) {
	return appendWithPrompt(b, p, Prompt{ISL: p.ISL, LoRAName: p.LoRAName})
}

// appendWithPrompt appends the object rest with p's token_ids and
// block_hashes (when not nil) written first.
func appendWithPrompt(b []byte, p *Prompt, rest any) ([]byte, error) {
	tail, err := json.Marshal(rest)
	if err != nil {
		return b, err
	}
	// Room for every id at its longest, once: growing by appends would copy
	// a prompt of thousands of tokens several times over.
	b = slices.Grow(b, len(tail)+32+11*len(p.TokenIDs)+21*len(p.BlockHashes))
	b = append(b, '{')
	if p.TokenIDs != nil {
		b = append(b, `"token_ids":[`...)
		for i, t := range p.TokenIDs {
			if i > 0 {
				b = append(b, ',')
			}
			b = strconv.AppendUint(b, uint64(t), 10)
		}
		b = append(b, "],"...)
	}
	if p.BlockHashes != nil {
		b = append(b, `"block_hashes":[`...)
		for i, h := range p.BlockHashes {
			if i > 0 {
				b = append(b, ',')
			}
			b = strconv.AppendUint(b, h, 10)
		}
		b = append(b, "],"...)
	}
	if len(tail) == 2 { // {}
		if b[len(b)-1] == ',' {
			b = b[:len(b)-1]
		}
		return append(b, '}'), nil
	}
	return append(b, tail[1:]...), nil
}
