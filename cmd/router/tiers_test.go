package main

import (
	"testing"
)

// The tier weights bind to their flags and to Dynamo's variables, and a
// value out of [0, 1] or not a number is refused naming the flag.
func TestServeTierWeights(t *testing.T) {
	tests := []struct {
		name       string
		args       []string
		env        map[string]string
		host, disk float64
		problem    string // a line of the error, if refused
	}{
		{name: "Dynamo's defaults", host: 0.75, disk: 0.25},
		{name: "flags", args: []string{"--router-host-cache-hit-weight", "0.5", "--router-disk-cache-hit-weight", "0"}, host: 0.5, disk: 0},
		{name: "environment", env: map[string]string{"DYN_ROUTER_HOST_CACHE_HIT_WEIGHT": "1", "DYN_ROUTER_DISK_CACHE_HIT_WEIGHT": "0.125"}, host: 1, disk: 0.125},
		{name: "flag beats environment", args: []string{"--router-host-cache-hit-weight", "0.25"}, env: map[string]string{"DYN_ROUTER_HOST_CACHE_HIT_WEIGHT": "1"}, host: 0.25, disk: 0.25},
		{name: "host above 1", args: []string{"--router-host-cache-hit-weight", "1.5"},
			problem: "--router-host-cache-hit-weight: 1.5 is out of range (allowed 0..1)"},
		{name: "disk negative from the environment", env: map[string]string{"DYN_ROUTER_DISK_CACHE_HIT_WEIGHT": "-0.5"},
			problem: "--router-disk-cache-hit-weight: -0.5 is negative (allowed 0..1)"},
		{name: "not a number", env: map[string]string{"DYN_ROUTER_HOST_CACHE_HIT_WEIGHT": "heavy"},
			problem: `--router-host-cache-hit-weight: "heavy" from DYN_ROUTER_HOST_CACHE_HIT_WEIGHT is not a number`},
		{name: "NaN", args: []string{"--router-disk-cache-hit-weight", "NaN"},
			problem: "--router-disk-cache-hit-weight: NaN is not a finite number (allowed 0..1)"},
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
			host, disk := cfg.Scheduler.HostCacheHitWeight, cfg.Scheduler.DiskCacheHitWeight
			if host != tt.host || disk != tt.disk {
				t.Errorf("weights host %v, disk %v; want %v, %v", host, disk, tt.host, tt.disk)
			}
		})
	}
}
