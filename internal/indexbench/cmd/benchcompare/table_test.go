package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/kvrouter/router/internal/indexbench"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

func TestMedian(t *testing.T) {
	tests := []struct {
		name string
		in   []float64
		want float64
	}{
		{"empty", nil, math.NaN()},
		{"one", []float64{7}, 7},
		{"odd, unsorted", []float64{3, 1, 2}, 2},
		{"even: mean of the middle two", []float64{4, 1, 3, 2}, 2.5},
		{"repeated values", []float64{5, 5, 1}, 5},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := slices.Clone(tt.in)
			got := median(in)
			if got != tt.want && !(math.IsNaN(got) && math.IsNaN(tt.want)) {
				t.Errorf("median(%v) = %v, want %v", tt.in, got, tt.want)
			}
			if !slices.Equal(in, tt.in) {
				t.Errorf("median reordered its input: %v, was %v", in, tt.in)
			}
		})
	}
}

// resultJSON is what `router bench index --json` prints for r.
func resultJSON(t *testing.T, r indexbench.Result) []byte {
	t.Helper()
	out := struct {
		Trace string `json:"trace"`
		indexbench.Result
	}{"t.jsonl", r}
	b, err := json.Marshal(out)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// The figures' JSON names are indexbench.Result's: each one reads back the
// value it was given.
func TestParseResult(t *testing.T) {
	full := resultJSON(t, indexbench.Result{
		MixedBlockOpsPerSec: 1, LoadBlockOpsPerSec: 2, QueryBlockOpsPerSec: 3,
		FindMatchesP50Ns: 4, FindMatchesP99Ns: 5, BytesPerEntry: 6.5,
	})
	var old map[string]any
	if err := json.Unmarshal(full, &old); err != nil {
		t.Fatal(err)
	}
	delete(old, "bytes_per_entry")
	lacking, err := json.Marshal(old)
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name    string
		in      []byte
		want    sample
		wantErr string
	}{
		{"every figure", full, sample{1, 2, 3, 4, 5, 6.5}, ""},
		{"a binary without the figure", lacking, sample{}, "lacks bytes_per_entry"},
		{"the table instead of JSON", []byte("trace  t.jsonl\n"), sample{}, "--json"},
		{"a figure of the wrong type", []byte(`{"mixed_block_ops_per_sec": "fast"}`), sample{}, "read mixed_block_ops_per_sec"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseResult(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("parseResult: error %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("parseResult = %v, want %v", got, tt.want)
			}
		})
	}
}

// The table is testdata/<name>.golden.
func TestWriteTable(t *testing.T) {
	tests := []struct {
		name          string
		before, after []sample
	}{
		{"one run", []sample{{8e6, 4e6, 400e6, 800, 15000, 56.8}}, []sample{{9e6, 5e6, 380e6, 700, 16000, 49.3}}},
		{"medians", []sample{
			{8.1e6, 4e6, 400e6, 800, 15000, 56.8},
			{7.2e6, 3e6, 500e6, 900, 17000, 56.8},
			{8.3e6, 5e6, 450e6, 801, 16000, 56.8},
		}, []sample{
			{9e6, 5e6, 380e6, 700, 16000, 49.3},
			{9.4e6, 6e6, 370e6, 650, 14000, 49.3},
			{9.2e6, 4e6, 390e6, 751, 18000, 49.3},
		}},
		{"even runs and a zero before", []sample{
			{8e6, 4e6, 0, 800, 15000, 56.8},
			{9e6, 4e6, 0, 801, 15001, 56.8},
		}, []sample{
			{9e6, 5e6, 380e6, 700, 16000, 49.3},
			{9e6, 5e6, 380e6, 701, 16000, 49.3},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			before := &side{name: "before (main eb0beac)", samples: tt.before}
			after := &side{name: "after (working tree)", samples: tt.after}
			if err := writeTable(&out, "router bench index --json: medians", before, after); err != nil {
				t.Fatal(err)
			}
			golden := filepath.Join("testdata", strings.ReplaceAll(tt.name, " ", "_")+".golden")
			if *update {
				if err := os.WriteFile(golden, out.Bytes(), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatal(err)
			}
			if out.String() != string(want) {
				t.Errorf("table differs from %s (go test -run %s -update rewrites it):\n--- got\n%s\n--- want\n%s", golden, t.Name(), out.String(), want)
			}
		})
	}
}
