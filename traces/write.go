package traces

import (
	"bufio"
	"fmt"
	"io"
	"strconv"
)

// Write writes reqs as a JSONL trace in the layout of the Mooncake release
// (`{"timestamp": 0, "input_length": 1, "output_length": 2, "hash_ids": [3, 4]}`),
// so that Write(Read(trace)) reproduces a well-formed trace byte for byte.
// It refuses a request that Read would reject.
func Write(w io.Writer, reqs []Request) error {
	bw := bufio.NewWriter(w)
	var line []byte
	for i, req := range reqs {
		if err := req.check(); err != nil {
			return fmt.Errorf("write request %d: %w", i, err)
		}
		line = appendLine(line[:0], req)
		if _, err := bw.Write(line); err != nil {
			return fmt.Errorf("write request %d: %w", i, err)
		}
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("write trace: %w", err)
	}
	return nil
}

// check reports a value that Read would reject.
func (r *Request) check() error {
	switch {
	case r.Timestamp < 0:
		return fmt.Errorf("timestamp: %w: got %d", ErrNegative, r.Timestamp)
	case r.InputLength < 0:
		return fmt.Errorf("input_length: %w: got %d", ErrNegative, r.InputLength)
	case r.InputLength > MaxTokens:
		return fmt.Errorf("input_length: %w: got %d, limit %d", ErrTooLarge, r.InputLength, MaxTokens)
	case r.OutputLength < 0:
		return fmt.Errorf("output_length: %w: got %d", ErrNegative, r.OutputLength)
	case r.OutputLength > MaxTokens:
		return fmt.Errorf("output_length: %w: got %d, limit %d", ErrTooLarge, r.OutputLength, MaxTokens)
	case len(r.HashIDs) > MaxHashIDs:
		return fmt.Errorf("hash_ids: %w: %d ids, limit %d", ErrTooLarge, len(r.HashIDs), MaxHashIDs)
	}
	return nil
}

// appendLine appends req's line, newline included, to dst.
func appendLine(dst []byte, req Request) []byte {
	dst = append(dst, `{"timestamp": `...)
	dst = strconv.AppendInt(dst, req.Timestamp, 10)
	dst = append(dst, `, "input_length": `...)
	dst = strconv.AppendInt(dst, int64(req.InputLength), 10)
	dst = append(dst, `, "output_length": `...)
	dst = strconv.AppendInt(dst, int64(req.OutputLength), 10)
	dst = append(dst, `, "hash_ids": [`...)
	for i, id := range req.HashIDs {
		if i > 0 {
			dst = append(dst, ", "...)
		}
		dst = strconv.AppendUint(dst, id, 10)
	}
	return append(dst, "]}\n"...)
}
