package main

import (
	"bytes"
	"context"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"
)

// `router serve --embedded` on a port another process holds (a second
// `make run`, a nats-server or etcd service) fails at once, says the address
// is in use, and names the flag that moves it. It used to wait out a 10s
// readiness timeout for NATS.
func TestServeEmbeddedPortInUse(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	held := strconv.Itoa(l.Addr().(*net.TCPAddr).Port)

	tests := []struct {
		name string
		args []string
		flag string
	}{
		{"nats", []string{"--nats-url", "nats://127.0.0.1:" + held, "--etcd-endpoints", "http://127.0.0.1:0"}, "--nats-url"},
		{"etcd", []string{"--nats-url", "nats://127.0.0.1:0", "--etcd-endpoints", "http://127.0.0.1:" + held}, "--etcd-endpoints"},
		{"status", []string{"--nats-url", "nats://127.0.0.1:0", "--etcd-endpoints", "http://127.0.0.1:0", "--system-port", held}, "--system-port"},
		{"http", []string{"--nats-url", "nats://127.0.0.1:0", "--etcd-endpoints", "http://127.0.0.1:0", "--http-host", "127.0.0.1", "--http-port", held}, "--http-port"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			args := append([]string{"router", "serve", "--embedded", "--data-dir", t.TempDir(), "--log-format", "json"}, tc.args...)
			began := time.Now()
			code := run(context.Background(), args, &stdout, &stderr)
			took := time.Since(began)
			if code != 1 {
				t.Fatalf("exit %d, want 1; stderr:\n%s", code, stderr.String())
			}
			for _, want := range []string{"address already in use", tc.flag, ":" + held} {
				if !strings.Contains(stderr.String(), want) {
					t.Errorf("stderr lacks %q:\n%s", want, stderr.String())
				}
			}
			// Well under the old 10s timeout; the etcd and status cases
			// first start embedded servers, which takes a fraction of a
			// second.
			if took > 5*time.Second {
				t.Errorf("failed after %v, want under 5s", took)
			}
			t.Logf("failed in %v: %s", took, strings.TrimSpace(stderr.String()))
		})
	}
}
