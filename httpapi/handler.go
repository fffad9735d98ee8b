package httpapi

import (
	"bytes"
	"errors"
	"fmt"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/kvrouter/router/metrics"
	"github.com/kvrouter/router/scheduler"
	"github.com/kvrouter/router/service"
)

// Status returns the HTTP status of a reply whose error code is code (""
// for a reply that is not an error, a mark's {"success":false} included):
// the contract of docs/api.md §7, which clients rely on.
func Status(code string) int {
	switch code {
	case "":
		return http.StatusOK
	case scheduler.CodeBadRequest:
		return http.StatusBadRequest
	case scheduler.CodeNoWorkers, scheduler.CodeOverloaded:
		return http.StatusServiceUnavailable
	case scheduler.CodeQueueFull, scheduler.CodeQueueRejected:
		return http.StatusTooManyRequests
	case scheduler.CodeTimeout:
		return http.StatusGatewayTimeout
	}
	return http.StatusInternalServerError
}

// maxPooledBody is the largest body buffer kept for the next request: a
// rare 8 MiB prompt does not pin 8 MiB per pooled buffer.
const maxPooledBody = 1 << 20

// ServeHTTP answers one request: POST /v1/{endpoint} with a JSON body gets
// the endpoint's reply with the status of its code (Status); anything else
// is refused with the error body of every endpoint, code bad_request, and
// the status that says why: 404 for a path that is no endpoint, 405 (with
// Allow: POST) for another method, 415 for a body declared as something
// other than JSON, 413 for a body over service.MaxRequestBytes, 400 for a
// body that could not be read. The body is read whole before the endpoint
// sees it; a missing Content-Type is taken as JSON.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	endpoint, ok := s.paths[r.URL.Path]
	if !ok {
		s.refuse(w, metrics.HTTPEndpointUnknown, start, http.StatusNotFound,
			fmt.Sprintf("no endpoint at %s: the endpoints are POST %s{%s}", clip(r.URL.Path), PathPrefix, strings.Join(service.Endpoints(), ",")))
		return
	}
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		s.refuse(w, endpoint, start, http.StatusMethodNotAllowed, fmt.Sprintf("%s %s: only POST is served", clip(r.Method), r.URL.Path))
		return
	}
	if problem := contentProblem(r.Header); problem != "" {
		s.refuse(w, endpoint, start, http.StatusUnsupportedMediaType, problem)
		return
	}
	if r.ContentLength > service.MaxRequestBytes {
		s.refuse(w, endpoint, start, http.StatusRequestEntityTooLarge, tooLarge(r.ContentLength))
		return
	}
	body := s.body(r.ContentLength)
	defer s.putBody(body)
	if _, err := body.ReadFrom(http.MaxBytesReader(w, r.Body, service.MaxRequestBytes)); err != nil {
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			s.refuse(w, endpoint, start, http.StatusRequestEntityTooLarge, tooLarge(-1))
			return
		}
		s.refuse(w, endpoint, start, http.StatusBadRequest, "reading the request body: "+err.Error())
		return
	}
	rep := reply{w: w}
	if err := s.h.Serve(r.Context(), endpoint, body.Bytes(), &rep); err != nil {
		// Cannot happen: the paths are the service's endpoints.
		s.answerError(w, endpoint, start, http.StatusInternalServerError, scheduler.CodeInternal, err.Error())
		return
	}
	s.m.Observe(endpoint, rep.status, time.Since(start))
}

// reply is an HTTP request as the service.Handler's Sender: the reply's code
// sets the status.
type reply struct {
	w      http.ResponseWriter
	status int
}

// Send writes the reply with the status of its code.
func (r *reply) Send(body []byte, code string) error {
	r.status = Status(code)
	return writeJSON(r.w, r.status, body)
}

// writeJSON writes a JSON reply.
func writeJSON(w http.ResponseWriter, status int, body []byte) error {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	_, err := w.Write(body)
	return err
}

// refuse answers a request the HTTP layer turns away before any endpoint
// sees it: code bad_request, the status says why.
func (s *Server) refuse(w http.ResponseWriter, endpoint string, start time.Time, status int, message string) {
	s.answerError(w, endpoint, start, status, scheduler.CodeBadRequest, message)
}

// answerError writes an error reply and records it.
func (s *Server) answerError(w http.ResponseWriter, endpoint string, start time.Time, status int, code, message string) {
	if err := writeJSON(w, status, service.AppendError(nil, code, message)); err != nil {
		s.log.Debug("http api: cannot reply", "endpoint", endpoint, "status", status, "error", err)
	}
	s.m.Observe(endpoint, status, time.Since(start))
}

// contentProblem says why the headers do not declare a JSON body, or ""
// when they do. A missing Content-Type is accepted: the body is JSON or it
// is a bad request, so refusing it would only turn away clients that send
// no type (a shell script, a load generator) and tell them nothing the
// decoder would not. A type that says something else is a client's mistake
// worth naming (curl -d sends application/x-www-form-urlencoded unless
// told otherwise). A charset may be given and must be UTF-8, the only
// encoding of JSON between systems (RFC 8259); other parameters are
// ignored. A Content-Encoding other than identity is refused too: the
// router does not decompress.
func contentProblem(h http.Header) string {
	if ce := h.Values("Content-Encoding"); len(ce) > 0 && !(len(ce) == 1 && strings.EqualFold(strings.TrimSpace(ce[0]), "identity")) {
		return fmt.Sprintf("Content-Encoding %q is not served: send the JSON uncompressed", clip(strings.Join(ce, ", ")))
	}
	types := h.Values("Content-Type")
	switch len(types) {
	case 0:
		return ""
	case 1:
	default:
		return fmt.Sprintf("%d Content-Type headers: send one, application/json", len(types))
	}
	mt, params, err := mime.ParseMediaType(types[0])
	if err != nil {
		return fmt.Sprintf("Content-Type %q does not parse (%v): send application/json", clip(types[0]), err)
	}
	if mt != "application/json" {
		return fmt.Sprintf("Content-Type %q is not served: send application/json", clip(types[0]))
	}
	if cs, ok := params["charset"]; ok && !strings.EqualFold(cs, "utf-8") {
		return fmt.Sprintf("charset %q is not served: JSON is UTF-8", clip(cs))
	}
	return ""
}

// tooLarge is the message of a 413; n is the declared length, or −1 when
// the body ran over while being read.
func tooLarge(n int64) string {
	if n < 0 {
		return fmt.Sprintf("request body over %d bytes (allowed ≤ %d)", service.MaxRequestBytes, service.MaxRequestBytes)
	}
	return fmt.Sprintf("request body of %d bytes (allowed ≤ %d)", n, service.MaxRequestBytes)
}

// clip shortens what a client sent before a message quotes it.
func clip(s string) string {
	const limit = 128
	if len(s) <= limit {
		return s
	}
	return s[:limit] + "..."
}

// body returns an empty pooled buffer with room for n bytes, when n is
// known.
func (s *Server) body(n int64) *bytes.Buffer {
	b, _ := s.bodies.Get().(*bytes.Buffer)
	if b == nil {
		b = new(bytes.Buffer)
	}
	if n > 0 {
		b.Grow(int(n) + bytes.MinRead) // ReadFrom wants MinRead spare to see EOF without growing
	}
	return b
}

// putBody returns a buffer to the pool, unless it is large.
func (s *Server) putBody(b *bytes.Buffer) {
	if b.Cap() > maxPooledBody {
		return
	}
	b.Reset()
	s.bodies.Put(b)
}
