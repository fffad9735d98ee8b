package service

import (
	"math"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/kvrouter/router/indexer"
	"github.com/kvrouter/router/metrics"
	"github.com/kvrouter/router/scheduler"
)

// Limits of a request, beyond which it is refused as bad_request. Prompts
// are bounded by scheduler.MaxTokens.
const (
	// MaxRequestBytes bounds a request's payload (NATS's own default limit
	// is 1 MiB; a 1,000,000-token prompt in JSON is about 7 MB).
	MaxRequestBytes = 8 << 20
	// MaxIDBytes bounds request_id and lora_name.
	MaxIDBytes = 256
	// MaxAllowedWorkers bounds allowed_worker_ids.
	MaxAllowedWorkers = 1 << 16
	// MaxOutputTokens bounds mark_free's output_tokens.
	MaxOutputTokens = 10_000_000
)

// request is a decoded route, overlap_scores or potential_loads request,
// pooled with its buffers: decoding the next request reuses the token
// slice of the last.
type request struct {
	sched    scheduler.Request
	override scheduler.Override
	tokens   []uint32
	hashes   []indexer.LocalHash
	allowed  []indexer.WorkerID
	// reply is the route reply's context, for done.
	reply replyTo
}

// replyTo is where and how a route decision is answered.
type replyTo struct {
	svc   *Service
	msg   *nats.Msg
	start time.Time
	// done is the request's answer method, bound once per pooled request
	// so that handing it to the scheduler allocates nothing.
	done func(scheduler.Decision, error)
}

// fields says which fields an endpoint accepts.
type fields uint8

const (
	// promptFields: token_ids, block_hashes, isl, lora_name (overlap_scores,
	// potential_loads).
	promptFields fields = iota
	// routeFields: every field of route.
	routeFields
)

// decodeRequest decodes a route (routeFields) or prompt request into r,
// checking every field; blockSize bounds block_hashes. The error is a
// *requestError naming the field.
func decodeRequest(data []byte, r *request, f fields, blockSize int) error {
	*r = request{tokens: r.tokens[:0], hashes: r.hashes[:0], allowed: r.allowed[:0], reply: r.reply}
	q := &r.sched
	if len(data) > MaxRequestBytes {
		return badRequest(metrics.BadRequestTooLarge, "request of %d bytes (allowed ≤ %d)", len(data), MaxRequestBytes)
	}
	s := &scanner{data: data}
	var hasTokens, hasHashes, hasOverride bool
	book := true
	err := s.object(func(key string) error {
		if !known(key, f) {
			return badRequest(metrics.BadRequestMalformed, "unknown field %q", key)
		}
		if s.null() {
			return nil // an explicit null is an absent field
		}
		switch {
		case key == "token_ids":
			hasTokens = true
			var err error
			r.tokens, err = s.tokenIDs(key, r.tokens, scheduler.MaxTokens)
			return err
		case key == "block_hashes":
			hasHashes = true
			return s.array(key, func(i int) error {
				if len(r.hashes) >= scheduler.MaxTokens/blockSize {
					return badRequest(metrics.BadRequestTooLarge, "block_hashes: more than %d blocks of %d tokens", scheduler.MaxTokens/blockSize, blockSize)
				}
				v, err := s.hash(key)
				if err != nil {
					return err
				}
				r.hashes = append(r.hashes, indexer.LocalHash(v))
				return nil
			})
		case key == "isl":
			v, err := s.uint(key, scheduler.MaxTokens)
			q.ISL = int(v)
			return err
		case key == "lora_name":
			v, err := s.str(key)
			if err == nil && len(v) > MaxIDBytes {
				return badRequest(metrics.BadRequestTooLarge, "lora_name: %d bytes (allowed ≤ %d)", len(v), MaxIDBytes)
			}
			q.LoRAName = v
			return err
		case f != routeFields:
		case key == "request_id":
			v, err := s.str(key)
			switch {
			case err != nil:
				return err
			case v == "":
				return badRequest(metrics.BadRequestMalformed, "request_id: empty (omit it to have one generated)")
			case len(v) > MaxIDBytes:
				return badRequest(metrics.BadRequestTooLarge, "request_id: %d bytes (allowed ≤ %d)", len(v), MaxIDBytes)
			}
			q.ID = v
			return nil
		case key == "worker_type":
			v, err := s.str(key)
			if err != nil {
				return err
			}
			t, ok := scheduler.ParseWorkerType(v)
			if !ok {
				return badRequest(metrics.BadRequestWorkerType, "worker_type: %q is unknown (allowed auto, aggregated, prefill, decode, disaggregated)", v)
			}
			q.Type = t
			return nil
		case key == "book":
			v, err := s.boolean(key)
			book = v
			return err
		case key == "priority_jump":
			v, err := s.float(key, 0, scheduler.MaxPriorityJump)
			q.PriorityJump = v
			return err
		case key == "do_not_queue":
			v, err := s.boolean(key)
			q.DoNotQueue = v
			return err
		case key == "allowed_worker_ids":
			err := s.array(key, func(i int) error {
				if len(r.allowed) >= MaxAllowedWorkers {
					return badRequest(metrics.BadRequestTooLarge, "allowed_worker_ids: more than %d ids", MaxAllowedWorkers)
				}
				v, err := s.uint(key, math.MaxUint64)
				r.allowed = append(r.allowed, indexer.WorkerID(v))
				return err
			})
			if err == nil && len(r.allowed) == 0 {
				return badRequest(metrics.BadRequestMalformed, "allowed_worker_ids: empty (omit it to allow every worker)")
			}
			q.AllowedWorkerIDs = r.allowed
			return err
		case key == "router_config_override":
			hasOverride = true
			return decodeOverride(s, &r.override)
		}
		return badRequest(metrics.BadRequestMalformed, "unknown field %q", key)
	})
	if err == nil {
		err = s.end()
	}
	if err != nil {
		return err
	}
	switch {
	case hasTokens && hasHashes:
		return badRequest(metrics.BadRequestMalformed, "token_ids and block_hashes are exclusive: send one")
	case !hasTokens && !hasHashes:
		return badRequest(metrics.BadRequestNoTokens, "neither token_ids nor block_hashes: send one")
	case hasTokens:
		if r.tokens == nil {
			r.tokens = []uint32{} // an empty prompt, still a prompt
		}
		q.Tokens = r.tokens
	default:
		if r.hashes == nil {
			r.hashes = []indexer.LocalHash{}
		}
		q.BlockHashes = r.hashes
	}
	q.QueryOnly = !book
	if hasOverride {
		q.Override = &r.override
	}
	return nil
}

// known reports whether an endpoint accepts field key.
func known(key string, f fields) bool {
	switch key {
	case "token_ids", "block_hashes", "isl", "lora_name":
		return true
	case "request_id", "worker_type", "book", "priority_jump", "do_not_queue", "allowed_worker_ids", "router_config_override":
		return f == routeFields
	}
	return false
}

// decodeOverride decodes router_config_override. Besides the two fields
// of router-api.md, it accepts newer Dynamo's overlap_score_credit and
// prefill_load_scale.
func decodeOverride(s *scanner, o *scheduler.Override) error {
	if s.peek() != '{' {
		return badRequest(metrics.BadRequestMalformed, "router_config_override: want an object")
	}
	return s.object(func(key string) error {
		var dst **float64
		hi := 1e6
		switch key {
		case "overlap_score_weight":
			dst = &o.OverlapScoreWeight
		case "overlap_score_credit":
			dst, hi = &o.OverlapScoreCredit, 1
		case "prefill_load_scale":
			dst = &o.PrefillLoadScale
		case "router_temperature":
			dst = &o.Temperature
		default:
			return badRequest(metrics.BadRequestMalformed, "router_config_override: unknown field %q", key)
		}
		if s.null() {
			return nil
		}
		v, err := s.float("router_config_override."+key, 0, hi)
		if err != nil {
			return err
		}
		*dst = &v
		return nil
	})
}

// markRequest is a decoded mark_prefill or mark_free request.
type markRequest struct {
	id string
	// outputTokens is −1 when absent (mark_free only).
	outputTokens int
}

// decodeMark decodes a mark_prefill (free false) or mark_free request.
func decodeMark(data []byte, free bool) (markRequest, error) {
	m := markRequest{outputTokens: -1}
	if len(data) > MaxRequestBytes {
		return m, badRequest(metrics.BadRequestTooLarge, "request of %d bytes (allowed ≤ %d)", len(data), MaxRequestBytes)
	}
	s := &scanner{data: data}
	err := s.object(func(key string) error {
		switch {
		case key == "request_id":
			v, err := s.str(key)
			m.id = v
			return err
		case key == "output_tokens" && free:
			if s.null() {
				return nil
			}
			v, err := s.uint(key, MaxOutputTokens)
			m.outputTokens = int(v)
			return err
		}
		return badRequest(metrics.BadRequestMalformed, "unknown field %q", key)
	})
	if err == nil {
		err = s.end()
	}
	if err == nil && m.id == "" {
		err = badRequest(metrics.BadRequestMalformed, "request_id: missing or empty")
	}
	return m, err
}
