package httpapi_test

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kvrouter/router/client"
	"github.com/kvrouter/router/httpapi"
	"github.com/kvrouter/router/indexer"
	"github.com/kvrouter/router/metrics"
	"github.com/kvrouter/router/scheduler"
	"github.com/kvrouter/router/service"
)

// fixed is the HTTP API in front of the service's handler and a scheduler
// with fixed candidates (two decode workers, one prefill worker), without
// NATS or etcd, driven through httptest: the HTTP layer and every
// endpoint's work as they are, with no network in between.
type fixed struct {
	srv *httpapi.Server
	r   *scheduler.Router
}

func fixedServer(t testing.TB, opts ...func(*scheduler.Config, *httpapi.Config)) fixed {
	t.Helper()
	m, err := metrics.New(prometheus.NewRegistry(), metrics.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	cfg := scheduler.DefaultConfig()
	cfg.BlockSize = blockSize
	hc := httpapi.DefaultConfig()
	for _, o := range opts {
		o(&cfg, &hc)
	}
	r, err := scheduler.New(cfg, indexer.NewIndex(indexer.Config{}), nil, m, scheduler.Options{Rand: rand.New(rand.NewPCG(1, 1))})
	if err != nil {
		t.Fatal(err)
	}
	cand := func(id uint64) scheduler.Candidate {
		return scheduler.Candidate{Worker: indexer.Worker{ID: indexer.WorkerID(id)}, TotalKVBlocks: 1000, MaxNumBatchedTokens: 256, OverlapTrusted: true}
	}
	r.SetCandidates([]scheduler.Candidate{cand(7), cand(9)}, []scheduler.Candidate{cand(11)})
	h, err := service.NewHandler(r, m, nil)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := httpapi.New(hc, h, m, nil)
	if err != nil {
		t.Fatal(err)
	}
	return fixed{srv: srv, r: r}
}

// serve answers one request.
func (f fixed) serve(method, path, ctype, body string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	w := httptest.NewRecorder()
	f.srv.ServeHTTP(w, req)
	return w
}

// status returns the status of one request.
func (f fixed) status(method, path, ctype, body string) int {
	return f.serve(method, path, ctype, body).Code
}

// state is what the router would answer about load: every rank's potential
// load for a prompt, the active requests and the queue.
func (f fixed) state(t testing.TB) string {
	t.Helper()
	w := f.serve(http.MethodPost, "/v1/potential_loads", "application/json", `{"token_ids":[1,2,3,4,5,6,7,8]}`)
	if w.Code != http.StatusOK {
		t.Fatalf("potential_loads: %d %s", w.Code, w.Body)
	}
	return fmt.Sprintf("%s active=%d pending=%+v", w.Body, f.r.Active(), f.r.Pending())
}

// FuzzHTTPRoute sends arbitrary bodies with arbitrary content types to
// POST /v1/route: the handler never panics; it answers a status that
// docs/openapi.yaml documents for the path, with a JSON body of the
// documented shape (a decision for 200, an error whose code has that status
// otherwise); a refused request leaves the router's state as it was, and a
// booked one, once freed, does too.
func FuzzHTTPRoute(f *testing.F) {
	for _, seed := range []struct{ ctype, body string }{
		{"application/json", `{"token_ids":[1,2,3,4,5,6,7,8]}`},
		{"application/json", `{"request_id":"r","block_hashes":[1,-2],"worker_type":"decode"}`},
		{"application/json; charset=utf-8", `{"token_ids":[1,2,3,4],"book":false,"allowed_worker_ids":[9]}`},
		{"", `{"token_ids":[],"router_config_override":{"router_temperature":0.5}}`},
		{"application/json", `{"token_ids":[1],"allowed_worker_ids":[5]}`},
		{"application/json", `{"token_ids":[1],"worker_type":"prefill","priority_jump":3}`},
		{"text/plain", `{"token_ids":[1]}`},
		{"application/json; charset=latin1", `{"token_ids":[1]}`},
		{"application/json", `{"token_ids":[1,`},
		{"application/json", `{"token_ids":[1],"token_ids":[2]}`},
		{"application/json", "\xff"},
		{"application/", ""},
	} {
		f.Add(seed.ctype, []byte(seed.body))
	}
	s := loadSpec(f)
	fx := fixedServer(f)
	documented := s.statuses("/v1/route")
	f.Fuzz(func(t *testing.T, ctype string, body []byte) {
		before := fx.state(t)
		req := httptest.NewRequest(http.MethodPost, "/v1/route", strings.NewReader(string(body)))
		// A header value with a newline cannot come over the wire; net/http
		// refuses to send one.
		if ctype != "" && !strings.ContainsAny(ctype, "\r\n\x00") {
			req.Header.Set("Content-Type", ctype)
		}
		w := httptest.NewRecorder()
		fx.srv.ServeHTTP(w, req)
		if !slices.Contains(documented, w.Code) {
			t.Fatalf("status %d is not documented for /v1/route (%v); body %s", w.Code, documented, w.Body)
		}
		if ct := w.Header().Get("Content-Type"); ct != "application/json" {
			t.Errorf("Content-Type %q", ct)
		}
		dec := json.NewDecoder(w.Body)
		dec.DisallowUnknownFields()
		if w.Code != http.StatusOK {
			var e client.ErrorReply
			if err := dec.Decode(&e); err != nil {
				t.Fatalf("%d reply is not an error reply: %v", w.Code, err)
			}
			if want := httpapi.Status(string(e.Error.Code)); want != w.Code && e.Error.Code != client.CodeBadRequest {
				t.Errorf("code %s answered %d, want %d", e.Error.Code, w.Code, want)
			}
			if after := fx.state(t); after != before {
				t.Fatalf("a refused request changed the state:\nbefore %s\nafter  %s", before, after)
			}
			return
		}
		var d client.Decision
		if err := dec.Decode(&d); err != nil {
			t.Fatalf("200 reply is not a decision: %v", err)
		}
		if fx.r.Active() > 0 {
			free, _ := json.Marshal(client.MarkFreeRequest{RequestID: d.RequestID})
			if w := fx.serve(http.MethodPost, "/v1/mark_free", "application/json", string(free)); w.Code != http.StatusOK || w.Body.String() != `{"success":true}` {
				t.Fatalf("freeing %q: %d %s", d.RequestID, w.Code, w.Body)
			}
		}
		if after := fx.state(t); after != before {
			t.Fatalf("a route, freed, changed the state:\nbefore %s\nafter  %s", before, after)
		}
	})
}
