package scheduler

import "errors"

// Errors of routing. Each maps to one error code of the router's replies
// (docs/api.md §3): Code returns it. They are wrapped with detail; test
// for them with errors.Is.
var (
	// ErrBadRequest means the request itself is wrong (a field out of range,
	// a request id already active); nothing was changed. Code bad_request.
	ErrBadRequest = errors.New("bad request")
	// ErrNoWorkers means no registered rank of the needed kind passed the
	// request's filters. Code no_workers.
	ErrNoWorkers = errors.New("no workers")
	// ErrOverloaded means every eligible rank is over a busy threshold
	// (HTTP 529 in Dynamo). Code overloaded.
	ErrOverloaded = errors.New("all workers overloaded")
	// ErrQueueFull means every eligible rank was busy and the queue already
	// held QueueCapacity requests. Code queue_full.
	ErrQueueFull = errors.New("queue full")
	// ErrQueueRejected means every eligible rank was busy and the request
	// asked not to wait (do_not_queue). Code queue_rejected.
	ErrQueueRejected = errors.New("queue rejected")
	// ErrTimeout means the request waited in the queue for QueueTimeout.
	// Code timeout.
	ErrTimeout = errors.New("timed out in queue")
)

// Error codes of the router's replies (docs/api.md §3).
const (
	CodeBadRequest    = "bad_request"
	CodeNoWorkers     = "no_workers"
	CodeOverloaded    = "overloaded"
	CodeQueueFull     = "queue_full"
	CodeQueueRejected = "queue_rejected"
	CodeTimeout       = "timeout"
	CodeInternal      = "internal"
)

// Code returns the reply error code of err: the code of the sentinel it
// wraps, or internal for anything else (context errors included).
func Code(err error) string {
	switch {
	case errors.Is(err, ErrBadRequest):
		return CodeBadRequest
	case errors.Is(err, ErrNoWorkers):
		return CodeNoWorkers
	case errors.Is(err, ErrOverloaded):
		return CodeOverloaded
	case errors.Is(err, ErrQueueFull):
		return CodeQueueFull
	case errors.Is(err, ErrQueueRejected):
		return CodeQueueRejected
	case errors.Is(err, ErrTimeout):
		return CodeTimeout
	}
	return CodeInternal
}
