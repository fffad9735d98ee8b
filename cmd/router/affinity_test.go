package main

import (
	"testing"
)

// The cache affinity binds to its flag and variable, is off by default,
// and a value out of range or outside kv mode is refused naming the flag.
func TestServeCacheAffinity(t *testing.T) {
	tests := []struct {
		name     string
		args     []string
		env      map[string]string
		affinity float64
		problem  string // a line of the error, if refused
	}{
		{name: "off by default", affinity: 0},
		{name: "flag", args: []string{"--router-cache-affinity", "16"}, affinity: 16},
		{name: "environment", env: map[string]string{"DYN_ROUTER_CACHE_AFFINITY": "8"}, affinity: 8},
		{name: "flag beats environment", args: []string{"--router-cache-affinity", "4"}, env: map[string]string{"DYN_ROUTER_CACHE_AFFINITY": "8"}, affinity: 4},
		{name: "negative", args: []string{"--router-cache-affinity", "-1"},
			problem: "--router-cache-affinity: -1 is negative (allowed ≥ 0)"},
		{name: "outside kv mode", args: []string{"--router-cache-affinity", "16", "--router-mode", "round-robin"},
			problem: "--router-cache-affinity: 16 applies only with --router-mode kv (allowed 0 with --router-mode round-robin)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			if tt.problem != "" {
				refusedServe(t, tt.args, tt.problem)
				return
			}
			if got := parsedServe(t, tt.args).Scheduler.CacheAffinity; got != tt.affinity {
				t.Errorf("cache affinity %v, want %v", got, tt.affinity)
			}
		})
	}
}
