package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/urfave/cli/v2"

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
			[]string{`--etcd-endpoints: "localhost" is not an http:// URL`, `--namespace: "a.b" must be 1 to 128 letters`, "--system-port: 70000"}},
		{"endpoint spelling", []string{"--endpoint", "dynamo.backend"}, []string{`--endpoint: "dynamo.backend" is not ns.component.endpoint`}},
		{"same components", []string{"--component", "x", "--prefill-component", "x"}, []string{"--prefill-component"}},
		{"data dir without embedded", []string{"--data-dir", "/tmp/x"}, []string{"--data-dir: only meaningful with --embedded"}},
		{"log level", []string{"--log-level", "loud"}, []string{`--log-level: "loud"`}},
		{"not a number", []string{"--system-port", "many"}, []string{"system-port"}},
		{"http port", []string{"--http-port", "70000"}, []string{"--http-port: 70000 is out of range (allowed 0..65535, or -1 for off)"}},
		{"http host", []string{"--http-port", "0", "--http-host", "local host"}, []string{`--http-host: "local host" is not a host name or an IP address`}},
		{"http and status on one port", []string{"--http-port", "8081", "--system-port", "8081"}, []string{"--http-port: 8081 is also --system-port"}},
		{"stray argument", []string{"extra"}, []string{`unexpected argument "extra"`}},
		{"warm start timeout", []string{"--router-warm-start-timeout", "-1s"},
			[]string{"--router-warm-start-timeout: -1s is out of range (allowed 0 to 5m; 0 turns the warm start off)"}},
		{"no etcd without a workers file", []string{"--etcd-endpoints", ""},
			[]string{"--etcd-endpoints: no endpoint given (empty runs without etcd, which needs --workers-file)"}},
		{"embedded without etcd", []string{"--embedded", "--etcd-endpoints", "", "--workers-file", "workers.json"},
			[]string{"--etcd-endpoints: empty, but --embedded needs an address for its etcd"}},
		{"warm start timeout too long", []string{"--router-warm-start-timeout", "1h"}, []string{"--router-warm-start-timeout: 1h0m0s is out of range"}},
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

// A command line with several problems, of parsing and of range, lists
// them all, one line each, each naming its flag once with two dashes, every
// range stated once and alike.
func TestServeListsEveryProblem(t *testing.T) {
	blockSize0 := "--router-block-size: 0 is out of range (allowed 1..65536)"
	tests := []struct {
		name string
		args []string
		env  map[string]string
		want []string // the problem lines, in order
	}{
		{name: "one problem, one line", args: []string{"--router-block-size", "0"}, want: []string{blockSize0}},
		{name: "ranges of several components",
			args: []string{"--router-mode", "fastest", "--router-block-size", "0", "--router-event-threads", "0", "--router-handlers", "-1", "--etcd-timeout", "0s"},
			want: []string{
				`--router-mode: "fastest" is not a mode (allowed kv, round-robin, random, llmd-precise-prefix, dynamo-current)`,
				"--router-event-threads: 0 is out of range (allowed 1..1024)",
				blockSize0,
				"--etcd-timeout: 0s is out of range (allowed > 0 and ≤ 5m)",
				"--router-handlers: -1 is out of range (allowed 0..1024, 0 means one per CPU)",
			}},
		{name: "values that do not parse, then values out of range",
			args: []string{"--router-temperature", "warm", "--router-block-size", "0", "--shutdown-timeout", "5", "--block-size", "16",
				"--router-kv-events=maybe", "--router-queue-policy", "lifo", "--lease-ttl"},
			want: []string{
				`--router-temperature: "warm" is not a number`,
				`--shutdown-timeout: "5" is not a duration such as 500ms, 10s or 1m30s`,
				"--block-size: no such flag (did you mean --router-block-size?)",
				`--router-kv-events: "maybe" is not true or false`,
				"--lease-ttl: needs a value",
				`--router-queue-policy: "lifo" is not a policy (allowed fcfs, wspt)`,
				blockSize0,
			}},
		{name: "one dash is read as two", args: []string{"-router-block-size", "many"},
			want: []string{`--router-block-size: "many" is not an integer`}},
		{name: "a name checked by several components", args: []string{"--namespace", "a.b", "--component", "x", "--prefill-component", "x"},
			want: []string{
				`--namespace: "a.b" must be 1 to 128 letters, digits, '-' or '_'`,
				`--prefill-component: "x" is also the worker component`,
			}},
		{name: "status server", args: []string{"--system-port", "0", "--system-health-path", "health", "--system-starting-health-status", "maybe"},
			want: []string{
				`--system-health-path: "health" must start with / and name a path`,
				`--system-starting-health-status: "maybe" is not ready or notready`,
			}},
		{name: "logging", args: []string{"--log-level", "loud", "--log-format", "xml"},
			want: []string{`--log-level: "loud" is not debug, info, warn or error`, `--log-format: "xml" is not auto, text or json`}},
		{name: "an environment variable", args: []string{"--router-mode", "fastest"}, env: map[string]string{"DYN_ROUTER_BLOCK_SIZE": "big"},
			want: []string{`--router-block-size: "big" from DYN_ROUTER_BLOCK_SIZE is not an integer`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			var stdout, stderr bytes.Buffer
			code := run(context.Background(), append([]string{"router", "serve"}, tt.args...), &stdout, &stderr)
			if code != 2 {
				t.Fatalf("exit %d, want 2; stderr:\n%s", code, stderr.String())
			}
			got := strings.Split(strings.TrimSuffix(stderr.String(), "\n"), "\n")
			if len(tt.want) == 1 {
				// One problem: one line, after the command's name.
				got[0] = strings.TrimPrefix(got[0], "router: serve: ")
			} else {
				if want := fmt.Sprintf("router: serve: %d problems:", len(tt.want)); got[0] != want {
					t.Errorf("first line %q, want %q", got[0], want)
				}
				got = got[1:]
				for i := range got {
					got[i] = strings.TrimPrefix(got[i], "  ")
				}
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("problems (-want +got):\n%s", diff)
			}
			flags := map[string]bool{}
			for _, line := range got {
				flag := flagOf(line)
				if flag == "" || strings.Count(line, flag+":") != 1 || flags[flag] {
					t.Errorf("line %q does not name its flag once, first, with two dashes, on no other line", line)
				}
				flags[flag] = true
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

	stopServe(t, cancel, done, &stderr)
}

// `router serve --workers-file F --etcd-endpoints ""` runs without etcd:
// it says so once, gets ready with etcd not counted as down, and routes to
// the file's workers, echoing their URL.
func TestServeWithoutEtcd(t *testing.T) {
	ns := testutil.NATS(t)
	file := filepath.Join(t.TempDir(), "workers.json")
	if err := os.WriteFile(file, []byte(`{"workers": [{"worker_id": 26, "component": "backend", "block_size": 128, "url": "http://10.0.0.5:8000"}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var stdout, stderr testutil.Buffer
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{"router", "serve", "--nats-url", ns.URL(), "--etcd-endpoints", "", "--workers-file", file,
			"--system-host", "127.0.0.1", "--system-port", "0", "--http-host", "127.0.0.1", "--http-port", "0", "--log-format", "json"}, &stdout, &stderr)
	}()
	addr := func(msg string) string {
		for _, line := range strings.Split(stderr.String(), "\n") {
			var rec struct{ Msg, Addr string }
			if json.Unmarshal([]byte(line), &rec) == nil && rec.Msg == msg {
				return rec.Addr
			}
		}
		return ""
	}
	testutil.Eventually(t, 30*time.Second, func() bool {
		select {
		case code := <-done:
			t.Fatalf("router exited %d early; stderr:\n%s", code, stderr.String())
		default:
		}
		return addr("status server listening") != "" && addr("http api listening") != ""
	}, "router did not log its addresses; stderr:\n%s", &stderr)
	if n := strings.Count(stderr.String(), "running without etcd"); n != 1 {
		t.Errorf("%d lines say the router runs without etcd, want 1; stderr:\n%s", n, stderr.String())
	}

	client := &http.Client{Timeout: 5 * time.Second}
	defer client.CloseIdleConnections()
	var health struct {
		Status    string            `json:"status"`
		Endpoints map[string]string `json:"endpoints"`
	}
	testutil.Eventually(t, 30*time.Second, func() bool {
		resp, err := client.Get("http://" + addr("status server listening") + "/health")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		return json.NewDecoder(resp.Body).Decode(&health) == nil && resp.StatusCode == 200
	}, "router never became ready: %+v", &health)
	if health.Endpoints["etcd"] != "ready" {
		t.Errorf("/health without etcd: %+v", health)
	}
	resp, err := client.Post("http://"+addr("http api listening")+"/v1/route", "application/json",
		strings.NewReader(`{"token_ids": [1, 2, 3], "book": false}`))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var reply struct {
		WorkerID  uint64 `json:"worker_id"`
		WorkerURL string `json:"worker_url"`
	}
	if err := json.Unmarshal(body, &reply); err != nil || resp.StatusCode != 200 || reply.WorkerID != 26 || reply.WorkerURL != "http://10.0.0.5:8000" {
		t.Errorf("route: %d %s", resp.StatusCode, body)
	}

	stopServe(t, cancel, done, &stderr)
}

// A workers file refused at start stops the router with its message.
func TestServeBadWorkersFile(t *testing.T) {
	ns := testutil.NATS(t)
	file := filepath.Join(t.TempDir(), "workers.json")
	if err := os.WriteFile(file, []byte(`{"workers": [{"worker_id": 1, "component": "backend", "block_size": 128, "kv_events": {"endpoint": "tcp://x", "engine": "vllm"}}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr testutil.Buffer
	code := run(context.Background(), []string{"router", "serve", "--nats-url", ns.URL(), "--etcd-endpoints", "", "--workers-file", file, "--log-format", "json"}, &stdout, &stderr)
	if want := `router: serve: workers file: workers[0].kv_events.endpoint: "tcp://x" has no port`; code != 1 || !strings.Contains(stderr.String(), want) {
		t.Fatalf("exit %d, want 1 and %q; stderr:\n%s", code, want, stderr.String())
	}
}

// stopServe ends a `router serve` run in the test's process and checks that
// it exits 0 within 30 s.
func stopServe(t *testing.T, cancel context.CancelFunc, done <-chan int, stderr fmt.Stringer) {
	t.Helper()
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

// parsedServe parses `router serve args` (with the environment the test
// set) into its configuration, failing the test if it is refused.
func parsedServe(t *testing.T, args []string) serveConfig {
	t.Helper()
	var cfg serveConfig
	app := &cli.App{
		Writer: io.Discard, ErrWriter: io.Discard,
		ExitErrHandler: func(*cli.Context, error) {},
		Commands: []*cli.Command{{Name: "serve", Flags: serveFlags(), Action: func(c *cli.Context) error {
			var err error
			cfg, err = parseServe(c)
			return err
		}}},
	}
	if err := app.Run(append([]string{"router", "serve"}, args...)); err != nil {
		t.Fatal(err)
	}
	return cfg
}

// refusedServe runs `router serve args` and checks that it exits 2 with
// problem among its lines.
func refusedServe(t *testing.T, args []string, problem string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), append([]string{"router", "serve"}, args...), &stdout, &stderr)
	if code != 2 || !strings.Contains(stderr.String(), problem) {
		t.Errorf("exit %d, stderr:\n%s\nwant exit 2 and the line %q", code, stderr.String(), problem)
	}
}
