package traces

import (
	"bytes"
	"errors"
	"io"
	"os"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

const excerpt = "../testdata/mooncake_excerpt.jsonl"

func TestReadValid(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want []Request
	}{
		{
			name: "one line",
			in:   `{"timestamp": 0, "input_length": 6758, "output_length": 500, "hash_ids": [0, 1, 2]}` + "\n",
			want: []Request{{Timestamp: 0, InputLength: 6758, OutputLength: 500, HashIDs: []uint64{0, 1, 2}}},
		},
		{
			name: "empty input",
			in:   "",
		},
		{
			name: "no final newline, CRLF, blank lines",
			in:   "\n  \r\n" + `{"timestamp":1,"input_length":2,"output_length":3,"hash_ids":[4]}` + "\r\n\n" + `{"timestamp":5,"input_length":6,"output_length":7,"hash_ids":[]}`,
			want: []Request{
				{Timestamp: 1, InputLength: 2, OutputLength: 3, HashIDs: []uint64{4}},
				{Timestamp: 5, InputLength: 6, OutputLength: 7, HashIDs: []uint64{}},
			},
		},
		{
			name: "unknown fields and any field order",
			in:   `{"hash_ids": [ 7 , 8 ], "session": "x", "extra": {"a": [1.5]}, "output_length": 1, "input_length": 2, "timestamp": 3}`,
			want: []Request{{Timestamp: 3, InputLength: 2, OutputLength: 1, HashIDs: []uint64{7, 8}}},
		},
		{
			name: "timestamps may go backwards",
			in: `{"timestamp": 10, "input_length": 1, "output_length": 1, "hash_ids": [1]}` + "\n" +
				`{"timestamp": 5, "input_length": 1, "output_length": 1, "hash_ids": [1]}`,
			want: []Request{
				{Timestamp: 10, InputLength: 1, OutputLength: 1, HashIDs: []uint64{1}},
				{Timestamp: 5, InputLength: 1, OutputLength: 1, HashIDs: []uint64{1}},
			},
		},
		{
			name: "limits and minus zero",
			in:   `{"timestamp": 9223372036854775807, "input_length": 100000000, "output_length": -0, "hash_ids": [18446744073709551615, 0]}`,
			want: []Request{{Timestamp: 1<<63 - 1, InputLength: MaxTokens, OutputLength: 0, HashIDs: []uint64{1<<64 - 1, 0}}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Read(strings.NewReader(tt.in))
			if err != nil {
				t.Fatalf("Read: %v", err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("Read (-want +got):\n%s", diff)
			}
		})
	}
}

func TestReadErrors(t *testing.T) {
	const good = `{"timestamp": 0, "input_length": 1, "output_length": 1, "hash_ids": [1]}` + "\n"
	tests := []struct {
		name  string
		in    string
		line  int
		field string
		want  error
	}{
		{name: "garbage", in: "hello\n", line: 1, want: ErrSyntax},
		{name: "truncated", in: good + `{"timestamp": 0,`, line: 2, want: ErrSyntax},
		{name: "two objects on a line", in: `{"timestamp": 0} {}`, line: 1, want: ErrSyntax},
		{name: "array line", in: "[1, 2]", line: 1, want: ErrNotObject},
		{name: "null line", in: "null", line: 1, want: ErrNotObject},
		{name: "number line", in: good + good + "42", line: 3, want: ErrNotObject},
		{name: "missing timestamp", in: `{"input_length": 1, "output_length": 1, "hash_ids": []}`, line: 1, field: "timestamp", want: ErrMissing},
		{name: "field names are case sensitive", in: `{"Timestamp": 1, "input_length": 1, "output_length": 1, "hash_ids": []}`, line: 1, field: "timestamp", want: ErrMissing},
		{name: "null timestamp", in: `{"timestamp": null, "input_length": 1, "output_length": 1, "hash_ids": []}`, line: 1, field: "timestamp", want: ErrMissing},
		{name: "negative timestamp", in: good + `{"timestamp": -5, "input_length": 1, "output_length": 1, "hash_ids": []}`, line: 2, field: "timestamp", want: ErrNegative},
		{name: "fractional timestamp", in: `{"timestamp": 1.5, "input_length": 1, "output_length": 1, "hash_ids": []}`, line: 1, field: "timestamp", want: ErrNotInteger},
		{name: "integral float timestamp", in: `{"timestamp": 2.0, "input_length": 1, "output_length": 1, "hash_ids": []}`, line: 1, field: "timestamp", want: ErrNotInteger},
		{name: "exponent timestamp", in: `{"timestamp": 1e3, "input_length": 1, "output_length": 1, "hash_ids": []}`, line: 1, field: "timestamp", want: ErrNotInteger},
		{name: "string timestamp", in: `{"timestamp": "12", "input_length": 1, "output_length": 1, "hash_ids": []}`, line: 1, field: "timestamp", want: ErrNotInteger},
		{name: "timestamp overflows int64", in: `{"timestamp": 9223372036854775808, "input_length": 1, "output_length": 1, "hash_ids": []}`, line: 1, field: "timestamp", want: ErrTooLarge},
		{name: "missing input_length", in: `{"timestamp": 1, "output_length": 1, "hash_ids": []}`, line: 1, field: "input_length", want: ErrMissing},
		{name: "absurd input_length", in: `{"timestamp": 1, "input_length": 100000001, "output_length": 1, "hash_ids": []}`, line: 1, field: "input_length", want: ErrTooLarge},
		{name: "boolean input_length", in: `{"timestamp": 1, "input_length": true, "output_length": 1, "hash_ids": []}`, line: 1, field: "input_length", want: ErrNotInteger},
		{name: "negative output_length", in: `{"timestamp": 1, "input_length": 1, "output_length": -1, "hash_ids": []}`, line: 1, field: "output_length", want: ErrNegative},
		{name: "huge output_length", in: `{"timestamp": 1, "input_length": 1, "output_length": 99999999999999999999999, "hash_ids": []}`, line: 1, field: "output_length", want: ErrTooLarge},
		{name: "missing hash_ids", in: `{"timestamp": 1, "input_length": 1, "output_length": 1}`, line: 1, field: "hash_ids", want: ErrMissing},
		{name: "null hash_ids", in: `{"timestamp": 1, "input_length": 1, "output_length": 1, "hash_ids": null}`, line: 1, field: "hash_ids", want: ErrMissing},
		{name: "string hash_ids", in: `{"timestamp": 1, "input_length": 1, "output_length": 1, "hash_ids": "1,2"}`, line: 1, field: "hash_ids", want: ErrNotArray},
		{name: "object hash_ids", in: `{"timestamp": 1, "input_length": 1, "output_length": 1, "hash_ids": {"0": 1}}`, line: 1, field: "hash_ids", want: ErrNotArray},
		{name: "number hash_ids", in: `{"timestamp": 1, "input_length": 1, "output_length": 1, "hash_ids": 7}`, line: 1, field: "hash_ids", want: ErrNotArray},
		{name: "negative hash id", in: `{"timestamp": 1, "input_length": 1, "output_length": 1, "hash_ids": [1, -2]}`, line: 1, field: "hash_ids[1]", want: ErrNegative},
		{name: "fractional hash id", in: `{"timestamp": 1, "input_length": 1, "output_length": 1, "hash_ids": [1, 2, 3.5]}`, line: 1, field: "hash_ids[2]", want: ErrNotInteger},
		{name: "string hash id", in: `{"timestamp": 1, "input_length": 1, "output_length": 1, "hash_ids": ["1"]}`, line: 1, field: "hash_ids[0]", want: ErrNotInteger},
		{name: "nested array hash id", in: `{"timestamp": 1, "input_length": 1, "output_length": 1, "hash_ids": [0, [1]]}`, line: 1, field: "hash_ids[1]", want: ErrNotInteger},
		{name: "null hash id", in: `{"timestamp": 1, "input_length": 1, "output_length": 1, "hash_ids": [null]}`, line: 1, field: "hash_ids[0]", want: ErrNotInteger},
		{name: "hash id overflows uint64", in: `{"timestamp": 1, "input_length": 1, "output_length": 1, "hash_ids": [18446744073709551616]}`, line: 1, field: "hash_ids[0]", want: ErrTooLarge},
		{
			name:  "too many hash ids",
			in:    `{"timestamp": 1, "input_length": 1, "output_length": 1, "hash_ids": [` + strings.Repeat("0,", MaxHashIDs) + `0]}`,
			line:  1,
			field: "hash_ids",
			want:  ErrTooLarge,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Read(strings.NewReader(tt.in))
			if err == nil {
				t.Fatalf("Read = %d requests, want an error", len(got))
			}
			if !errors.Is(err, tt.want) {
				t.Errorf("Read error = %v, want %v", err, tt.want)
			}
			var lineErr *Error
			if !errors.As(err, &lineErr) {
				t.Fatalf("Read error %v is not an *Error", err)
			}
			if lineErr.Line != tt.line || lineErr.Field != tt.field {
				t.Errorf("error at line %d field %q, want line %d field %q", lineErr.Line, lineErr.Field, tt.line, tt.field)
			}
		})
	}
}

func TestReadMaxHashIDs(t *testing.T) {
	in := `{"timestamp": 1, "input_length": 1, "output_length": 1, "hash_ids": [` + strings.Repeat("7, ", MaxHashIDs-1) + `7]}`
	got, err := Read(strings.NewReader(in))
	if err != nil {
		t.Fatalf("Read: %v", err)
	}
	if len(got) != 1 || len(got[0].HashIDs) != MaxHashIDs {
		t.Fatalf("Read = %d requests, want 1 with %d ids", len(got), MaxHashIDs)
	}
}

func TestErrorMessage(t *testing.T) {
	in := `{"timestamp": 0, "input_length": 1, "output_length": 1, "hash_ids": []}` + "\n" +
		`{"timestamp": -5, "input_length": 1, "output_length": 1, "hash_ids": []}`
	_, err := Read(strings.NewReader(in))
	const want = `line 2: field "timestamp": negative: got -5`
	if err == nil || err.Error() != want {
		t.Errorf("Read error = %v, want %s", err, want)
	}
}

func TestDecoderContinuesAfterBadLine(t *testing.T) {
	in := "{\n" + `{"timestamp": 3, "input_length": 1, "output_length": 1, "hash_ids": [9]}` + "\n"
	d := NewDecoder(strings.NewReader(in))
	var req Request
	if err := d.Decode(&req); !errors.Is(err, ErrSyntax) {
		t.Fatalf("first Decode = %v, want %v", err, ErrSyntax)
	}
	if err := d.Decode(&req); err != nil {
		t.Fatalf("second Decode: %v", err)
	}
	want := Request{Timestamp: 3, InputLength: 1, OutputLength: 1, HashIDs: []uint64{9}}
	if diff := cmp.Diff(want, req); diff != "" {
		t.Errorf("second Decode (-want +got):\n%s", diff)
	}
	if d.Line() != 2 {
		t.Errorf("Line = %d, want 2", d.Line())
	}
	if err := d.Decode(&req); err != io.EOF {
		t.Errorf("third Decode = %v, want io.EOF", err)
	}
}

func TestDecoderLineTooLong(t *testing.T) {
	good := `{"timestamp": 1, "input_length": 1, "output_length": 1, "hash_ids": [1]}`
	tests := []struct {
		name    string
		maxLine int
		in      string
		errLine int // 0: no error
		reqs    int
	}{
		{name: "exactly the limit", maxLine: len(good), in: good + "\n" + good, reqs: 2},
		{name: "one byte over", maxLine: len(good) - 1, in: good + "\n", errLine: 1},
		{name: "long line past the reader's buffer", maxLine: 100 << 10, in: good + "\n" + strings.Repeat(" ", 200<<10) + "\n" + good, errLine: 2, reqs: 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := NewDecoder(strings.NewReader(tt.in))
			d.maxLine = tt.maxLine
			var reqs int
			for {
				var req Request
				err := d.Decode(&req)
				if err == io.EOF {
					break
				}
				if err != nil {
					var lineErr *Error
					if !errors.Is(err, ErrLineTooLong) || !errors.As(err, &lineErr) || lineErr.Line != tt.errLine {
						t.Fatalf("Decode = %v, want ErrLineTooLong at line %d", err, tt.errLine)
					}
					continue
				}
				reqs++
			}
			if reqs != tt.reqs {
				t.Errorf("decoded %d requests, want %d", reqs, tt.reqs)
			}
		})
	}
}

// errReader fails after its data.
type errReader struct{ data io.Reader }

var errBroken = errors.New("broken pipe")

func (r *errReader) Read(p []byte) (int, error) {
	n, err := r.data.Read(p)
	if err == io.EOF {
		return n, errBroken
	}
	return n, err
}

func TestReadReaderError(t *testing.T) {
	in := `{"timestamp": 1, "input_length": 1, "output_length": 1, "hash_ids": [1]}` + "\n"
	_, err := Read(&errReader{data: strings.NewReader(in)})
	if !errors.Is(err, errBroken) {
		t.Fatalf("Read = %v, want %v", err, errBroken)
	}
}

func TestReadExcerpt(t *testing.T) {
	data, err := os.ReadFile(excerpt)
	if err != nil {
		t.Fatal(err)
	}
	reqs, err := Read(bytes.NewReader(data))
	if err != nil {
		t.Fatalf("Read: %v", err)
	}
	if len(reqs) != 1000 {
		t.Fatalf("Read = %d requests, want 1000", len(reqs))
	}
	want := Request{Timestamp: 0, InputLength: 6758, OutputLength: 500, HashIDs: []uint64{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13}}
	if diff := cmp.Diff(want, reqs[0]); diff != "" {
		t.Errorf("first request (-want +got):\n%s", diff)
	}
	// The writer reproduces the release's layout byte for byte.
	var out bytes.Buffer
	if err := Write(&out, reqs); err != nil {
		t.Fatalf("Write: %v", err)
	}
	if !bytes.Equal(out.Bytes(), data) {
		t.Errorf("Write(Read(excerpt)) differs from the excerpt")
	}
}
