package traces

import (
	"bytes"
	"errors"
	"testing"
)

func TestWrite(t *testing.T) {
	tests := []struct {
		name string
		reqs []Request
		want string
		err  error
	}{
		{name: "nothing", want: ""},
		{
			name: "nil hash ids are an empty array",
			reqs: []Request{{Timestamp: 1, InputLength: 2, OutputLength: 3}},
			want: `{"timestamp": 1, "input_length": 2, "output_length": 3, "hash_ids": []}` + "\n",
		},
		{
			name: "two lines",
			reqs: []Request{{HashIDs: []uint64{1, 2}}, {Timestamp: 7, HashIDs: []uint64{1<<64 - 1}}},
			want: `{"timestamp": 0, "input_length": 0, "output_length": 0, "hash_ids": [1, 2]}` + "\n" +
				`{"timestamp": 7, "input_length": 0, "output_length": 0, "hash_ids": [18446744073709551615]}` + "\n",
		},
		{name: "negative timestamp", reqs: []Request{{Timestamp: -1}}, err: ErrNegative},
		{name: "negative input", reqs: []Request{{InputLength: -1}}, err: ErrNegative},
		{name: "absurd output", reqs: []Request{{OutputLength: MaxTokens + 1}}, err: ErrTooLarge},
		{name: "too many ids", reqs: []Request{{HashIDs: make([]uint64, MaxHashIDs+1)}}, err: ErrTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			err := Write(&out, tt.reqs)
			if !errors.Is(err, tt.err) {
				t.Fatalf("Write = %v, want %v", err, tt.err)
			}
			if tt.err == nil && out.String() != tt.want {
				t.Errorf("Write wrote %q, want %q", out.String(), tt.want)
			}
		})
	}
}
