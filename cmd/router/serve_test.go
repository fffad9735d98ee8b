package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/kvrouter/router/internal/testutil"
)

func TestServeRejectsBadConfiguration(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want []string // lines the error must contain
	}{
		{"nats url", []string{"--nats-url", "http://x"}, []string{`--nats-url: "http://x" is not a nats:// URL`}},
		{"several problems at once", []string{"--etcd-endpoints", "localhost", "--namespace", "a.b", "--system-port", "70000"},
			[]string{`--etcd-endpoints: "localhost" is not an http:// URL`, `--namespace: "a.b" must be letters`, "--system-port: 70000"}},
		{"endpoint spelling", []string{"--endpoint", "dynamo.backend"}, []string{`--endpoint: "dynamo.backend" is not ns.component.endpoint`}},
		{"same components", []string{"--component", "x", "--prefill-component", "x"}, []string{"--prefill-component"}},
		{"data dir without embedded", []string{"--data-dir", "/tmp/x"}, []string{"--data-dir: only meaningful with --embedded"}},
		{"log level", []string{"--log-level", "loud"}, []string{`--log-level: "loud"`}},
		{"not a number", []string{"--system-port", "many"}, []string{"system-port"}},
		{"stray argument", []string{"extra"}, []string{`unexpected argument "extra"`}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := run(context.Background(), append([]string{"router", "serve"}, tc.args...), &stdout, &stderr)
			if code != 2 {
				t.Fatalf("exit %d, want 2; stderr:\n%s", code, stderr.String())
			}
			for _, w := range tc.want {
				if !strings.Contains(stderr.String(), w) {
					t.Errorf("stderr lacks %q:\n%s", w, stderr.String())
				}
			}
		})
	}
}

func TestServeFailsFastWithoutNATS(t *testing.T) {
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), []string{"router", "serve", "--nats-url", "nats://127.0.0.1:1", "--log-format", "json"}, &stdout, &stderr)
	if code != 1 || !strings.Contains(stderr.String(), "cannot reach NATS at nats://127.0.0.1:1") {
		t.Fatalf("exit %d, stderr:\n%s", code, stderr.String())
	}
}

// The embedded router starts, reports ready, serves metrics, and exits 0 when
// its context ends (as on SIGTERM).
func TestServeEmbedded(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var stdout, stderr testutil.Buffer
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{"router", "serve", "--embedded",
			"--nats-url", "nats://127.0.0.1:0", "--etcd-endpoints", "http://127.0.0.1:0",
			"--system-host", "127.0.0.1", "--system-port", "0", "--log-format", "json"}, &stdout, &stderr)
	}()
	metricsRe := regexp.MustCompile(`metrics: (http://\S+)/metrics`)
	var base string
	testutil.Eventually(t, 60*time.Second, func() bool {
		if m := metricsRe.FindStringSubmatch(stdout.String()); m != nil {
			base = m[1]
			return true
		}
		select {
		case code := <-done:
			t.Fatalf("router exited %d early; stderr:\n%s", code, stderr.String())
		default:
		}
		return false
	}, "router did not print its endpoints; stdout:\n%s", &stdout)

	client := &http.Client{Timeout: 5 * time.Second}
	defer client.CloseIdleConnections()
	get := func(path string) (int, string) {
		resp, err := client.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	testutil.Eventually(t, 30*time.Second, func() bool {
		code, _ := get("/health")
		return code == 200
	}, "router never became ready")
	_, body := get("/health")
	var health struct {
		Status    string            `json:"status"`
		Endpoints map[string]string `json:"endpoints"`
	}
	if err := json.Unmarshal([]byte(body), &health); err != nil || health.Status != "ready" || health.Endpoints["nats"] != "ready" {
		t.Fatalf("/health = %s (%v)", body, err)
	}
	code, body := get("/metrics")
	for _, family := range []string{"dynamo_component_uptime_seconds", "dynamo_component_kv_index_entries"} {
		if code != 200 || !strings.Contains(body, family) {
			t.Errorf("/metrics lacks %s (status %d)", family, code)
		}
	}

	cancel()
	select {
	case code := <-done:
		if code != 0 {
			t.Fatalf("exit %d after shutdown, want 0; stderr:\n%s", code, stderr.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("router did not stop within 30s of its context ending")
	}
}
