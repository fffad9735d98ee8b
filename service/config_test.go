package service

import (
	"strings"
	"testing"
	"time"
)

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name   string
		modify func(*Config)
		want   string // the whole error; "" means valid
	}{
		{"defaults", func(*Config) {}, ""},
		{"dotted namespace", func(c *Config) { c.Namespace = "a.b" }, `--namespace: "a.b" must be a non-empty NATS subject token (no '.', '*', '>' or white space)`},
		{"negative handlers", func(c *Config) { c.Handlers = -1 }, "--router-handlers: -1 is out of range (allowed 0..1024, 0 means one per CPU)"},
		{"every problem, one line each", func(c *Config) { c.Component, c.Handlers, c.DrainTimeout = "", 2000, 2*time.Hour },
			strings.Join([]string{
				`--router-component: "" must be a non-empty NATS subject token (no '.', '*', '>' or white space)`,
				"--router-handlers: 2000 is out of range (allowed 0..1024, 0 means one per CPU)",
				"--router-drain-timeout: 2h0m0s is out of range (allowed > 0 and ≤ 1h)",
			}, "\n")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := DefaultConfig()
			tt.modify(&c)
			got := ""
			if err := c.Validate(); err != nil {
				got = err.Error()
			}
			if got != tt.want {
				t.Errorf("Validate() = %q\nwant %q", got, tt.want)
			}
		})
	}
}
