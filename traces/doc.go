// Package traces reads and writes request traces in the Mooncake FAST'25
// JSONL format, and synthesises token ids for their blocks.
//
// A trace is one JSON object a line:
//
//	{"timestamp": 0, "input_length": 6758, "output_length": 500, "hash_ids": [0, 1, 2]}
//
// timestamp is the arrival time in milliseconds from the start of the trace,
// input_length and output_length count tokens, and hash_ids are remapped
// prefix block ids, one per 512-token block: two requests whose leading ids
// are equal share that prefix.
//
// # Strictness
//
// The trace is outside input, so the Decoder checks every line and names the
// line, the field and the problem in an *Error that wraps one of the
// sentinels (ErrSyntax, ErrNotObject, ErrMissing, ErrNotInteger,
// ErrNegative, ErrTooLarge, ErrNotArray, ErrLineTooLong). The four fields are
// required and must be JSON integers: 12.0, 1e3, "12" and null are rejected.
// Sizes past MaxHashIDs ids or MaxTokens tokens are rejected as absurd, so
// that a corrupt line cannot make a reader allocate gigabytes. Unknown
// fields are allowed and ignored (other Mooncake traces add some); field
// names match exactly, not case-insensitively as encoding/json would.
// Whitespace-only lines are skipped but counted in line numbers.
//
// Timestamps may go backwards: file order is the trace order, and the
// consumers in this repository replay in file order without looking at
// timestamps. Rejecting a slightly out-of-order merged trace would buy
// nothing. No cross-field check is made between input_length and the
// number of hash ids, because the block size is a property of the trace,
// not of the format.
//
// # Concurrency
//
// A Decoder belongs to one goroutine. Read, Write and Tokens keep no state
// between calls and are safe for concurrent use. The package starts no
// goroutines.
package traces
