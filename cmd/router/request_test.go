package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/kvrouter/router/events"
	"github.com/kvrouter/router/httpapi"
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

// startRouter runs a real router (the stack `router serve` runs, started
// here directly: two command lines parsed at once race on urfave/cli's
// global help flag) on embedded NATS and etcd, with the HTTP API on a free
// port if http, and returns the NATS URL, the stack, once it answers.
func startRouter(t *testing.T, http bool) (string, *stack.Stack) {
	t.Helper()
	ns, etcd := testutil.NATS(t), testutil.Etcd(t)
	m, err := metrics.New(prometheus.NewRegistry(), metrics.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	cfg := stack.Config{RouterID: 1, KVEvents: true, Events: events.DefaultConfig(), Workers: workers.DefaultConfig(),
		Scheduler: scheduler.DefaultConfig(), Service: service.DefaultConfig()}
	if http {
		hc := httpapi.DefaultConfig()
		hc.Host = "127.0.0.1"
		cfg.HTTP = &hc
	}
	st, err := stack.New(cfg, testutil.NATSConn(t, ns.URL()), testutil.EtcdClient(t, etcd.Endpoint()), m, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- st.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("router stack: %v", err)
		}
	})
	testutil.Eventually(t, 30*time.Second, func() bool {
		_, _, code := runRequest("--nats-url", ns.URL(), "--token-ids", "1", "overlap_scores")
		return code == 0
	}, "the router never answered overlap_scores")
	return ns.URL(), st
}

// Against a real router: mark_free of an id it never routed exits 1 with
// the reply on stdout, and a router on another namespace is not found.
func TestRequestRealRouter(t *testing.T) {
	natsURL, _ := startRouter(t, false)
	stdout, stderr, code := runRequest("--nats-url", natsURL, "--request-id", "never-routed", "mark_free")
	if code != 1 || stdout != `{"success":false}`+"\n" || !strings.Contains(stderr, `mark_free: the router has no request "never-routed"`) {
		t.Errorf("mark_free of an unknown id: exit %d, stdout %q, stderr %q; want 1, {\"success\":false} and a message", code, stdout, stderr)
	}
	_, stderr, code = runRequest("--nats-url", natsURL, "--namespace", "elsewhere", "--request-id", "x", "mark_free")
	if code != 1 || !strings.Contains(stderr, "is `router serve` running, with --namespace elsewhere?") {
		t.Errorf("another namespace: exit %d, stderr %q; want 1 and a hint naming --namespace elsewhere", code, stderr)
	}
	_, stderr, code = runRequest("--nats-url", natsURL, "--namespace", "a.b", "--token-ids", "1", "route")
	if code != 2 || !strings.Contains(stderr, `namespace "a.b"`) {
		t.Errorf("a namespace that is no subject token: exit %d, stderr %q; want 2 naming it", code, stderr)
	}
}

// `router request --http` against the router's own HTTP API: the same
// replies as over NATS, byte for byte, with the same exit statuses and
// messages; refusals of the HTTP layer name the status, print nothing on
// stdout, and exit 1 too.
func TestRequestHTTPRealRouter(t *testing.T) {
	natsURL, st := startRouter(t, true)
	base := "http://" + st.HTTPAddr()
	huge := `{"token_ids":[` + strings.Repeat("1,", 4<<20) + `1]}` // over the 8 MiB limit
	tests := []struct {
		name      string
		args      []string
		base      string // default: the router's
		code      int
		stdoutHas string
		stderrHas string
		sameNATS  bool // the same stdout, stderr and exit status over NATS
	}{
		{name: "overlap_scores", args: []string{"--token-ids", "1,2", "overlap_scores"}, stdoutHas: `{"block_size":128,`, sameNATS: true},
		{name: "potential_loads", args: []string{"--token-ids", "1,2", "potential_loads"}, stdoutHas: `"pending_count":0`, sameNATS: true},
		{name: "no workers, 503", args: []string{"--token-ids", "1,2", "route"}, code: 1, stdoutHas: `{"error":{"code":"no_workers"`,
			stderrHas: "router: request: the router answered no_workers: ", sameNATS: true},
		{name: "unknown id, 200", args: []string{"--request-id", "never-routed", "mark_free"}, code: 1, stdoutHas: `{"success":false}`,
			stderrHas: `router: request: mark_free: the router has no request "never-routed"`, sameNATS: true},
		{name: "bad request, 400", args: []string{"--data", `{"bogus":1}`, "route"}, code: 1, stdoutHas: `{"error":{"code":"bad_request"`,
			stderrHas: `router: request: the router answered bad_request: unknown field "bogus"`, sameNATS: true},
		{name: "no such path, 404", args: []string{"--token-ids", "1", "route"}, base: base + "/nope/", code: 1,
			stderrHas: "router: request: POST " + base + "/nope/v1/route: 404 Not Found: no endpoint at /nope/v1/route"},
		{name: "body too large, 413", args: []string{"--data", huge, "route"}, code: 1,
			stderrHas: "router: request: POST " + base + "/v1/route: 413 Request Entity Too Large: request body of"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := tt.base
			if b == "" {
				b = base
			}
			stdout, stderr, code := runRequest(append([]string{"--http", b}, tt.args...)...)
			if code != tt.code {
				t.Errorf("exit %d, want %d; stderr %q", code, tt.code, stderr)
			}
			if tt.stdoutHas == "" && stdout != "" || !strings.Contains(stdout, tt.stdoutHas) || strings.Count(stdout, "\n") > 1 {
				t.Errorf("stdout %q, want one line containing %q", stdout, tt.stdoutHas)
			}
			if !strings.Contains(stderr, tt.stderrHas) || (tt.stderrHas == "") != (stderr == "") {
				t.Errorf("stderr %q, want %q", stderr, tt.stderrHas)
			}
			if !tt.sameNATS {
				return
			}
			nout, nerr, ncode := runRequest(append([]string{"--nats-url", natsURL}, tt.args...)...)
			if nout != stdout || nerr != stderr || ncode != code {
				t.Errorf("over NATS: exit %d, stdout %q, stderr %q; over HTTP: exit %d, stdout %q, stderr %q", ncode, nout, nerr, code, stdout, stderr)
			}
		})
	}
}

// `router request --http` against every status of the HTTP API's
// contract (docs/api.md): the statuses that carry the router's reply
// print it and exit as over NATS; the HTTP layer's own, and what a proxy
// in between may answer, exit 1 with the status. A stub server answers
// here because the router's server cannot be made to answer 405 or 415 to
// this command, which always POSTs JSON; TestRequestHTTPRealRouter covers
// the real one.
func TestRequestHTTPStatuses(t *testing.T) {
	tests := []struct {
		status    int
		body      string
		code      int
		stdout    bool // the body printed
		stderrHas string
	}{
		{status: 200, body: `{"success":true}`, stdout: true},
		{status: 200, body: `{"success":false}`, code: 1, stdout: true, stderrHas: `mark_free: the router has no request "r-1"`},
		{status: 400, body: `{"error":{"code":"bad_request","message":"m"}}`, code: 1, stdout: true, stderrHas: "the router answered bad_request: m"},
		{status: 503, body: `{"error":{"code":"no_workers","message":"m"}}`, code: 1, stdout: true, stderrHas: "the router answered no_workers: m"},
		{status: 503, body: `{"error":{"code":"overloaded","message":"m"}}`, code: 1, stdout: true, stderrHas: "the router answered overloaded: m"},
		{status: 429, body: `{"error":{"code":"queue_full","message":"m"}}`, code: 1, stdout: true, stderrHas: "the router answered queue_full: m"},
		{status: 429, body: `{"error":{"code":"queue_rejected","message":"m"}}`, code: 1, stdout: true, stderrHas: "the router answered queue_rejected: m"},
		{status: 504, body: `{"error":{"code":"timeout","message":"m"}}`, code: 1, stdout: true, stderrHas: "the router answered timeout: m"},
		{status: 500, body: `{"error":{"code":"internal","message":"m"}}`, code: 1, stdout: true, stderrHas: "the router answered internal: m"},
		{status: 404, body: `{"error":{"code":"bad_request","message":"no endpoint"}}`, code: 1, stderrHas: "/v1/mark_free: 404 Not Found: no endpoint"},
		{status: 405, body: `{"error":{"code":"bad_request","message":"only POST"}}`, code: 1, stderrHas: "405 Method Not Allowed: only POST"},
		{status: 413, body: `{"error":{"code":"bad_request","message":"too large"}}`, code: 1, stderrHas: "413 Request Entity Too Large: too large"},
		{status: 415, body: `{"error":{"code":"bad_request","message":"not JSON"}}`, code: 1, stderrHas: "415 Unsupported Media Type: not JSON"},
		{status: 502, body: `<html>bad gateway</html>`, code: 1, stderrHas: `502 Bad Gateway: "<html>bad gateway</html>"`},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%d %s", tt.status, tt.body), func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				body, _ := io.ReadAll(r.Body)
				if r.Method != http.MethodPost || r.URL.Path != "/v1/mark_free" || r.Header.Get("Content-Type") != "application/json" ||
					string(body) != `{"request_id":"r-1"}` {
					t.Errorf("request %s %s, Content-Type %q, body %s; want POST /v1/mark_free, application/json, the NATS body",
						r.Method, r.URL.Path, r.Header.Get("Content-Type"), body)
				}
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(tt.status)
				_, _ = io.WriteString(w, tt.body)
			}))
			defer srv.Close()
			stdout, stderr, code := runRequest("--http", srv.URL, "--request-id", "r-1", "mark_free")
			if code != tt.code {
				t.Errorf("exit %d, want %d; stderr %q", code, tt.code, stderr)
			}
			if want := map[bool]string{true: tt.body + "\n"}[tt.stdout]; stdout != want {
				t.Errorf("stdout %q, want %q", stdout, want)
			}
			if !strings.Contains(stderr, tt.stderrHas) || (tt.stderrHas == "") != (stderr == "") {
				t.Errorf("stderr %q, want %q", stderr, tt.stderrHas)
			}
		})
	}
}

// `router request --http`: a server that does not answer in time, one
// that does not listen, and a URL that is none.
func TestRequestHTTPFailures(t *testing.T) {
	// The slow server answers only when the test ends: net/http may not
	// notice a client that went away (when it leaves before its body was
	// read), so the handler cannot wait for its context alone, or Close
	// would wait for it forever.
	release := make(chan struct{})
	slow := httptest.NewServer(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		select {
		case <-r.Context().Done():
		case <-release:
		}
	}))
	defer slow.Close()
	defer close(release)
	closed := httptest.NewServer(http.NotFoundHandler())
	closed.Close()
	tests := []struct {
		name      string
		args      []string
		code      int
		stderrHas string
	}{
		{name: "no reply in time", args: []string{"--http", slow.URL, "--timeout", "100ms", "--token-ids", "1", "route"}, code: 1,
			stderrHas: "router: request: no reply from " + slow.URL + "/v1/route within 100ms (--timeout)"},
		{name: "nothing listening", args: []string{"--http", closed.URL, "--token-ids", "1", "route"}, code: 1,
			stderrHas: "router: request: cannot reach the router's HTTP API at " + closed.URL + "/v1/route (--http): "},
		{name: "not a URL", args: []string{"--http", "localhost:8000", "--token-ids", "1", "route"}, code: 2,
			stderrHas: `router: request: --http: "localhost:8000" is not an http:// or https:// URL`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			stdout, stderr, code := runRequest(tt.args...)
			if code != tt.code || stdout != "" || !strings.Contains(stderr, tt.stderrHas) {
				t.Errorf("exit %d, stdout %q, stderr %q; want %d, nothing, %q", code, stdout, stderr, tt.code, tt.stderrHas)
			}
		})
	}
}
