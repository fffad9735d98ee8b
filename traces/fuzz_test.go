package traces

import (
	"bufio"
	"bytes"
	"errors"
	"os"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// FuzzRead checks that Read never panics, that it reports every failure as
// an *Error, and that what it accepts survives a Write/Read round trip and
// writes back identically.
func FuzzRead(f *testing.F) {
	data, err := os.ReadFile(excerpt)
	if err != nil {
		f.Fatal(err)
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(nil, MaxLineBytes)
	var first []byte
	for n := 0; n < 8 && sc.Scan(); n++ {
		line := append(append([]byte(nil), sc.Bytes()...), '\n')
		f.Add(line)
		first = append(first, line...)
	}
	f.Add(first)
	for _, s := range []string{
		"",
		"\n\n",
		`{"timestamp": 1.5, "input_length": 1, "output_length": 1, "hash_ids": []}`,
		`{"timestamp": 1, "input_length": 1, "output_length": 1, "hash_ids": [1, -2, "x"]}`,
		`{"timestamp": 1, "input_length": 1, "output_length": 1, "hash_ids": [ 1 ,2 ] , "x": null}`,
		`{"timestamp": -0, "input_length": 100000000, "output_length": 0, "hash_ids": [18446744073709551615]}`,
		`{"hash_ids": {}, "timestamp": "1"}`,
		"[1]\r\nnull\r\n{}",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		reqs, err := Read(bytes.NewReader(in))
		if err != nil {
			var lineErr *Error
			if !errors.As(err, &lineErr) || lineErr.Line < 1 {
				t.Fatalf("Read error %v is not an *Error with a line", err)
			}
			return
		}
		var out bytes.Buffer
		if err := Write(&out, reqs); err != nil {
			t.Fatalf("Write of what Read accepted: %v", err)
		}
		again, err := Read(bytes.NewReader(out.Bytes()))
		if err != nil {
			t.Fatalf("Read of what Write wrote: %v", err)
		}
		if diff := cmp.Diff(reqs, again); diff != "" {
			t.Fatalf("round trip (-first +second):\n%s", diff)
		}
		var out2 bytes.Buffer
		if err := Write(&out2, again); err != nil {
			t.Fatalf("second Write: %v", err)
		}
		if !bytes.Equal(out.Bytes(), out2.Bytes()) {
			t.Fatalf("Write is not stable:\n%q\n%q", out.Bytes(), out2.Bytes())
		}
	})
}
