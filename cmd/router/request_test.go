package main

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/kvrouter/router/events"
	"github.com/kvrouter/router/internal/testutil"
	"github.com/kvrouter/router/metrics"
	"github.com/kvrouter/router/scheduler"
	"github.com/kvrouter/router/service"
	"github.com/kvrouter/router/stack"
	"github.com/kvrouter/router/workers"
)

// runRequest runs `router request args...` in-process.
func runRequest(args ...string) (stdout, stderr string, code int) {
	var out, errOut bytes.Buffer
	code = run(context.Background(), append([]string{"router", "request"}, args...), &out, &errOut)
	return out.String(), errOut.String(), code
}

// `router request` against plain NATS responders answering as the router's
// endpoints do (docs/api.md): the exit status and messages for each reply,
// and for no reply at all.
func TestRequestReplies(t *testing.T) {
	ns := testutil.NATS(t)
	nc := testutil.NATSConn(t, ns.URL())
	respond := func(endpoint, reply string) {
		t.Helper()
		if _, err := nc.Subscribe(service.Subject("dynamo", "router", endpoint), func(m *nats.Msg) { _ = m.Respond([]byte(reply)) }); err != nil {
			t.Fatal(err)
		}
	}
	respond("mark_free", `{"success":false}`)
	respond("mark_prefill", `{"success":true}`)
	respond("route", `{"error":{"code":"no_workers","message":"no worker is registered"}}`)
	// A router that never answers.
	if _, err := nc.Subscribe(service.Subject("dynamo", "router", "potential_loads"), func(*nats.Msg) {}); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name       string
		args       []string
		code       int
		stdout     string // the whole of stdout
		stderrHas  string
		stderrNone bool
	}{
		{name: "unknown id", args: []string{"--request-id", "r-9", "mark_free"}, code: 1, stdout: `{"success":false}` + "\n",
			stderrHas: `router: request: mark_free: the router has no request "r-9"`},
		{name: "unknown id in --data", args: []string{"--data", `{"request_id":"r-8"}`, "mark_free"}, code: 1, stdout: `{"success":false}` + "\n",
			stderrHas: `no request "r-8"`},
		{name: "known id", args: []string{"--request-id", "r-1", "mark_prefill"}, code: 0, stdout: `{"success":true}` + "\n", stderrNone: true},
		{name: "error reply", args: []string{"--token-ids", "1,2", "route"}, code: 1,
			stdout:    `{"error":{"code":"no_workers","message":"no worker is registered"}}` + "\n",
			stderrHas: "router: request: the router answered no_workers: no worker is registered"},
		{name: "no router", args: []string{"--namespace", "other", "--token-ids", "1", "overlap_scores"}, code: 1,
			stderrHas: "router: request: no router answered on namespace.other.component.router.overlap_scores: is `router serve` running, with --namespace other?"},
		{name: "no router, another component", args: []string{"--router-component", "r2", "--token-ids", "1", "route"}, code: 1,
			stderrHas: "no router answered on namespace.dynamo.component.r2.route: is `router serve` running, with --namespace dynamo --router-component r2?"},
		{name: "no reply in time", args: []string{"--timeout", "100ms", "--token-ids", "1", "potential_loads"}, code: 1,
			stderrHas: "router: request: no reply on namespace.dynamo.component.router.potential_loads within 100ms (--timeout)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			stdout, stderr, code := runRequest(append([]string{"--nats-url", ns.URL()}, tt.args...)...)
			if code != tt.code {
				t.Errorf("exit %d, want %d; stderr %q", code, tt.code, stderr)
			}
			if stdout != tt.stdout {
				t.Errorf("stdout %q, want %q", stdout, tt.stdout)
			}
			if tt.stderrNone && stderr != "" {
				t.Errorf("stderr %q, want nothing", stderr)
			}
			if !strings.Contains(stderr, tt.stderrHas) || strings.Count(stderr, "\n") > 1 {
				t.Errorf("stderr %q, want one line containing %q", stderr, tt.stderrHas)
			}
		})
	}
}

// Against a real router (the stack `router serve` runs, started here
// directly: two command lines parsed at once race on urfave/cli's global
// help flag): mark_free of an id it never routed exits 1 with the reply on
// stdout, and a router on another namespace is not found.
func TestRequestRealRouter(t *testing.T) {
	ns, etcd := testutil.NATS(t), testutil.Etcd(t)
	m, err := metrics.New(prometheus.NewRegistry(), metrics.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	cfg := stack.Config{RouterID: 1, KVEvents: true, Events: events.DefaultConfig(), Workers: workers.DefaultConfig(),
		Scheduler: scheduler.DefaultConfig(), Service: service.DefaultConfig()}
	st, err := stack.New(cfg, testutil.NATSConn(t, ns.URL()), testutil.EtcdClient(t, etcd.Endpoint()), m, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- st.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("router stack: %v", err)
		}
	}()
	testutil.Eventually(t, 30*time.Second, func() bool {
		_, _, code := runRequest("--nats-url", ns.URL(), "--token-ids", "1", "overlap_scores")
		return code == 0
	}, "the router never answered overlap_scores")

	stdout, stderr, code := runRequest("--nats-url", ns.URL(), "--request-id", "never-routed", "mark_free")
	if code != 1 || stdout != `{"success":false}`+"\n" || !strings.Contains(stderr, `mark_free: the router has no request "never-routed"`) {
		t.Errorf("mark_free of an unknown id: exit %d, stdout %q, stderr %q; want 1, {\"success\":false} and a message", code, stdout, stderr)
	}
	_, stderr, code = runRequest("--nats-url", ns.URL(), "--namespace", "elsewhere", "--request-id", "x", "mark_free")
	if code != 1 || !strings.Contains(stderr, "is `router serve` running, with --namespace elsewhere?") {
		t.Errorf("another namespace: exit %d, stderr %q; want 1 and a hint naming --namespace elsewhere", code, stderr)
	}
}
