package traces

import (
	"errors"
	"fmt"
)

// Limits past which a line is rejected as absurd rather than read.
const (
	// MaxHashIDs caps the number of hash ids of one request. The
	// conversation trace's longest request has 247 (126,195 tokens).
	MaxHashIDs = 1_000_000
	// MaxTokens caps input_length and output_length.
	MaxTokens = 100_000_000
	// MaxLineBytes caps the length of one line, newline excluded. It leaves
	// room for MaxHashIDs ids of up to 20 digits each.
	MaxLineBytes = 32 << 20
)

// Request is one request of a trace.
type Request struct {
	// Timestamp is the arrival time in milliseconds from the start.
	Timestamp int64 `json:"timestamp"`
	// InputLength is the prompt length in tokens.
	InputLength int `json:"input_length"`
	// OutputLength is the number of generated tokens.
	OutputLength int `json:"output_length"`
	// HashIDs are the prompt's prefix block ids, one per block, first
	// block first. Decoded requests never have a nil HashIDs.
	HashIDs []uint64 `json:"hash_ids"`
}

// The problems a line can have; an *Error wraps one of them.
var (
	// ErrSyntax: the line is not valid JSON.
	ErrSyntax = errors.New("invalid JSON")
	// ErrNotObject: the line is valid JSON but not an object.
	ErrNotObject = errors.New("not a JSON object")
	// ErrLineTooLong: the line is longer than MaxLineBytes.
	ErrLineTooLong = errors.New("line too long")
	// ErrMissing: a required field is absent or null.
	ErrMissing = errors.New("missing")
	// ErrNotInteger: a field or hash id is not a JSON integer.
	ErrNotInteger = errors.New("not an integer")
	// ErrNegative: a field or hash id is below zero.
	ErrNegative = errors.New("negative")
	// ErrTooLarge: a value is past its type or past MaxTokens, or there are
	// more than MaxHashIDs hash ids.
	ErrTooLarge = errors.New("too large")
	// ErrNotArray: hash_ids is not a JSON array.
	ErrNotArray = errors.New("not an array")
)

// Error is a problem with one line of a trace.
type Error struct {
	// Line is the 1-based line number.
	Line int
	// Field names the offending field, e.g. "timestamp" or "hash_ids[3]";
	// empty when the problem is the line as a whole.
	Field string
	// Err wraps one of the sentinels with detail.
	Err error
}

// Error renders the problem as `line N: field "F": problem`.
func (e *Error) Error() string {
	if e.Field == "" {
		return fmt.Sprintf("line %d: %v", e.Line, e.Err)
	}
	return fmt.Sprintf("line %d: field %q: %v", e.Line, e.Field, e.Err)
}

// Unwrap returns the wrapped sentinel, for errors.Is.
func (e *Error) Unwrap() error { return e.Err }
