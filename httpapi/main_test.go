package httpapi_test

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/kvrouter/router/client"
	"github.com/kvrouter/router/httpapi"
	"github.com/kvrouter/router/indexer"
	"github.com/kvrouter/router/internal/stacktest"
	"github.com/kvrouter/router/internal/testutil"
	"github.com/kvrouter/router/metrics"
	"github.com/kvrouter/router/service"
	"github.com/kvrouter/router/stack"
)

func TestMain(m *testing.M) {
	testutil.VerifyTestMain(m)
}

// blockSize keeps prompts short.
const blockSize = 4

// router is a whole router built by stack.New, HTTP API on, on embedded
// NATS and etcd, with clients that play the workers and the frontend.
type router struct {
	t      testing.TB
	st     *stacktest.Router
	m      *metrics.Router
	nc     *nats.Conn // NATS requests to compare
	kv     *stacktest.KVEvents
	etcd   *clientv3.Client
	base   string // http://host:port
	client *http.Client

	mu   sync.Mutex
	seen map[string]map[int]bool // path → statuses answered
}

// start builds and runs a router; opts change its configuration. When the
// test ends it stops the router and checks that every status it answered
// is documented in docs/openapi.yaml for its path.
func start(t testing.TB, opts ...func(*stack.Config)) *router {
	t.Helper()
	ns := testutil.NATS(t)
	es := testutil.Etcd(t)
	r := &router{t: t, nc: testutil.NATSConn(t, ns.URL()), etcd: testutil.EtcdClient(t, es.Endpoint()), seen: map[string]map[int]bool{}}
	r.kv = stacktest.NewKVEvents(t, r.nc, blockSize)
	var err error
	if r.m, err = metrics.New(prometheus.NewRegistry(), metrics.Config{Namespace: "dynamo", Component: "router", RouterID: 1}); err != nil {
		t.Fatal(err)
	}
	cfg := stacktest.Config(1, blockSize)
	cfg.Workers.EtcdTimeout, cfg.Workers.EtcdProbeInterval = 2*time.Second, 200*time.Millisecond
	hc := httpapi.DefaultConfig()
	hc.Host = "127.0.0.1"
	cfg.HTTP = &hc
	for _, o := range opts {
		o(&cfg)
	}
	r.st = stacktest.Start(t, cfg, ns.URL(), es.Endpoint(), r.m, nil)
	r.base = "http://" + r.st.HTTPAddr()
	transport := &http.Transport{MaxIdleConns: 512, MaxIdleConnsPerHost: 512}
	r.client = &http.Client{Transport: transport, Timeout: 30 * time.Second}
	t.Cleanup(func() {
		r.stop()
		transport.CloseIdleConnections()
		r.checkDocumented()
	})
	if code, _, body := r.post("/v1/overlap_scores", "application/json", `{"token_ids":[]}`); code != http.StatusOK {
		t.Fatalf("overlap_scores over HTTP: %d %s", code, body)
	}
	return r
}

// stop ends the router and waits for Run; idempotent.
func (r *router) stop() { r.st.Stop() }

// checkDocumented fails the test for each status answered on a path that
// docs/openapi.yaml does not document for it.
func (r *router) checkDocumented() {
	spec := loadSpec(r.t)
	r.mu.Lock()
	defer r.mu.Unlock()
	for path, codes := range r.seen {
		for code := range codes {
			if !spec.documents(path, code) {
				r.t.Errorf("%s answered %d, which docs/openapi.yaml does not document", path, code)
			}
		}
	}
}

// do sends req and returns the status, headers and body of the reply.
func (r *router) do(req *http.Request) (int, http.Header, string) {
	r.t.Helper()
	resp, err := r.client.Do(req)
	if err != nil {
		r.t.Fatalf("%s %s: %v", req.Method, req.URL.Path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		r.t.Fatalf("%s %s: reading the reply: %v", req.Method, req.URL.Path, err)
	}
	r.record(req.URL.Path, resp.StatusCode)
	return resp.StatusCode, resp.Header, string(b)
}

// record notes that path answered code.
func (r *router) record(path string, code int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.seen[path] == nil {
		r.seen[path] = map[int]bool{}
	}
	r.seen[path][code] = true
}

// post POSTs body to path with the Content-Type ctype (none when empty).
func (r *router) post(path, ctype, body string) (int, http.Header, string) {
	r.t.Helper()
	req, err := http.NewRequest(http.MethodPost, r.base+path, strings.NewReader(body))
	if err != nil {
		r.t.Fatal(err)
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	return r.do(req)
}

// api POSTs a JSON body to an endpoint.
func (r *router) api(endpoint, body string) (int, string) {
	r.t.Helper()
	code, _, reply := r.post(httpapi.PathPrefix+endpoint, "application/json", body)
	return code, reply
}

// overNATS sends body to endpoint on NATS and returns the reply.
func (r *router) overNATS(endpoint, body string) string {
	r.t.Helper()
	msg, err := r.nc.Request(service.Subject("dynamo", "router", endpoint), []byte(body), 10*time.Second)
	if err != nil {
		r.t.Fatalf("%s over NATS: %v", endpoint, err)
	}
	return string(msg.Data)
}

// register puts worker id's instance and card under component in etcd
// (lease-less), with maxBatched tokens per forward pass.
func (r *router) register(id uint64, component string, maxBatched int) {
	r.t.Helper()
	stacktest.Register(r.t, r.etcd, testutil.WorkerRecord{Namespace: "dynamo", Component: component, ID: id, BlockSize: blockSize, TotalKVBlocks: 1000, MaxNumSeqs: 256, MaxBatchedTokens: maxBatched})
}

// waitWorkers waits until the registry lists n workers.
func (r *router) waitWorkers(n int) {
	r.t.Helper()
	testutil.Eventually(r.t, 10*time.Second, func() bool { return r.st.Registry().Snapshot().Len() == n }, "%d workers registered", n)
}

// store publishes the KV event that decode worker id stores the full
// blocks of toks, and waits until the index holds them.
func (r *router) store(id uint64, toks []uint32) {
	r.t.Helper()
	rank := indexer.Worker{ID: indexer.WorkerID(id)}
	before := r.st.Index().Size(rank)
	n := r.kv.Stored("dynamo", id, toks)
	testutil.Eventually(r.t, 10*time.Second, func() bool { return r.st.Index().Size(rank) >= before+n }, "blocks of worker %d indexed", id)
}

// errorOf returns the code and message of an error reply, or fails.
func errorOf(t testing.TB, reply string) (code, message string) {
	t.Helper()
	var e client.ErrorReply
	dec := json.NewDecoder(strings.NewReader(reply))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&e); err != nil || e.Error.Code == "" {
		t.Fatalf("reply %s is not an error reply (%v)", reply, err)
	}
	return string(e.Error.Code), e.Error.Message
}
