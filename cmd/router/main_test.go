package main

import (
	"bytes"
	"context"
	"testing"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// Every command reports flags that do not parse alike: all of them, one
// line each, named with two dashes (the flag package says -name and stops
// at the first).
func TestUsageErrors(t *testing.T) {
	tests := []struct {
		name   string
		args   []string
		stderr string
	}{
		{name: "root", args: []string{"--verbose"}, stderr: "router: --verbose: no such flag\n"},
		{name: "request", args: []string{"request", "--timeout", "5", "-nats-url"},
			stderr: "router: request: 2 problems:\n" +
				"  --timeout: \"5\" is not a duration such as 500ms, 10s or 1m30s\n" +
				"  --nats-url: needs a value\n"},
		{name: "hash", args: []string{"hash", "--chain-seed", "-1", "1"},
			stderr: "router: hash: --chain-seed: \"-1\" is not a non-negative integer\n"},
		{name: "bench index", args: []string{"bench", "index", "--workers", "many", "--goroutines=x", "--json=maybe"},
			stderr: "router: bench index: 3 problems:\n" +
				"  --workers: \"many\" is not an integer\n" +
				"  --goroutines: \"x\" is not an integer\n" +
				"  --json: \"maybe\" is not true or false\n"},
		{name: "sim", args: []string{"sim", "--workers", "x"}, stderr: "router: sim: --workers: \"x\" is not an integer\n"},
		{name: "an unknown flag and its value", args: []string{"serve", "--block-size", "16", "--router-ttl-secs", "1.5"},
			stderr: "router: serve: 2 problems:\n" +
				"  --block-size: no such flag (did you mean --router-block-size?)\n" +
				"  --router-ttl-secs: \"1.5\" is not an integer\n"},
		{name: "out of range", args: []string{"serve", "--router-block-size", "99999999999999999999"},
			stderr: "router: serve: --router-block-size: \"99999999999999999999\" is out of range for an integer\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := run(context.Background(), append([]string{"router"}, tt.args...), &stdout, &stderr)
			if code != 2 {
				t.Errorf("exit %d, want 2", code)
			}
			if diff := cmp.Diff(tt.stderr, stderr.String()); diff != "" {
				t.Errorf("stderr (-want +got):\n%s", diff)
			}
			if stdout.Len() != 0 {
				t.Errorf("stdout %q, want nothing (no help after an error)", stdout.String())
			}
		})
	}
}
