package client

import (
	"bytes"
	"encoding/json"
	"errors"
)

// Code is an error code of the router's replies (docs/api.md §3, Errors).
type Code string

// The router's error codes.
const (
	CodeBadRequest    Code = "bad_request"
	CodeNoWorkers     Code = "no_workers"
	CodeOverloaded    Code = "overloaded"
	CodeQueueFull     Code = "queue_full"
	CodeQueueRejected Code = "queue_rejected"
	CodeTimeout       Code = "timeout"
	CodeInternal      Code = "internal"
)

// Sentinels of the router's error codes: an *Error of code c matches the
// sentinel of c with errors.Is.
var (
	// ErrBadRequest: the request itself is wrong (malformed JSON, an
	// unknown field, neither or both of token_ids and block_hashes, a
	// request id already active); the router changed nothing. Retrying the
	// same request fails the same way.
	ErrBadRequest = errors.New("bad request")
	// ErrNoWorkers: no registered worker can take the request (none
	// registered, or none among allowed_worker_ids).
	ErrNoWorkers = errors.New("no workers")
	// ErrOverloaded: every candidate worker is over a busy threshold.
	ErrOverloaded = errors.New("all workers overloaded")
	// ErrQueueFull: every candidate is busy and the router's wait queue is
	// at capacity.
	ErrQueueFull = errors.New("queue full")
	// ErrQueueRejected: every candidate is busy and the request asked not to
	// wait (do_not_queue).
	ErrQueueRejected = errors.New("queue rejected")
	// ErrTimeout: the request waited in the router's queue past the
	// router's queue timeout. It is the router's answer, not a deadline of
	// this client, which wraps context.DeadlineExceeded instead.
	ErrTimeout = errors.New("timed out in the router's queue")
	// ErrInternal: the router failed (a router that shuts down still
	// routes the requests it holds).
	ErrInternal = errors.New("internal router error")
)

// ErrUnknownRequest is the answer {"success": false} of mark_prefill or
// mark_free: the router holds no such request. It was never routed (or,
// for MarkPrefill and MarkFree by id, not by the replica that answered,
// without replica sync), was freed already, or was freed by the router's
// booking timeouts. A handle's marks do not return it when the replica
// that booked the request is gone (package doc, Replicas).
var ErrUnknownRequest = errors.New("the router has no such request")

// ErrNoRouter means NATS found no router subscribed to the endpoint's
// subject until the call's deadline: none runs, or it runs with another
// namespace or router component. The request reached no router, so
// nothing was booked. The error wraps nats.ErrNoResponders too, and, when
// the call was retried until its deadline (marks, routes),
// context.DeadlineExceeded.
var ErrNoRouter = errors.New("no router answered")

// Error is an error reply of the router: {"error": {"code", "message"}}.
// errors.Is(err, ErrNoWorkers) and the like test its code.
type Error struct {
	// Code is the error code; a code this client does not know matches no
	// sentinel.
	Code Code `json:"code"`
	// Message says what and why, in the router's words.
	Message string `json:"message"`
}

// Error returns "the router answered <code>: <message>".
func (e *Error) Error() string {
	if e.Message == "" {
		return "the router answered " + string(e.Code)
	}
	return "the router answered " + string(e.Code) + ": " + e.Message
}

// Unwrap returns the sentinel of e's code, nil for an unknown code.
func (e *Error) Unwrap() error {
	switch e.Code {
	case CodeBadRequest:
		return ErrBadRequest
	case CodeNoWorkers:
		return ErrNoWorkers
	case CodeOverloaded:
		return ErrOverloaded
	case CodeQueueFull:
		return ErrQueueFull
	case CodeQueueRejected:
		return ErrQueueRejected
	case CodeTimeout:
		return ErrTimeout
	case CodeInternal:
		return ErrInternal
	}
	return nil
}

// failure holds the parts of any reply of the router that say a request
// failed.
type failure struct {
	Error   *Error `json:"error"`
	Success *bool  `json:"success"`
}

// CheckReply returns what a reply of the router says about failure: an
// *Error for an error reply, ErrUnknownRequest for {"success": false},
// and nil for anything else, a reply it cannot read included (the typed
// methods find those when they decode the reply). It serves replies of
// every transport alike: the HTTP API's bodies are the same JSON.
//
// A reply with neither key, "error" or "success", as the router writes
// them, is not parsed at all: a decision is read once, not twice.
func CheckReply(reply []byte) error {
	if !bytes.Contains(reply, []byte(`"error"`)) && !bytes.Contains(reply, []byte(`"success"`)) && bytes.IndexByte(reply, '\\') < 0 {
		return nil // no key could say it failed (an escape could spell one)
	}
	var f failure
	if json.Unmarshal(reply, &f) != nil {
		return nil
	}
	if f.Error != nil {
		return f.Error
	}
	if f.Success != nil && !*f.Success {
		return ErrUnknownRequest
	}
	return nil
}
