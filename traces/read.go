package traces

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
)

// Decoder reads requests from a JSONL trace one line at a time, so a trace
// of any length is read in memory proportional to its longest line.
type Decoder struct {
	r       *bufio.Reader
	buf     []byte
	line    int
	maxLine int // MaxLineBytes; lowered by tests
}

// NewDecoder returns a Decoder that reads from r. It buffers r.
func NewDecoder(r io.Reader) *Decoder {
	return &Decoder{r: bufio.NewReaderSize(r, 64<<10), maxLine: MaxLineBytes}
}

// Line returns the number of the last line read, counting from 1.
func (d *Decoder) Line() int { return d.line }

// Decode reads the next non-blank line into req, replacing its contents. It
// returns io.EOF at the end of input, an *Error for a bad line, and an error
// wrapping the reader's error if reading fails. A bad line does not stop the
// decoder: the next call reads the line after it.
func (d *Decoder) Decode(req *Request) error {
	for {
		line, err := d.readLine()
		if err != nil {
			return err
		}
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		r, perr := parseLine(line)
		if perr != nil {
			perr.Line = d.line
			return perr
		}
		*req = r
		return nil
	}
}

// Read decodes a whole trace. It stops at the first bad line; an empty
// trace is not an error.
func Read(r io.Reader) ([]Request, error) {
	d := NewDecoder(r)
	var reqs []Request
	for {
		var req Request
		err := d.Decode(&req)
		if err == io.EOF {
			return reqs, nil
		}
		if err != nil {
			return nil, err
		}
		reqs = append(reqs, req)
	}
}

// readLine returns the next line without its line ending. The slice is
// valid until the next call.
func (d *Decoder) readLine() ([]byte, error) {
	d.buf = d.buf[:0]
	tooLong := false
	for {
		chunk, err := d.r.ReadSlice('\n')
		if !tooLong {
			// One extra byte for the newline itself.
			if len(d.buf)+len(chunk) > d.maxLine+1 {
				tooLong = true
				d.buf = d.buf[:0]
			} else {
				d.buf = append(d.buf, chunk...)
			}
		}
		if err == bufio.ErrBufferFull {
			continue
		}
		if err == io.EOF {
			if len(d.buf) == 0 && !tooLong {
				return nil, io.EOF
			}
			break // a last line without a newline
		}
		if err != nil {
			return nil, fmt.Errorf("read trace line %d: %w", d.line+1, err)
		}
		break
	}
	d.line++
	if tooLong {
		return nil, &Error{Line: d.line, Err: fmt.Errorf("%w: more than %d bytes", ErrLineTooLong, d.maxLine)}
	}
	line := bytes.TrimSuffix(d.buf, []byte("\n"))
	line = bytes.TrimSuffix(line, []byte("\r"))
	if len(line) > d.maxLine {
		return nil, &Error{Line: d.line, Err: fmt.Errorf("%w: more than %d bytes", ErrLineTooLong, d.maxLine)}
	}
	return line, nil
}

// parseLine decodes one non-blank line. The returned *Error lacks the line
// number, which the caller fills in.
func parseLine(line []byte) (Request, *Error) {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(line, &fields); err != nil {
		var typeErr *json.UnmarshalTypeError
		if errors.As(err, &typeErr) {
			return Request{}, &Error{Err: fmt.Errorf("%w: got %s", ErrNotObject, describe(bytes.TrimSpace(line)))}
		}
		return Request{}, &Error{Err: fmt.Errorf("%w: %v", ErrSyntax, err)}
	}
	if fields == nil { // the line is null
		return Request{}, &Error{Err: fmt.Errorf("%w: got null", ErrNotObject)}
	}
	var req Request
	ts, err := field(fields, "timestamp", math.MaxInt64)
	if err != nil {
		return Request{}, err
	}
	in, err := field(fields, "input_length", MaxTokens)
	if err != nil {
		return Request{}, err
	}
	out, err := field(fields, "output_length", MaxTokens)
	if err != nil {
		return Request{}, err
	}
	req.Timestamp, req.InputLength, req.OutputLength = int64(ts), int(in), int(out)
	if req.HashIDs, err = hashIDs(fields["hash_ids"]); err != nil {
		return Request{}, err
	}
	return req, nil
}

// field parses the required integer field name in [0, limit].
func field(fields map[string]json.RawMessage, name string, limit uint64) (uint64, *Error) {
	raw, ok := fields[name]
	if !ok || string(raw) == "null" {
		return 0, &Error{Field: name, Err: ErrMissing}
	}
	v, err := parseUint(raw, limit)
	if err != nil {
		return 0, &Error{Field: name, Err: err}
	}
	return v, nil
}

// hashIDs parses the hash_ids array. raw is valid JSON, as it came out of
// json.Unmarshal, so the scan only has to tell numbers from other values;
// it still checks bounds, so that it cannot panic on any input.
func hashIDs(raw json.RawMessage) ([]uint64, *Error) {
	const name = "hash_ids"
	if len(raw) == 0 || string(raw) == "null" {
		return nil, &Error{Field: name, Err: ErrMissing}
	}
	if raw[0] != '[' {
		return nil, &Error{Field: name, Err: fmt.Errorf("%w: got %s", ErrNotArray, describe(raw))}
	}
	// Commas bound the count from above; the cap keeps a huge line from
	// reserving more than the limit allows.
	ids := make([]uint64, 0, min(bytes.Count(raw, []byte(",")), MaxHashIDs)+1)
	i := skipSpace(raw, 1)
	if i < len(raw) && raw[i] == ']' {
		return ids, nil
	}
	for {
		if len(ids) == MaxHashIDs {
			return nil, &Error{Field: name, Err: fmt.Errorf("%w: more than %d ids", ErrTooLarge, MaxHashIDs)}
		}
		i = skipSpace(raw, i)
		start := i
		for i < len(raw) && isNumberByte(raw[i]) {
			i++
		}
		if i == start {
			return nil, &Error{Field: elemName(len(ids)), Err: fmt.Errorf("%w: got %s", ErrNotInteger, describe(raw[start:]))}
		}
		v, err := parseUint(raw[start:i], math.MaxUint64)
		if err != nil {
			return nil, &Error{Field: elemName(len(ids)), Err: err}
		}
		ids = append(ids, v)
		i = skipSpace(raw, i)
		switch {
		case i < len(raw) && raw[i] == ',':
			i++
		case i < len(raw) && raw[i] == ']':
			return ids, nil
		default:
			return nil, &Error{Field: name, Err: fmt.Errorf("%w: bad array", ErrSyntax)}
		}
	}
}

// elemName names the i-th hash id in an error.
func elemName(i int) string { return fmt.Sprintf("hash_ids[%d]", i) }

// parseUint parses a JSON value as an integer in [0, limit]. "-0" is 0.
func parseUint(raw []byte, limit uint64) (uint64, error) {
	digits, neg := raw, false
	if len(digits) > 0 && digits[0] == '-' {
		digits, neg = digits[1:], true
	}
	if len(digits) == 0 {
		return 0, fmt.Errorf("%w: got %s", ErrNotInteger, describe(raw))
	}
	var v uint64
	overflow, zero := false, true
	for _, c := range digits {
		if c < '0' || c > '9' {
			return 0, fmt.Errorf("%w: got %s", ErrNotInteger, describe(raw))
		}
		d := uint64(c - '0')
		zero = zero && d == 0
		if v > (math.MaxUint64-d)/10 {
			overflow = true
		}
		v = v*10 + d
	}
	switch {
	case neg && !zero:
		return 0, fmt.Errorf("%w: got %s", ErrNegative, describe(raw))
	case overflow || v > limit:
		return 0, fmt.Errorf("%w: got %s, limit %d", ErrTooLarge, describe(raw), limit)
	}
	return v, nil
}

// describe names a JSON value for an error message: its kind, or a number
// literal cut to a readable length.
func describe(raw []byte) string {
	if len(raw) == 0 {
		return "nothing"
	}
	switch raw[0] {
	case '"':
		return "a string"
	case '{':
		return "an object"
	case '[':
		return "an array"
	case 't', 'f':
		return "a boolean"
	case 'n':
		return "null"
	}
	n := 0
	for n < len(raw) && n < 24 && isNumberByte(raw[n]) {
		n++
	}
	if n == 0 {
		return fmt.Sprintf("%q", raw[:min(len(raw), 8)])
	}
	if n < len(raw) && isNumberByte(raw[n]) {
		return string(raw[:n]) + "…"
	}
	return string(raw[:n])
}

// isNumberByte tells whether c can appear in a JSON number.
func isNumberByte(c byte) bool {
	return c >= '0' && c <= '9' || c == '-' || c == '+' || c == '.' || c == 'e' || c == 'E'
}

// skipSpace returns the index of the first non-space byte of b at or after i.
func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}
