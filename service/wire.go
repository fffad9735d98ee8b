package service

// The JSON of the router's requests and replies (docs/api.md §3) as Go
// types, for code that talks to the router and for documents that describe
// it (docs/openapi.yaml is checked against them). The router itself does not
// use them: it decodes with a strict scanner (decode.go) and encodes by
// appending (encode.go), and wire_test.go holds both to these types, field
// for field. Every endpoint takes and gives the same JSON over NATS and over
// HTTP.

// RouteRequest is a route request.
type RouteRequest struct {
	// RequestID names the booking for mark_prefill and mark_free; generated
	// when empty.
	RequestID string `json:"request_id,omitempty"`
	// TokenIDs or BlockHashes is the prompt: exactly one of them, the other
	// nil (null and absent are the same). An empty, non-nil TokenIDs is an
	// empty prompt.
	TokenIDs []uint32 `json:"token_ids"`
	// BlockHashes are LocalBlockHash values the caller computed; written as
	// unsigned or as signed 64-bit integers, the bits are the hash.
	BlockHashes []uint64 `json:"block_hashes"`
	// ISL is the prompt's length in tokens; 0 means computed from the prompt.
	ISL int `json:"isl,omitempty"`
	// LoRAName salts the block hashes of TokenIDs.
	LoRAName string `json:"lora_name,omitempty"`
	// WorkerType is auto (when empty), aggregated, prefill, decode or
	// disaggregated.
	WorkerType string `json:"worker_type,omitempty"`
	// Book false answers without changing any state; nil means true.
	Book *bool `json:"book,omitempty"`
	// PriorityJump moves the request this many seconds earlier in the queue.
	PriorityJump float64 `json:"priority_jump,omitempty"`
	// DoNotQueue fails the request at once instead of letting it wait.
	DoNotQueue bool `json:"do_not_queue,omitempty"`
	// AllowedWorkerIDs, when not nil, are the only workers that may be
	// chosen; it may not be empty.
	AllowedWorkerIDs []uint64 `json:"allowed_worker_ids,omitempty"`
	// RouterConfigOverride changes the cost and the choice for this request.
	RouterConfigOverride *RouterConfigOverride `json:"router_config_override,omitempty"`
}

// RouterConfigOverride is route's per-request override of the router's
// settings; a nil field keeps the router's.
type RouterConfigOverride struct {
	OverlapScoreWeight *float64 `json:"overlap_score_weight,omitempty"`
	OverlapScoreCredit *float64 `json:"overlap_score_credit,omitempty"`
	PrefillLoadScale   *float64 `json:"prefill_load_scale,omitempty"`
	RouterTemperature  *float64 `json:"router_temperature,omitempty"`
}

// PromptRequest is an overlap_scores or potential_loads request: a prompt,
// as in RouteRequest.
type PromptRequest struct {
	TokenIDs    []uint32 `json:"token_ids"`
	BlockHashes []uint64 `json:"block_hashes"`
	ISL         int      `json:"isl,omitempty"`
	LoRAName    string   `json:"lora_name,omitempty"`
}

// MarkPrefillRequest is a mark_prefill request.
type MarkPrefillRequest struct {
	RequestID string `json:"request_id"`
}

// MarkFreeRequest is a mark_free request.
type MarkFreeRequest struct {
	RequestID string `json:"request_id"`
	// OutputTokens is how many tokens the request generated, when known.
	OutputTokens *int `json:"output_tokens,omitempty"`
}

// RouteReply is route's decision. WorkerType is the request's serving
// mode: aggregated, disaggregated, prefill or decode; Prefill and Decode
// are set in disaggregated replies only, whose top-level worker is the
// prefill worker.
type RouteReply struct {
	RequestID     string         `json:"request_id,omitempty"`
	WorkerID      uint64         `json:"worker_id"`
	DPRank        uint32         `json:"dp_rank"`
	OverlapBlocks int            `json:"overlap_blocks"`
	NumBlocks     int            `json:"num_blocks"`
	WorkerType    string         `json:"worker_type"`
	Prefill       *PrefillChoice `json:"prefill,omitempty"`
	Decode        *DecodeChoice  `json:"decode,omitempty"`
}

// PrefillChoice is the prefill half of a disaggregated decision.
type PrefillChoice struct {
	WorkerID      uint64 `json:"worker_id"`
	DPRank        uint32 `json:"dp_rank"`
	OverlapBlocks int    `json:"overlap_blocks"`
}

// DecodeChoice is the decode half of a disaggregated decision.
type DecodeChoice struct {
	WorkerID uint64 `json:"worker_id"`
	DPRank   uint32 `json:"dp_rank"`
}

// MarkReply answers mark_prefill and mark_free: Success is false for a
// request id the router does not know.
type MarkReply struct {
	Success bool `json:"success"`
}

// OverlapScoresReply lists every worker rank holding at least one of the
// prompt's blocks.
type OverlapScoresReply struct {
	BlockSize int             `json:"block_size"`
	NumBlocks int             `json:"num_blocks"`
	Workers   []WorkerOverlap `json:"workers"`
}

// WorkerOverlap is one rank of OverlapScoresReply. WorkerType is the role
// the worker plays in decisions: aggregated, prefill or decode.
type WorkerOverlap struct {
	WorkerID      uint64 `json:"worker_id"`
	DPRank        uint32 `json:"dp_rank"`
	OverlapBlocks int    `json:"overlap_blocks"`
	WorkerType    string `json:"worker_type"`
}

// PotentialLoadsReply is what each rank's load would be with the prompt,
// and what waits in the queue.
type PotentialLoadsReply struct {
	Loads            []WorkerLoad `json:"loads"`
	PendingCount     int          `json:"pending_count"`
	PendingISLTokens int          `json:"pending_isl_tokens"`
}

// WorkerLoad is one rank of PotentialLoadsReply.
type WorkerLoad struct {
	WorkerID               uint64 `json:"worker_id"`
	DPRank                 uint32 `json:"dp_rank"`
	PotentialPrefillTokens int    `json:"potential_prefill_tokens"`
	PotentialDecodeBlocks  int    `json:"potential_decode_blocks"`
	ActiveRequests         int    `json:"active_requests"`
}

// ErrorReply is the reply of a request that failed, on any endpoint.
type ErrorReply struct {
	Error ErrorDetail `json:"error"`
}

// ErrorDetail says why: Code is one of the scheduler.Code* codes, Message
// is for people.
type ErrorDetail struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}
