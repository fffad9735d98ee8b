package workers

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestConfigValidate(t *testing.T) {
	if err := DefaultConfig().Validate(); err != nil {
		t.Fatalf("DefaultConfig().Validate() = %v", err)
	}
	tests := []struct {
		name   string
		change func(*Config)
		flag   string
	}{
		{"empty namespace", func(c *Config) { c.Namespace = "" }, "--namespace"},
		{"namespace with a slash", func(c *Config) { c.Namespace = "a/b" }, "--namespace"},
		{"namespace with a dot", func(c *Config) { c.Namespace = "a.b" }, "--namespace"},
		{"component with a wildcard", func(c *Config) { c.Component = "*" }, "--component"},
		{"empty prefill component", func(c *Config) { c.PrefillComponent = "" }, "--prefill-component"},
		{"same components", func(c *Config) { c.PrefillComponent = c.Component }, "--prefill-component"},
		{"endpoint with a space", func(c *Config) { c.Endpoint = "gen erate" }, "--endpoint"},
		{"empty router component", func(c *Config) { c.RouterComponent = "" }, "--router-component"},
		{"block size 0", func(c *Config) { c.BlockSize = 0 }, "--router-block-size"},
		{"block size huge", func(c *Config) { c.BlockSize = MaxBlockSize + 1 }, "--router-block-size"},
		{"negative min workers", func(c *Config) { c.MinInitialWorkers = -1 }, "DYN_ROUTER_MIN_INITIAL_WORKERS"},
		{"zero grace", func(c *Config) { c.UnknownWorkerGrace = 0 }, "--router-unknown-worker-grace"},
		{"grace over a day", func(c *Config) { c.UnknownWorkerGrace = 25 * time.Hour }, "--router-unknown-worker-grace"},
		{"negative default blocks", func(c *Config) { c.Defaults.TotalKVBlocks = -1 }, "--worker-default-total-kv-blocks"},
		{"negative default seqs", func(c *Config) { c.Defaults.MaxNumSeqs = -1 }, "--worker-default-max-num-seqs"},
		{"negative default tokens", func(c *Config) { c.Defaults.MaxNumBatchedTokens = -1 }, "--worker-default-max-num-batched-tokens"},
		{"zero etcd timeout", func(c *Config) { c.EtcdTimeout = 0 }, "--etcd-timeout"},
		{"zero probe interval", func(c *Config) { c.EtcdProbeInterval = 0 }, "--etcd-probe-interval"},
		{"negative max staleness", func(c *Config) { c.MaxStaleness = -time.Second }, "--router-workers-max-staleness"},
		{"max staleness over a week", func(c *Config) { c.MaxStaleness = 169 * time.Hour }, "DYN_ROUTER_WORKERS_MAX_STALENESS"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := DefaultConfig()
			tt.change(&c)
			err := c.Validate()
			if !errors.Is(err, ErrInvalidConfig) {
				t.Fatalf("Validate() = %v; want an error wrapping ErrInvalidConfig", err)
			}
			if !strings.Contains(err.Error(), tt.flag) {
				t.Errorf("Validate() = %q; want it to name %s", err, tt.flag)
			}
		})
	}
}

func TestTypeString(t *testing.T) {
	for typ, want := range map[Type]string{TypeDecode: "decode", TypePrefill: "prefill", 0: "type(0)"} {
		if got := typ.String(); got != want {
			t.Errorf("Type(%d).String() = %q, want %q", typ, got, want)
		}
	}
}
