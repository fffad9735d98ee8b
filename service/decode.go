package service

import (
	"errors"
	"fmt"
	"math"
	"sync"
	"time"

	"github.com/kvrouter/router/indexer"
	"github.com/kvrouter/router/internal/jsonscan"
	"github.com/kvrouter/router/metrics"
	"github.com/kvrouter/router/scheduler"
)

// Requests are read with the router's strict JSON scanner
// (internal/jsonscan), field by field straight into the pooled request:
// keys match exactly (case included), a key may not repeat, an unknown key
// is refused, strings must be valid UTF-8, integers must be integers.
// FuzzDecodeRoute holds the decoder to encoding/json and to a round trip.

// requestError is a request the router refuses: the reason label of
// dynamo_component_router_bad_requests_total and a message naming the
// field.
type requestError struct {
	reason string
	msg    string
}

func (e *requestError) Error() string { return e.msg }

// badRequest builds a requestError.
func badRequest(reason, format string, args ...any) error {
	return &requestError{reason: reason, msg: fmt.Sprintf(format, args...)}
}

// reasonOf returns the bad-request reason of err, malformed by default.
func reasonOf(err error) string {
	var re *requestError
	if errors.As(err, &re) {
		return re.reason
	}
	return metrics.BadRequestMalformed
}

// refuse turns an error of the scanner into a requestError (others pass
// through): not JSON, or a value of the wrong type, is malformed; a number
// the field does not take is out_of_range; a list over its limit is
// too_large. A wrong type in a request that is not JSON at all is reported
// as the syntax error, the worse of the two.
func refuse(data []byte, err error) error {
	se, ok := jsonscan.Cause(data, err)
	if !ok {
		return err
	}
	switch se.Kind {
	case jsonscan.Syntax:
		return badRequest(metrics.BadRequestMalformed, "malformed JSON at byte %d: %s", se.Offset, se.Detail())
	case jsonscan.Range:
		return badRequest(metrics.BadRequestOutOfRange, "%s", se.Detail())
	case jsonscan.Limit:
		return badRequest(metrics.BadRequestTooLarge, "%s", se.Detail())
	}
	return badRequest(metrics.BadRequestMalformed, "%s", se.Detail())
}

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

// replyTo is where and how a submitted route request is answered
// (Handler.submit).
type replyTo struct {
	h  *Handler
	to Sender
	// start is when the request arrived; size is its length in bytes.
	start time.Time
	size  int
	// pending counts the request until it is answered.
	pending *sync.WaitGroup
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

// requestFields are the fields of a request, one bit each: the first
// four (promptFields) are every endpoint's, the rest route's only.
var requestFields = [...]string{
	"token_ids", "block_hashes", "isl", "lora_name",
	"request_id", "worker_type", "book", "priority_jump", "do_not_queue", "allowed_worker_ids", "router_config_override",
	"retry",
}

// The bits of the two prompt fields.
const (
	bitTokenIDs    = 1 << 0
	bitBlockHashes = 1 << 1
)

// fieldBit returns the bit of field key for an endpoint that accepts f, 0
// if it does not accept key.
func fieldBit(key []byte, f fields) uint16 {
	known := requestFields[:]
	if f != routeFields {
		known = known[:4]
	}
	for i, name := range known {
		if string(key) == name {
			return 1 << i
		}
	}
	return 0
}

// decodeRequest decodes a route (routeFields) or prompt request into r,
// checking every field; blockSize bounds block_hashes. The error is a
// *requestError naming the field.
func decodeRequest(data []byte, r *request, f fields, blockSize int) error {
	*r = request{tokens: r.tokens[:0], hashes: r.hashes[:0], allowed: r.allowed[:0], reply: r.reply}
	if len(data) > MaxRequestBytes {
		return badRequest(metrics.BadRequestTooLarge, "request of %d bytes (allowed ≤ %d)", len(data), MaxRequestBytes)
	}
	s := jsonscan.New(data)
	seen, err := r.decodeFields(&s, f, blockSize)
	if err == nil {
		err = s.End("the request")
	}
	if err != nil {
		return refuse(data, err)
	}
	q := &r.sched
	hasTokens, hasHashes := seen&bitTokenIDs != 0, seen&bitBlockHashes != 0
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
	return nil
}

// decodeFields reads the request object into r and returns the bits of
// the fields given other than as null (an explicit null is an absent
// field).
func (r *request) decodeFields(s *jsonscan.Scanner, f fields, blockSize int) (given uint16, err error) {
	q := &r.sched
	if err := s.Object("", "an object"); err != nil {
		return 0, err
	}
	var seen uint16
	for first := true; ; first = false {
		key, ok, err := s.Key("", first)
		if err != nil || !ok {
			return given, err
		}
		bit := fieldBit(key, f)
		if bit == 0 {
			return 0, badRequest(metrics.BadRequestMalformed, "unknown field %q", key)
		}
		if seen&bit != 0 {
			return 0, badRequest(metrics.BadRequestMalformed, "field %s appears twice", key)
		}
		seen |= bit
		if s.Null() {
			continue
		}
		given |= bit
		switch string(key) {
		case "token_ids":
			r.tokens, err = s.TokenIDs("token_ids", r.tokens, scheduler.MaxTokens)
		case "block_hashes":
			err = r.decodeHashes(s, blockSize)
		case "isl":
			var v uint64
			v, err = s.Uint("isl", scheduler.MaxTokens)
			q.ISL = int(v)
		case "lora_name":
			q.LoRAName, err = s.String("lora_name")
			if err == nil && len(q.LoRAName) > MaxIDBytes {
				err = badRequest(metrics.BadRequestTooLarge, "lora_name: %d bytes (allowed ≤ %d)", len(q.LoRAName), MaxIDBytes)
			}
		case "request_id":
			q.ID, err = s.String("request_id")
			switch {
			case err != nil:
			case q.ID == "":
				err = badRequest(metrics.BadRequestMalformed, "request_id: empty (omit it to have one generated)")
			case len(q.ID) > MaxIDBytes:
				err = badRequest(metrics.BadRequestTooLarge, "request_id: %d bytes (allowed ≤ %d)", len(q.ID), MaxIDBytes)
			}
		case "worker_type":
			var v string
			if v, err = s.String("worker_type"); err == nil {
				var ok bool
				if q.Type, ok = scheduler.ParseWorkerType(v); !ok {
					err = badRequest(metrics.BadRequestWorkerType, "worker_type: %q is unknown (allowed auto, aggregated, prefill, decode, disaggregated)", v)
				}
			}
		case "book":
			var book bool
			book, err = s.Bool("book")
			q.QueryOnly = !book
		case "priority_jump":
			q.PriorityJump, err = s.Float("priority_jump", 0, scheduler.MaxPriorityJump)
		case "do_not_queue":
			q.DoNotQueue, err = s.Bool("do_not_queue")
		case "allowed_worker_ids":
			err = r.decodeAllowed(s)
		case "router_config_override":
			if err = decodeOverride(s, &r.override); err == nil {
				q.Override = &r.override
			}
		case "retry":
			q.Retry, err = s.Bool("retry")
		}
		if err != nil {
			return 0, err
		}
	}
}

// decodeHashes reads block_hashes, at most as many as scheduler.MaxTokens
// tokens make blocks of blockSize.
func (r *request) decodeHashes(s *jsonscan.Scanner, blockSize int) error {
	const field = "block_hashes"
	if err := s.Array(field, "an array"); err != nil {
		return err
	}
	for first := true; ; first = false {
		more, err := s.Elem(field, first)
		if err != nil || !more {
			return err
		}
		if len(r.hashes) >= scheduler.MaxTokens/blockSize {
			return badRequest(metrics.BadRequestTooLarge, "block_hashes: more than %d blocks of %d tokens", scheduler.MaxTokens/blockSize, blockSize)
		}
		v, err := s.Int(field, true)
		if err != nil {
			return err
		}
		r.hashes = append(r.hashes, indexer.LocalHash(v))
	}
}

// decodeAllowed reads allowed_worker_ids, at most MaxAllowedWorkers, not
// empty.
func (r *request) decodeAllowed(s *jsonscan.Scanner) error {
	const field = "allowed_worker_ids"
	if err := s.Array(field, "an array"); err != nil {
		return err
	}
	for first := true; ; first = false {
		more, err := s.Elem(field, first)
		if err != nil {
			return err
		}
		if !more {
			break
		}
		if len(r.allowed) >= MaxAllowedWorkers {
			return badRequest(metrics.BadRequestTooLarge, "allowed_worker_ids: more than %d ids", MaxAllowedWorkers)
		}
		v, err := s.Uint(field, math.MaxUint64)
		if err != nil {
			return err
		}
		r.allowed = append(r.allowed, indexer.WorkerID(v))
	}
	if len(r.allowed) == 0 {
		return badRequest(metrics.BadRequestMalformed, "allowed_worker_ids: empty (omit it to allow every worker)")
	}
	r.sched.AllowedWorkerIDs = r.allowed
	return nil
}

// overrideFields are the fields of router_config_override, one bit each,
// with the largest value each takes. Besides the two fields of
// docs/api.md, it takes newer Dynamo's overlap_score_credit and
// prefill_load_scale.
var overrideFields = [...]struct {
	name string
	hi   float64
}{
	{"overlap_score_weight", 1e6},
	{"overlap_score_credit", 1},
	{"prefill_load_scale", 1e6},
	{"router_temperature", 1e6},
}

// decodeOverride decodes router_config_override.
func decodeOverride(s *jsonscan.Scanner, o *scheduler.Override) error {
	const field = "router_config_override"
	if err := s.Object(field, "an object"); err != nil {
		return err
	}
	dsts := [len(overrideFields)]**float64{&o.OverlapScoreWeight, &o.OverlapScoreCredit, &o.PrefillLoadScale, &o.Temperature}
	var seen uint8
	for first := true; ; first = false {
		key, ok, err := s.Key(field, first)
		if err != nil || !ok {
			return err
		}
		i := 0
		for i < len(overrideFields) && overrideFields[i].name != string(key) {
			i++
		}
		if i == len(overrideFields) {
			return badRequest(metrics.BadRequestMalformed, "router_config_override: unknown field %q", key)
		}
		if seen&(1<<i) != 0 {
			return badRequest(metrics.BadRequestMalformed, "field router_config_override.%s appears twice", key)
		}
		seen |= 1 << i
		if s.Null() {
			continue
		}
		v, err := s.Float(field+"."+overrideFields[i].name, 0, overrideFields[i].hi)
		if err != nil {
			return err
		}
		*dsts[i] = &v
	}
}

// markRequest is a decoded mark_prefill or mark_free request.
type markRequest struct {
	id string
	// outputTokens is −1 when absent (mark_free only).
	outputTokens int
	// routerID is the replica that booked the request, as its route reply
	// named it; 0 when absent.
	routerID uint64
}

// decodeMark decodes a mark_prefill (free false) or mark_free request.
func decodeMark(data []byte, free bool) (markRequest, error) {
	m := markRequest{outputTokens: -1}
	if len(data) > MaxRequestBytes {
		return m, badRequest(metrics.BadRequestTooLarge, "request of %d bytes (allowed ≤ %d)", len(data), MaxRequestBytes)
	}
	s := jsonscan.New(data)
	err := m.decode(&s, free)
	if err == nil {
		err = s.End("the request")
	}
	if err != nil {
		return m, refuse(data, err)
	}
	if m.id == "" {
		return m, badRequest(metrics.BadRequestMalformed, "request_id: missing or empty")
	}
	return m, nil
}

// decode reads the fields of a mark request: request_id, router_id, and
// output_tokens for mark_free.
func (m *markRequest) decode(s *jsonscan.Scanner, free bool) error {
	if err := s.Object("", "an object"); err != nil {
		return err
	}
	var seenID, seenOutput, seenRouter bool
	for first := true; ; first = false {
		key, ok, err := s.Key("", first)
		if err != nil || !ok {
			return err
		}
		switch {
		case string(key) == "request_id":
			if seenID {
				return badRequest(metrics.BadRequestMalformed, "field request_id appears twice")
			}
			seenID = true
			m.id, err = s.String("request_id")
		case string(key) == "output_tokens" && free:
			if seenOutput {
				return badRequest(metrics.BadRequestMalformed, "field output_tokens appears twice")
			}
			seenOutput = true
			if !s.Null() {
				var v uint64
				v, err = s.Uint("output_tokens", MaxOutputTokens)
				m.outputTokens = int(v)
			}
		case string(key) == "router_id":
			if seenRouter {
				return badRequest(metrics.BadRequestMalformed, "field router_id appears twice")
			}
			seenRouter = true
			if !s.Null() {
				m.routerID, err = s.Uint("router_id", math.MaxUint64)
			}
		default:
			return badRequest(metrics.BadRequestMalformed, "unknown field %q", key)
		}
		if err != nil {
			return err
		}
	}
}
