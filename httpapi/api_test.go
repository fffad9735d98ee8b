package httpapi_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	promtest "github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/kvrouter/router/client"
	"github.com/kvrouter/router/httpapi"
	"github.com/kvrouter/router/internal/testutil"
	"github.com/kvrouter/router/metrics"
	"github.com/kvrouter/router/service"
	"github.com/kvrouter/router/stack"
)

// seq returns n tokens from base, as a JSON array.
func seq(base, n int) string {
	var b strings.Builder
	b.WriteByte('[')
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprint(&b, base+i)
	}
	return b.String() + "]"
}

func ptr[T any](v T) *T { return &v }

// Every endpoint answers 200 over HTTP with the reply NATS gives for the
// same body, byte for byte, and application/json.
func TestEndpointsOverHTTP(t *testing.T) {
	r := start(t)
	r.register(7, "backend", 64)
	r.register(9, "backend", 64)
	r.waitWorkers(2)
	prompt := seq(100, 16) // 4 blocks
	r.store(9, tokensOf(100, 12))

	// What changes nothing answers the same on both transports.
	for _, c := range []struct{ endpoint, body string }{
		{"overlap_scores", `{"token_ids":` + prompt + `}`},
		{"potential_loads", `{"token_ids":` + prompt + `}`},
		{"route", `{"token_ids":` + prompt + `,"book":false}`},
		{"mark_prefill", `{"request_id":"unknown"}`},
		{"mark_free", `{"request_id":"unknown","output_tokens":3}`},
	} {
		t.Run(c.endpoint, func(t *testing.T) {
			code, h, got := r.post(httpapi.PathPrefix+c.endpoint, "application/json", c.body)
			if code != http.StatusOK {
				t.Fatalf("%d %s", code, got)
			}
			if ct := h.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type %q, want application/json", ct)
			}
			if want := r.overNATS(c.endpoint, c.body); got != want {
				t.Errorf("HTTP reply %s\nNATS reply %s", got, want)
			}
		})
	}

	t.Run("route, mark_prefill, mark_free", func(t *testing.T) {
		code, got := r.api("route", `{"request_id":"r-1","token_ids":`+prompt+`}`)
		if want := `{"request_id":"r-1","worker_id":9,"dp_rank":0,"overlap_blocks":3,"num_blocks":4,"worker_type":"aggregated","router_id":1}`; code != http.StatusOK || got != want {
			t.Fatalf("route: %d %s, want 200 %s", code, got, want)
		}
		for _, c := range []struct{ endpoint, body, want string }{
			{"mark_prefill", `{"request_id":"r-1"}`, `{"success":true}`},
			{"mark_free", `{"request_id":"r-1","output_tokens":12}`, `{"success":true}`},
			// Unknown now: still 200, the body says so.
			{"mark_free", `{"request_id":"r-1"}`, `{"success":false}`},
		} {
			if code, got := r.api(c.endpoint, c.body); code != http.StatusOK || got != c.want {
				t.Errorf("%s %s: %d %s, want 200 %s", c.endpoint, c.body, code, got, c.want)
			}
		}
		if n := r.st.Router().Active(); n != 0 {
			t.Errorf("%d requests active after the free", n)
		}
	})

	t.Run("disaggregated", func(t *testing.T) {
		r.register(11, "prefill", 64)
		r.waitWorkers(3)
		code, got := r.api("route", `{"request_id":"d","token_ids":`+prompt+`}`)
		var d client.Decision
		if err := json.Unmarshal([]byte(got), &d); code != http.StatusOK || err != nil {
			t.Fatalf("%d %s (%v)", code, got, err)
		}
		if d.WorkerType != "disaggregated" || d.Prefill == nil || d.Decode == nil || d.WorkerID != 11 || d.Prefill.WorkerID != 11 {
			t.Errorf("decision %s, want disaggregated with prefill worker 11", got)
		}
		if code, got := r.api("mark_free", `{"request_id":"d"}`); code != http.StatusOK || got != `{"success":true}` {
			t.Errorf("mark_free: %d %s", code, got)
		}
	})
	// A mark the router does not know, naming another replica, is
	// forwarded to that replica's own subject, once, and answered as it
	// answers; naming a replica that is gone, it is {"success":false}.
	t.Run("marks forwarded to their replica", func(t *testing.T) {
		owner := testutil.NATSConn(t, r.nc.ConnectedUrl())
		forwarded := make(chan *nats.Msg, 4)
		if _, err := owner.Subscribe(service.ReplicaSubject("dynamo", "router", "mark_free", 2), func(m *nats.Msg) {
			forwarded <- m
			_ = m.Respond([]byte(`{"success":true}`))
		}); err != nil {
			t.Fatal(err)
		}
		if err := owner.Flush(); err != nil {
			t.Fatal(err)
		}
		body := `{"request_id":"elsewhere","router_id":2}`
		if code, got := r.api("mark_free", body); code != http.StatusOK || got != `{"success":true}` {
			t.Errorf("mark_free naming replica 2: %d %s, want 200 {\"success\":true}", code, got)
		}
		select {
		case m := <-forwarded:
			if string(m.Data) != body || m.Header.Get(service.HeaderForwarded) != "1" {
				t.Errorf("replica 2 got %s with %s %q, want the body and 1", m.Data, service.HeaderForwarded, m.Header.Get(service.HeaderForwarded))
			}
		default:
			t.Error("replica 2 got nothing")
		}
		if code, got := r.api("mark_free", `{"request_id":"elsewhere","router_id":3}`); code != http.StatusOK || got != `{"success":false}` {
			t.Errorf("mark_free naming a replica that is gone: %d %s, want 200 {\"success\":false}", code, got)
		}
	})
}

// tokensOf returns n tokens from base.
func tokensOf(base, n int) []uint32 {
	t := make([]uint32, n)
	for i := range t {
		t[i] = uint32(base + i)
	}
	return t
}

// Each error code has its status, and the body NATS gives.
func TestErrorStatuses(t *testing.T) {
	// Worker 7 is busy as soon as it has prefill work (queue threshold 0);
	// the queue holds one request for 300 ms.
	r := start(t, func(c *stack.Config) {
		c.Scheduler.QueueThreshold = ptr(0.0)
		c.Scheduler.QueueCapacity = 1
		c.Scheduler.QueueTimeout = 300 * time.Millisecond
	})
	r.register(7, "backend", 100)
	r.waitWorkers(1)

	for _, c := range []struct {
		name, endpoint, body string
		status               int
		code, message        string
	}{
		{"malformed", "route", `{"token_ids":[1,`, 400, "bad_request", "unexpected end of input"},
		{"not json", "route", `hello`, 400, "bad_request", "malformed JSON"},
		{"no tokens", "route", `{"isl":4}`, 400, "bad_request", "neither token_ids nor block_hashes"},
		{"unknown worker type", "route", `{"token_ids":[1],"worker_type":"gpu"}`, 400, "bad_request", `worker_type: "gpu" is unknown`},
		{"bad mark", "mark_free", `{"request_id":7}`, 400, "bad_request", "request_id: expected a string"},
		{"mark without id", "mark_prefill", `{}`, 400, "bad_request", "request_id: missing or empty"},
		{"bad overlap_scores", "overlap_scores", `{"token_ids":[1],"book":false}`, 400, "bad_request", `unknown field "book"`},
		{"bad potential_loads", "potential_loads", `{}`, 400, "bad_request", "neither token_ids nor block_hashes"},
		{"empty body", "route", ``, 400, "bad_request", "malformed JSON"},
		{"no workers", "route", `{"token_ids":[1],"allowed_worker_ids":[99]}`, 503, "no_workers", "no decode worker"},
	} {
		t.Run(c.name, func(t *testing.T) {
			status, got := r.api(c.endpoint, c.body)
			code, message := errorOf(t, got)
			if status != c.status || code != c.code || !strings.Contains(message, c.message) {
				t.Errorf("%d %s %q, want %d %s containing %q", status, code, message, c.status, c.code, c.message)
			}
			if want := r.overNATS(c.endpoint, c.body); got != want {
				t.Errorf("HTTP reply %s\nNATS reply %s", got, want)
			}
		})
	}

	// The queue's: make worker 7 busy, fill the queue.
	if status, got := r.api("route", `{"request_id":"busy","token_ids":[1,2,3,4]}`); status != http.StatusOK {
		t.Fatalf("route: %d %s", status, got)
	}
	expect := func(status int, reply string, wantStatus int, wantCode, wantMessage string) {
		t.Helper()
		code, message := errorOf(t, reply)
		if status != wantStatus || code != wantCode || !strings.Contains(message, wantMessage) {
			t.Errorf("%d %s %q, want %d %s containing %q", status, code, message, wantStatus, wantCode, wantMessage)
		}
	}
	status, got := r.api("route", `{"token_ids":[5,6,7,8],"do_not_queue":true}`)
	expect(status, got, http.StatusTooManyRequests, "queue_rejected", "asked not to wait")
	type answer struct {
		status int
		body   string
	}
	waiting := make(chan answer, 1)
	go func() {
		code, _, body := r.post("/v1/route", "application/json", `{"request_id":"w","token_ids":[9,10,11,12]}`)
		waiting <- answer{code, body}
	}()
	testutil.Eventually(t, 5*time.Second, func() bool { return r.st.Router().Pending().Requests == 1 }, "a request waiting")
	status, got = r.api("route", `{"token_ids":[13,14,15,16]}`)
	expect(status, got, http.StatusTooManyRequests, "queue_full", "queue full")
	w := <-waiting
	expect(w.status, w.body, http.StatusGatewayTimeout, "timeout", "waited 300ms")
	if n := r.st.Router().Active(); n != 1 {
		t.Errorf("%d requests active after the errors, want 1 (busy)", n)
	}

	// A closing router queues nothing: a route that finds every worker
	// busy gets the best one at once.
	r.st.Router().Close()
	if status, got = r.api("route", `{"token_ids":[1]}`); status != http.StatusOK || !strings.Contains(got, `"worker_id":7,`) {
		t.Errorf("route at a closing router, every worker busy: %d %s, want 200 with worker 7", status, got)
	}
}

func TestOverloadedStatus(t *testing.T) {
	r := start(t, func(c *stack.Config) { c.Scheduler.ActivePrefillTokensThreshold = ptr(3) })
	r.register(7, "backend", 100)
	r.waitWorkers(1)
	if status, got := r.api("route", `{"request_id":"a","token_ids":[1,2,3,4]}`); status != http.StatusOK {
		t.Fatalf("route: %d %s", status, got)
	}
	status, got := r.api("route", `{"token_ids":[5,6,7,8]}`)
	if code, message := errorOf(t, got); status != http.StatusServiceUnavailable || code != "overloaded" {
		t.Errorf("%d %s %q, want 503 overloaded", status, code, message)
	}
}

// What the HTTP layer refuses gets the error body, code bad_request, and the
// status that says why; what it must accept, it accepts.
func TestHTTPRefusals(t *testing.T) {
	r := start(t)
	r.register(7, "backend", 100)
	r.waitWorkers(1)
	query := `{"token_ids":[1,2,3,4],"book":false}`

	request := func(method, path, ctype string, body io.Reader, header http.Header) (int, http.Header, string) {
		t.Helper()
		req, err := http.NewRequest(method, r.base+path, body)
		if err != nil {
			t.Fatal(err)
		}
		for k, v := range header {
			req.Header[k] = v
		}
		if ctype != "" {
			req.Header.Set("Content-Type", ctype)
		}
		return r.do(req)
	}
	refused := func(t *testing.T, status int, h http.Header, body string, want int, message string) {
		t.Helper()
		if status != want {
			t.Fatalf("%d %s, want %d", status, body, want)
		}
		if ct := h.Get("Content-Type"); ct != "application/json" {
			t.Errorf("Content-Type %q, want application/json", ct)
		}
		if code, msg := errorOf(t, body); code != "bad_request" || !strings.Contains(msg, message) {
			t.Errorf("%s %q, want bad_request containing %q", code, msg, message)
		}
	}

	t.Run("404 unknown path", func(t *testing.T) {
		for _, path := range []string{"/", "/v1/", "/v1/route/", "/v1/Route", "/v2/route", "/v1/nope", "/metrics"} {
			status, h, body := request(http.MethodPost, path, "application/json", strings.NewReader(query), nil)
			refused(t, status, h, body, http.StatusNotFound, "no endpoint at "+path)
		}
	})
	t.Run("405 wrong method", func(t *testing.T) {
		for _, m := range []string{http.MethodGet, http.MethodPut, http.MethodDelete, http.MethodPatch, http.MethodOptions} {
			status, h, body := request(m, "/v1/route", "application/json", strings.NewReader(query), nil)
			refused(t, status, h, body, http.StatusMethodNotAllowed, "only POST is served")
			if allow := h.Get("Allow"); allow != "POST" {
				t.Errorf("%s: Allow %q, want POST", m, allow)
			}
		}
		// HEAD: the status and the Allow header, no body.
		status, h, _ := request(http.MethodHead, "/v1/route", "", nil, nil)
		if status != http.StatusMethodNotAllowed || h.Get("Allow") != "POST" {
			t.Errorf("HEAD: %d, Allow %q; want 405, POST", status, h.Get("Allow"))
		}
	})
	t.Run("415 not JSON", func(t *testing.T) {
		for _, c := range []struct {
			name    string
			ctype   string
			header  http.Header
			message string
		}{
			{"text", "text/plain", nil, `Content-Type "text/plain" is not served`},
			{"form", "application/x-www-form-urlencoded", nil, "is not served"},
			{"charset", "application/json; charset=latin1", nil, `charset "latin1" is not served`},
			{"unparsable", "application/", nil, "does not parse"},
			{"two types", "", http.Header{"Content-Type": {"application/json", "text/plain"}}, "2 Content-Type headers"},
			{"compressed", "application/json", http.Header{"Content-Encoding": {"gzip"}}, `Content-Encoding "gzip" is not served`},
		} {
			t.Run(c.name, func(t *testing.T) {
				status, h, body := request(http.MethodPost, "/v1/route", c.ctype, strings.NewReader(query), c.header)
				refused(t, status, h, body, http.StatusUnsupportedMediaType, c.message)
			})
		}
	})
	t.Run("accepted content types", func(t *testing.T) {
		for _, ctype := range []string{"", "application/json", "application/json; charset=utf-8", "Application/JSON; charset=\"UTF-8\"", "application/json; foo=bar"} {
			req, err := http.NewRequest(http.MethodPost, r.base+"/v1/route", strings.NewReader(query))
			if err != nil {
				t.Fatal(err)
			}
			if ctype != "" {
				req.Header.Set("Content-Type", ctype)
			} else if _, ok := req.Header["Content-Type"]; ok {
				t.Fatal("the client set a Content-Type of its own")
			}
			if status, _, body := r.do(req); status != http.StatusOK {
				t.Errorf("Content-Type %q: %d %s, want 200", ctype, status, body)
			}
		}
	})
	t.Run("413 body over the limit", func(t *testing.T) {
		// Exactly the limit is served: a query padded with spaces.
		exact := query[:len(query)-1] + strings.Repeat(" ", service.MaxRequestBytes-len(query)) + "}"
		if status, _, body := request(http.MethodPost, "/v1/route", "application/json", strings.NewReader(exact), nil); status != http.StatusOK {
			t.Errorf("a body of exactly %d bytes: %d %s, want 200", len(exact), status, body)
		}
		over := exact + " "
		// With its length declared: refused before it is read.
		status, h, body := request(http.MethodPost, "/v1/route", "application/json", strings.NewReader(over), nil)
		refused(t, status, h, body, http.StatusRequestEntityTooLarge, fmt.Sprintf("request body of %d bytes (allowed ≤ %d)", len(over), service.MaxRequestBytes))
		// Chunked, no length: refused once the limit is passed.
		status, h, body = request(http.MethodPost, "/v1/route", "application/json", io.MultiReader(strings.NewReader(over)), nil)
		refused(t, status, h, body, http.StatusRequestEntityTooLarge, "request body over")
	})
	t.Run("431 headers over the limit", func(t *testing.T) {
		status, _, _ := request(http.MethodPost, "/v1/route", "application/json", strings.NewReader(query),
			http.Header{"X-Padding": {strings.Repeat("x", httpapi.DefaultMaxHeaderBytes+4096)}})
		if status != http.StatusRequestHeaderFieldsTooLarge {
			t.Errorf("%d, want 431", status)
		}
	})
}

// A bad request, of any kind, leaves the router's state as it was.
func TestBadRequestsChangeNothing(t *testing.T) {
	r := start(t)
	r.register(7, "backend", 100)
	r.register(9, "backend", 100)
	r.waitWorkers(2)
	r.store(9, tokensOf(100, 8))
	if status, got := r.api("route", `{"request_id":"kept","token_ids":`+seq(100, 8)+`}`); status != http.StatusOK {
		t.Fatalf("route: %d %s", status, got)
	}
	state := func() string {
		t.Helper()
		status, loads := r.api("potential_loads", `{"token_ids":`+seq(100, 8)+`}`)
		if status != http.StatusOK {
			t.Fatalf("potential_loads: %d %s", status, loads)
		}
		_, overlaps := r.api("overlap_scores", `{"token_ids":`+seq(100, 8)+`}`)
		return fmt.Sprintf("%s %s active=%d pending=%+v", loads, overlaps, r.st.Router().Active(), r.st.Router().Pending())
	}
	before := state()
	huge := `{"token_ids":[1,2,3,4]` + strings.Repeat(" ", service.MaxRequestBytes) + "}"
	for _, c := range []struct{ method, path, ctype, body string }{
		{"POST", "/v1/route", "application/json", `{"request_id":"kept","token_ids":[1,2,3,4]}`}, // already active
		{"POST", "/v1/route", "application/json", `{"request_id":"x","token_ids":[1,2,3,4],"isl":-1}`},
		{"POST", "/v1/route", "application/json", `{"request_id":"x","token_ids":[1,2,3,4],"allowed_worker_ids":[]}`},
		{"POST", "/v1/route", "application/json", `{"request_id":"x","token_ids":[1,2,3,4],"router_config_override":{"router_temperature":-1}}`},
		{"POST", "/v1/route", "application/json", `{"request_id":"x","token_ids":[1,2,3,4]} {}`},
		{"POST", "/v1/route", "text/plain", `{"request_id":"x","token_ids":[1,2,3,4]}`},
		{"POST", "/v1/route", "application/json", huge},
		{"GET", "/v1/route", "", ""},
		{"POST", "/v1/routes", "application/json", `{"request_id":"x","token_ids":[1,2,3,4]}`},
		{"POST", "/v1/mark_free", "application/json", `{"request_id":"kept","output_tokens":-1}`},
		{"POST", "/v1/mark_free", "application/json", `{"request_id":"kept","extra":1}`},
		{"POST", "/v1/mark_prefill", "application/json", `{"request_id":"kept","output_tokens":1}`},
		{"POST", "/v1/mark_prefill", "text/html", `{"request_id":"kept"}`},
		{"DELETE", "/v1/mark_free", "application/json", `{"request_id":"kept"}`},
		{"POST", "/v1/overlap_scores", "application/json", `{"token_ids":"all"}`},
		{"POST", "/v1/potential_loads", "application/json", `[]`},
	} {
		req, err := http.NewRequest(c.method, r.base+c.path, strings.NewReader(c.body))
		if err != nil {
			t.Fatal(err)
		}
		if c.ctype != "" {
			req.Header.Set("Content-Type", c.ctype)
		}
		if status, _, body := r.do(req); status < 400 {
			t.Errorf("%s %s %.80s: %d %s, want an error", c.method, c.path, c.body, status, body)
		}
		if after := state(); after != before {
			t.Fatalf("%s %s %.80s changed the state:\nbefore %s\nafter  %s", c.method, c.path, c.body, before, after)
		}
	}
}

// A client that sends its headers too slowly is disconnected after the
// header timeout, and one that stops sending its body after the read
// timeout, while other clients are answered meanwhile.
func TestSlowClientsAreCutOff(t *testing.T) {
	const headerTimeout, readTimeout = 300 * time.Millisecond, time.Second
	r := start(t, func(c *stack.Config) {
		c.HTTP.ReadHeaderTimeout = headerTimeout
		c.HTTP.ReadTimeout = readTimeout
	})
	r.register(7, "backend", 100)
	r.waitWorkers(1)
	for _, c := range []struct {
		name    string
		partial string
		timeout time.Duration
	}{
		{"headers", "POST /v1/route HTTP/1.1\r\nHost: router\r\nContent-Type: appl", headerTimeout},
		{"body", "POST /v1/route HTTP/1.1\r\nHost: router\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"token_ids\":[1,", readTimeout},
	} {
		t.Run(c.name, func(t *testing.T) {
			// The server's timeout runs from when it starts reading the
			// accepted connection, which can come before Dial returns
			// here: the clock starts before the dial, no later than the
			// server's.
			sent := time.Now()
			conn, err := net.Dial("tcp", r.st.HTTPAddr())
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			if _, err := io.WriteString(conn, c.partial); err != nil {
				t.Fatal(err)
			}
			// Others are answered while the slow client hangs, each on a
			// connection of its own: a kept-alive one could be one the server
			// is closing, and a POST sent on it is not retried.
			fresh := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 30 * time.Second}
			var wg sync.WaitGroup
			for i := range 20 {
				wg.Go(func() {
					body := fmt.Sprintf(`{"token_ids":[%d,2,3,4],"book":false}`, i)
					resp, err := fresh.Post(r.base+httpapi.PathPrefix+"route", "application/json", strings.NewReader(body))
					if err != nil {
						t.Errorf("route beside a slow client: %v", err)
						return
					}
					reply, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					if resp.StatusCode != http.StatusOK {
						t.Errorf("route beside a slow client: %d %s", resp.StatusCode, reply)
					}
				})
			}
			wg.Wait()
			// The server closes the connection; whatever it says first, the
			// read ends with EOF, well before this deadline.
			if err := conn.SetReadDeadline(time.Now().Add(10 * time.Second)); err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(conn)
			took := time.Since(sent)
			if err != nil {
				t.Fatalf("after %v: %v (read %q), want the server to close the connection", took, err, got)
			}
			if took < c.timeout {
				t.Errorf("closed after %v, before the %v timeout", took, c.timeout)
			}
			t.Logf("closed after %v; the server said %q", took, firstLine(got))
		})
	}
}

// firstLine returns the first line of b.
func firstLine(b []byte) string {
	line, _, _ := bufio.NewReader(bytes.NewReader(b)).ReadLine()
	return string(line)
}

// Two hundred keep-alive clients at once, each routing and freeing in turn,
// are all answered.
func TestManyConnections(t *testing.T) {
	const clients, rounds = 200, 5
	r := start(t)
	r.register(7, "backend", 1<<20)
	r.register(9, "backend", 1<<20)
	r.waitWorkers(2)
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	for c := range clients {
		wg.Go(func() {
			for i := range rounds {
				id := fmt.Sprintf("c%d-%d", c, i)
				status, body := r.api("route", fmt.Sprintf(`{"request_id":%q,"token_ids":[%d,%d,3,4,5,6,7,8]}`, id, c, i))
				if status != http.StatusOK {
					errs <- fmt.Errorf("route %s: %d %s", id, status, body)
					return
				}
				if status, body := r.api("mark_free", fmt.Sprintf(`{"request_id":%q}`, id)); status != http.StatusOK || body != `{"success":true}` {
					errs <- fmt.Errorf("mark_free %s: %d %s", id, status, body)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n := r.st.Router().Active(); n != 0 {
		t.Errorf("%d requests active after every free", n)
	}
	h, err := httpapi.NewMetrics(r.m)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := promtest.ToFloat64(h.Requests.WithLabelValues(metrics.EndpointRoute, "200")), float64(clients*rounds); got != want {
		t.Errorf("http requests_total{route,200} = %v, want %v", got, want)
	}
}

// startBusy starts a router whose one worker (7) is busy with request
// "busy": a route then waits in the queue, for up to a minute.
func startBusy(t *testing.T) *router {
	t.Helper()
	r := start(t, func(c *stack.Config) {
		c.Scheduler.QueueThreshold = ptr(0.0)
		c.Scheduler.QueueTimeout = time.Minute
	})
	r.register(7, "backend", 100)
	r.waitWorkers(1)
	if status, got := r.api("route", `{"request_id":"busy","token_ids":[1,2,3,4]}`); status != http.StatusOK {
		t.Fatalf("route: %d %s", status, got)
	}
	return r
}

// A client that goes away while its route waits in the queue takes the
// request out of the queue: nothing is booked for it.
func TestClientGoneLeavesQueue(t *testing.T) {
	r := startBusy(t)
	ctx, cancel := context.WithCancel(context.Background())
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, r.base+"/v1/route", strings.NewReader(`{"request_id":"gone","token_ids":[5,6,7,8]}`))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		resp, err := r.client.Do(req)
		if err == nil {
			resp.Body.Close()
			err = fmt.Errorf("answered %d", resp.StatusCode)
		}
		done <- err
	}()
	testutil.Eventually(t, 5*time.Second, func() bool { return r.st.Router().Pending().Requests == 1 }, "the request waiting")
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("client: %v, want context.Canceled", err)
	}
	testutil.Eventually(t, 5*time.Second, func() bool { return r.st.Router().Pending().Requests == 0 }, "the request out of the queue")
	// Freeing the busy request would have released it; nothing is booked
	// under its id.
	if status, got := r.api("mark_free", `{"request_id":"busy"}`); status != http.StatusOK || got != `{"success":true}` {
		t.Fatalf("mark_free busy: %d %s", status, got)
	}
	if status, got := r.api("mark_free", `{"request_id":"gone"}`); status != http.StatusOK || got != `{"success":false}` {
		t.Errorf("mark_free gone: %d %s, want {\"success\":false}", status, got)
	}
}

// At shutdown the requests in flight are answered, a route waiting in the
// queue with the best worker as if none were busy, and Run returns.
func TestShutdownAnswersInFlight(t *testing.T) {
	r := startBusy(t)
	type answer struct {
		status int
		body   string
	}
	waiting := make(chan answer, 1)
	go func() {
		code, _, body := r.post("/v1/route", "application/json", `{"token_ids":[5,6,7,8]}`)
		waiting <- answer{code, body}
	}()
	testutil.Eventually(t, 5*time.Second, func() bool { return r.st.Router().Pending().Requests == 1 }, "a request waiting")
	addr := r.st.HTTPAddr()
	r.stop()
	w := <-waiting
	if w.status != http.StatusOK || !strings.Contains(w.body, `"worker_id":7,`) {
		t.Errorf("the waiting route got %d %s, want 200 with worker 7", w.status, w.body)
	}
	if conn, err := net.Dial("tcp", addr); err == nil {
		conn.Close()
		t.Errorf("%s still accepts connections after Run returned", addr)
	}
}

// Requests over HTTP count in Dynamo's endpoint families, as over NATS, and
// in the HTTP families by status.
func TestMetricsCountHTTP(t *testing.T) {
	r := start(t)
	r.register(7, "backend", 100)
	r.waitWorkers(1)
	sm, err := service.NewMetrics(r.m)
	if err != nil {
		t.Fatal(err)
	}
	hm, err := httpapi.NewMetrics(r.m)
	if err != nil {
		t.Fatal(err)
	}
	routes0 := promtest.ToFloat64(sm.Route.Requests)
	r.api("route", `{"token_ids":[1,2,3,4],"book":false}`)
	r.api("route", `{"token_ids":[1,`)
	r.overNATS("route", `{"token_ids":[1,2,3,4],"book":false}`)
	r.post("/v1/route", "text/plain", `{}`)
	r.post("/nowhere", "application/json", `{}`)

	if got := promtest.ToFloat64(sm.Route.Requests) - routes0; got != 3 {
		t.Errorf("dynamo_component_requests_total{route} grew by %v, want 3 (two over HTTP, one over NATS; the 415 never reached the endpoint)", got)
	}
	if got := promtest.ToFloat64(sm.Route.Errors.WithLabelValues("bad_request")); got != 1 {
		t.Errorf("dynamo_component_errors_total{route,bad_request} = %v, want 1", got)
	}
	for _, c := range []struct {
		endpoint, code string
		want           float64
	}{
		{"route", "200", 1}, {"route", "400", 1}, {"route", "415", 1}, {metrics.HTTPEndpointUnknown, "404", 1},
	} {
		if got := promtest.ToFloat64(hm.Requests.WithLabelValues(c.endpoint, c.code)); got != c.want {
			t.Errorf("dynamo_router_http_requests_total{endpoint=%q,code=%q} = %v, want %v", c.endpoint, c.code, got, c.want)
		}
	}
}
