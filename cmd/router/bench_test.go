package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const benchTrace = "../../testdata/mooncake_excerpt.jsonl"

// benchSmall are flags that replay the excerpt quickly.
var benchSmall = []string{"--trace", benchTrace, "--workers", "4", "--cache-blocks", "256", "--keys-per-block", "2", "--duplicate", "2", "--goroutines", "2", "--min-query-time", "0"}

func TestBenchIndexJSON(t *testing.T) {
	var stdout, stderr bytes.Buffer
	args := append([]string{"router", "bench", "index", "--json"}, benchSmall...)
	if code := run(context.Background(), args, &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d, stderr %q", code, stderr.String())
	}
	var got struct {
		Trace               string  `json:"trace"`
		Requests            int     `json:"requests"`
		Entries             int     `json:"entries"`
		QueryBlockOpsPerSec float64 `json:"query_block_ops_per_sec"`
		MixedBlockOpsPerSec float64 `json:"mixed_block_ops_per_sec"`
		P50                 int64   `json:"find_matches_p50_ns"`
		P99                 int64   `json:"find_matches_p99_ns"`
		BytesPerEntry       float64 `json:"bytes_per_entry"`
		Config              struct {
			Workers     int `json:"workers"`
			CacheBlocks int `json:"cache_blocks"`
			Goroutines  int `json:"goroutines"`
		} `json:"config"`
	}
	if err := decodeOne(stdout.Bytes(), &got); err != nil {
		t.Fatalf("output is not one JSON object: %v\n%s", err, stdout.String())
	}
	switch {
	case got.Trace != benchTrace || got.Requests != 2000:
		t.Errorf("trace %q, %d requests; want %q, 2000", got.Trace, got.Requests, benchTrace)
	case got.Config.Workers != 4 || got.Config.CacheBlocks != 256 || got.Config.Goroutines != 2:
		t.Errorf("config echo %+v does not match the flags", got.Config)
	case got.Entries <= 0 || got.Entries > 4*256:
		t.Errorf("entries = %d, want 1..1024", got.Entries)
	case got.QueryBlockOpsPerSec <= 0 || got.MixedBlockOpsPerSec <= 0:
		t.Errorf("rates %v and %v, want positive", got.QueryBlockOpsPerSec, got.MixedBlockOpsPerSec)
	case got.P50 <= 0 || got.P99 < got.P50 || got.BytesPerEntry <= 0:
		t.Errorf("p50 %d, p99 %d, bytes/entry %v", got.P50, got.P99, got.BytesPerEntry)
	}
}

// decodeOne decodes exactly one JSON value from b into v.
func decodeOne(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return &json.SyntaxError{Offset: dec.InputOffset()}
	}
	return nil
}

func TestBenchIndexTable(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := run(context.Background(), append([]string{"router", "bench", "index"}, benchSmall...), &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d, stderr %q", code, stderr.String())
	}
	for _, want := range []string{"query", "mixed", "find_matches", "bytes/entry", "block-ops/s"} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, stdout.String())
		}
	}
}

func TestBenchIndexErrors(t *testing.T) {
	garbage := filepath.Join(t.TempDir(), "bad.jsonl")
	trace := `{"timestamp": 0, "input_length": 1, "output_length": 1, "hash_ids": [1]}` + "\n" + `{"timestamp": -1}` + "\n"
	if err := os.WriteFile(garbage, []byte(trace), 0o600); err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(t.TempDir(), "empty.jsonl")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		args []string
		code int
		want string // in stderr
	}{
		{name: "no workers", args: []string{"--workers", "0"}, code: 2, want: "--workers must be in 1..65536"},
		{name: "too many keys", args: []string{"--keys-per-block", "513"}, code: 2, want: "--keys-per-block must be in 1..512"},
		{name: "no cache", args: []string{"--cache-blocks", "-3"}, code: 2, want: "--cache-blocks"},
		{name: "no copies", args: []string{"--duplicate", "0"}, code: 2, want: "--duplicate"},
		{name: "no goroutines", args: []string{"--goroutines", "0"}, code: 2, want: "--goroutines"},
		{name: "negative cap", args: []string{"--max-entries", "-1"}, code: 2, want: "--max-entries"},
		{name: "negative query time", args: []string{"--min-query-time", "-1s"}, code: 2, want: "--min-query-time must be in 0..10m0s"},
		{name: "not a number", args: []string{"--workers", "many"}, code: 2, want: "workers"},
		{name: "stray argument", args: []string{"extra"}, code: 2, want: "unexpected argument"},
		{name: "missing trace", args: []string{"--trace", filepath.Join(t.TempDir(), "none.jsonl")}, code: 2, want: "--trace"},
		{name: "bad trace", args: []string{"--trace", garbage}, code: 1, want: `line 2: field "timestamp": negative`},
		{name: "empty trace", args: []string{"--trace", empty}, code: 1, want: "no requests"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			args := append([]string{"router", "bench", "index", "--trace", benchTrace}, tt.args...)
			code := run(context.Background(), args, &stdout, &stderr)
			if code != tt.code || !strings.Contains(stderr.String(), tt.want) {
				t.Errorf("exit %d, stderr %q; want exit %d and %q", code, stderr.String(), tt.code, tt.want)
			}
		})
	}
}
