package main

import (
	"testing"
)

// The adaptive weight of prefill work binds to its flags and variables,
// is off by default, and a threshold out of range, one outside kv mode or
// a saturated scale that is not a weight is refused naming the flag.
func TestServeAdaptivePrefillWeight(t *testing.T) {
	tests := []struct {
		name              string
		args              []string
		env               map[string]string
		threshold, blocks int
		satScale          float64
		problem           string // a line of the error, if refused
	}{
		{name: "off by default", threshold: 0, satScale: 1},
		{name: "flags", args: []string{"--router-saturation-prefill-tokens", "2048", "--router-saturation-decode-blocks", "512", "--router-prefill-load-scale-saturated", "0.5"},
			threshold: 2048, blocks: 512, satScale: 0.5},
		{name: "environment", env: map[string]string{"DYN_ROUTER_SATURATION_PREFILL_TOKENS": "4096", "DYN_ROUTER_SATURATION_DECODE_BLOCKS": "1024", "DYN_ROUTER_PREFILL_LOAD_SCALE_SATURATED": "2"},
			threshold: 4096, blocks: 1024, satScale: 2},
		{name: "flag beats environment", args: []string{"--router-saturation-prefill-tokens", "1024"}, env: map[string]string{"DYN_ROUTER_SATURATION_PREFILL_TOKENS": "4096"}, threshold: 1024, satScale: 1},
		{name: "blocks outside kv mode", args: []string{"--router-saturation-decode-blocks", "64", "--router-mode", "random"},
			problem: "--router-saturation-decode-blocks: 64 applies only with --router-mode kv (allowed 0 with --router-mode random)"},
		{name: "threshold negative", args: []string{"--router-saturation-prefill-tokens", "-5"},
			problem: "--router-saturation-prefill-tokens: -5 is out of range (allowed 0 to disable, or 1..1000000)"},
		{name: "threshold outside kv mode", args: []string{"--router-saturation-prefill-tokens", "2048", "--router-mode", "round-robin"},
			problem: "--router-saturation-prefill-tokens: 2048 applies only with --router-mode kv (allowed 0 with --router-mode round-robin)"},
		{name: "saturated scale negative from the environment", env: map[string]string{"DYN_ROUTER_PREFILL_LOAD_SCALE_SATURATED": "-1"},
			problem: "--router-prefill-load-scale-saturated: -1 is negative (allowed ≥ 0)"},
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
			cfg := parsedServe(t, tt.args)
			s := cfg.Scheduler
			threshold, blocks, satScale := s.SaturationPrefillTokens, s.SaturationDecodeBlocks, s.PrefillLoadScaleSaturated
			if threshold != tt.threshold || blocks != tt.blocks || satScale != tt.satScale {
				t.Errorf("thresholds %d tokens, %d blocks, saturated scale %v; want %d, %d, %v", threshold, blocks, satScale, tt.threshold, tt.blocks, tt.satScale)
			}
		})
	}
}
