package sim

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
)

// The generate protocol of simulated workers (docs/replay.md): a client
// publishes one GenerateRequest to the worker's subject, with a reply
// subject; the worker publishes a stream of GenerateReply messages to that
// subject: "accepted" once the request is queued in its engine (or "error"),
// then "first_token", then "done".

// GenerateSubject returns the NATS subject on which the worker with the
// given id takes generate requests:
// namespace.{ns}.component.{component}.generate.{id in lower-case hex}. It is
// also the "nats_tcp" transport of the worker's etcd instance record.
func GenerateSubject(namespace, component string, id uint64) string {
	return "namespace." + namespace + ".component." + component + ".generate." + strconv.FormatUint(id, 16)
}

// Limits of a generate request: past them it is refused as absurd.
const (
	// MaxRequestBytes caps the size of a request message.
	MaxRequestBytes = 16 << 20
	// MaxPromptTokens caps the prompt.
	MaxPromptTokens = 1 << 21
	// MaxOutputTokens caps max_tokens.
	MaxOutputTokens = 1 << 20
	// MaxRequestIDLen caps the length of request_id.
	MaxRequestIDLen = 256
)

// ErrInvalidRequest is wrapped by every error of DecodeGenerateRequest.
var ErrInvalidRequest = errors.New("invalid generate request")

// GenerateRequest is the body of a generate request.
type GenerateRequest struct {
	// RequestID names the request in every reply; required.
	RequestID string `json:"request_id"`
	// TokenIDs is the prompt; at least one token.
	TokenIDs []uint32 `json:"token_ids"`
	// MaxTokens is the number of tokens to generate; the simulated model
	// always generates exactly this many. At least 1.
	MaxTokens int `json:"max_tokens"`
}

// DecodeGenerateRequest parses and checks a generate request. Unknown
// fields are ignored; a missing or out-of-range field is an error wrapping
// ErrInvalidRequest that names it.
func DecodeGenerateRequest(data []byte) (GenerateRequest, error) {
	var r GenerateRequest
	if len(data) > MaxRequestBytes {
		return r, fmt.Errorf("%w: %d bytes, over %d", ErrInvalidRequest, len(data), MaxRequestBytes)
	}
	t := bytes.TrimSpace(data)
	if len(t) == 0 || t[0] != '{' {
		return r, fmt.Errorf("%w: not a JSON object", ErrInvalidRequest)
	}
	var raw struct {
		RequestID *string         `json:"request_id"`
		TokenIDs  json.RawMessage `json:"token_ids"`
		MaxTokens *int64          `json:"max_tokens"`
	}
	if err := json.Unmarshal(t, &raw); err != nil {
		return r, fmt.Errorf("%w: %v", ErrInvalidRequest, err)
	}
	switch {
	case raw.RequestID == nil || *raw.RequestID == "":
		return r, fmt.Errorf("%w: request_id: missing or empty", ErrInvalidRequest)
	case len(*raw.RequestID) > MaxRequestIDLen:
		return r, fmt.Errorf("%w: request_id: %d bytes, over %d", ErrInvalidRequest, len(*raw.RequestID), MaxRequestIDLen)
	case raw.MaxTokens == nil:
		return r, fmt.Errorf("%w: max_tokens: missing", ErrInvalidRequest)
	case *raw.MaxTokens < 1 || *raw.MaxTokens > MaxOutputTokens:
		return r, fmt.Errorf("%w: max_tokens: %d is outside 1..%d", ErrInvalidRequest, *raw.MaxTokens, MaxOutputTokens)
	}
	if len(raw.TokenIDs) == 0 || bytes.Equal(raw.TokenIDs, []byte("null")) {
		return r, fmt.Errorf("%w: token_ids: missing", ErrInvalidRequest)
	}
	if err := json.Unmarshal(raw.TokenIDs, &r.TokenIDs); err != nil {
		return GenerateRequest{}, fmt.Errorf("%w: token_ids: must be an array of integers in 0..%d", ErrInvalidRequest, uint32(1<<32-1))
	}
	switch {
	case len(r.TokenIDs) == 0:
		return GenerateRequest{}, fmt.Errorf("%w: token_ids: empty", ErrInvalidRequest)
	case len(r.TokenIDs) > MaxPromptTokens:
		return GenerateRequest{}, fmt.Errorf("%w: token_ids: %d tokens, over %d", ErrInvalidRequest, len(r.TokenIDs), MaxPromptTokens)
	}
	r.RequestID = *raw.RequestID
	r.MaxTokens = int(*raw.MaxTokens)
	return r, nil
}

// ReplyEvent is the kind of a GenerateReply.
type ReplyEvent string

// The kinds of reply, in the order a request gets them.
const (
	ReplyAccepted   ReplyEvent = "accepted"
	ReplyFirstToken ReplyEvent = "first_token"
	ReplyDone       ReplyEvent = "done"
	ReplyError      ReplyEvent = "error"
)

// Error codes of a ReplyError, as the router's API names its own.
const (
	CodeBadRequest = "bad_request"
	CodeQueueFull  = "queue_full"
	CodeTooLong    = "too_long"
	CodeInternal   = "internal"
)

// ReplyErrorBody says why a request failed.
type ReplyErrorBody struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// GenerateReply is one message of a worker's reply stream. Times are
// simulated seconds on the worker's clock (since its fleet started); a
// client on the same clock (a lockstep run) can compare them with its own,
// any client can take differences of them.
type GenerateReply struct {
	RequestID string     `json:"request_id"`
	Event     ReplyEvent `json:"event"`
	WorkerID  uint64     `json:"worker_id"`
	// ReceivedAt is when the worker queued the request.
	ReceivedAt float64 `json:"received_at"`
	// ScheduledAt is when the engine admitted it (first_token and done).
	ScheduledAt float64 `json:"scheduled_at,omitempty"`
	// FirstTokenAt is when the first output token was produced (first_token
	// and done).
	FirstTokenAt float64 `json:"first_token_at,omitempty"`
	// DoneAt is when the last output token was produced (done).
	DoneAt float64 `json:"done_at,omitempty"`
	// PromptBlocks and CachedBlocks (first_token and done): full prompt
	// blocks, and how many of them were prefix-cache hits.
	PromptBlocks int `json:"prompt_blocks,omitempty"`
	CachedBlocks int `json:"cached_blocks,omitempty"`
	// OutputTokens is the number of tokens generated (first_token: 1; done:
	// max_tokens).
	OutputTokens int `json:"output_tokens,omitempty"`
	// Error is set on an "error" reply.
	Error *ReplyErrorBody `json:"error,omitempty"`
}
