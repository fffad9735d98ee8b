package workers

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/kvrouter/router/blockhash"
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
		{"block size past the hasher's", func(c *Config) { c.BlockSize = blockhash.MaxBlockSize + 1 }, "--router-block-size: 65537 is out of range (allowed 1..65536)"},
		{"negative min workers", func(c *Config) { c.MinInitialWorkers = -1 }, "--router-min-initial-workers: -1 is out of range (allowed 0..1000000)"},
		{"zero grace", func(c *Config) { c.UnknownWorkerGrace = 0 }, "--router-unknown-worker-grace"},
		{"grace over a day", func(c *Config) { c.UnknownWorkerGrace = 25 * time.Hour }, "--router-unknown-worker-grace"},
		{"negative default blocks", func(c *Config) { c.Defaults.TotalKVBlocks = -1 }, "--worker-default-total-kv-blocks"},
		{"negative default seqs", func(c *Config) { c.Defaults.MaxNumSeqs = -1 }, "--worker-default-max-num-seqs"},
		{"negative default tokens", func(c *Config) { c.Defaults.MaxNumBatchedTokens = -1 }, "--worker-default-max-num-batched-tokens"},
		{"zero etcd timeout", func(c *Config) { c.EtcdTimeout = 0 }, "--etcd-timeout"},
		{"zero probe interval", func(c *Config) { c.EtcdProbeInterval = 0 }, "--etcd-probe-interval"},
		{"negative max staleness", func(c *Config) { c.MaxStaleness = -time.Second }, "--router-workers-max-staleness"},
		{"max staleness over a week", func(c *Config) { c.MaxStaleness = 169 * time.Hour }, "--router-workers-max-staleness: 169h0m0s is out of range"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := DefaultConfig()
			tt.change(&c)
			err := c.Validate()
			if !errors.Is(err, ErrInvalidConfig) {
				t.Fatalf("Validate() = %v; want an error wrapping ErrInvalidConfig", err)
			}
			if !strings.HasPrefix(err.Error(), tt.flag) {
				t.Errorf("Validate() = %q; want it to start with %s", err, tt.flag)
			}
		})
	}
}

// Validate reports every problem, one per line, each starting with its flag
// and wrapping ErrInvalidConfig without printing it.
func TestConfigValidateReportsEveryProblem(t *testing.T) {
	c := DefaultConfig()
	c.BlockSize, c.EtcdTimeout, c.Defaults.MaxNumSeqs = 0, 0, -1
	err := c.Validate()
	want := "--router-block-size: 0 is out of range (allowed 1..65536)\n" +
		"--worker-default-max-num-seqs: -1 is out of range (allowed 0..281474976710656, 0 means unknown)\n" +
		"--etcd-timeout: 0s is out of range (allowed > 0 and ≤ 5m)"
	if err == nil || err.Error() != want {
		t.Fatalf("Validate() = %v\nwant:\n%s", err, want)
	}
	if !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("Validate() = %v; want an error wrapping ErrInvalidConfig", err)
	}
}

func TestTypeString(t *testing.T) {
	for typ, want := range map[Type]string{TypeDecode: "decode", TypePrefill: "prefill", 0: "type(0)"} {
		if got := typ.String(); got != want {
			t.Errorf("Type(%d).String() = %q, want %q", typ, got, want)
		}
	}
}
