package service

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/kvrouter/router/indexer"
	"github.com/kvrouter/router/metrics"
	"github.com/kvrouter/router/scheduler"
)

// ErrUnknownEndpoint means Handler.Serve was asked for an endpoint the
// router does not serve.
var ErrUnknownEndpoint = errors.New("unknown endpoint")

// Endpoints returns the names of the router's endpoints, in the order of
// docs/api.md §3: the last element of their NATS subjects and of their
// HTTP paths, and the values of dynamo_endpoint.
func Endpoints() []string {
	return []string{
		metrics.EndpointRoute, metrics.EndpointMarkPrefill, metrics.EndpointMarkFree,
		metrics.EndpointOverlapScores, metrics.EndpointPotentialLoads,
	}
}

// Sender delivers one reply of an endpoint to whoever asked. The Handler
// calls Send exactly once per request, with the reply's JSON and its error
// code ("" when the reply is not an error, else one of the scheduler.Code*
// codes); reply is valid only during the call. Send returns an error when
// the reply could not be delivered, which the endpoint families count as
// publish_response. For a route request that waits in the scheduler's
// queue and was handed over asynchronously (the NATS transport), Send runs
// on the goroutine that releases the request, so it must not block for
// long.
type Sender interface {
	Send(reply []byte, code string) error
}

// Handler answers the router's endpoints whatever carries them: it decodes
// a request's JSON body, asks the scheduler and encodes the reply exactly as
// docs/api.md §3 shows it, and records Dynamo's work-handler families of the
// endpoint. The NATS transport (Service) and the HTTP API (package httpapi)
// both answer through it, so a body gets the same reply, byte for byte, on
// either. Safe for concurrent use.
type Handler struct {
	r *scheduler.Router
	// urls gives the workers' URLs for route replies; nil gives none.
	urls WorkerURLs
	m    *Metrics
	log  *slog.Logger
	// routerID is the replica's id, the router_id of its route replies (0:
	// none).
	routerID uint64
	// fwd forwards marks that name another replica; nil forwards nothing.
	fwd *forwarder

	requests sync.Pool // *request
	buffers  sync.Pool // *[]byte
}

// WorkerURLs tells route replies where a worker serves (their worker_url,
// docs/api.md §3). WorkerURL returns "" for a worker whose URL is unknown;
// it is called on the routing path, concurrently, and must not block.
// *workers.Registry implements it.
type WorkerURLs interface {
	WorkerURL(id indexer.WorkerID) string
}

// NewHandler returns a handler of r's endpoints that records their
// families (Metrics) in m. It starts nothing. Its route replies carry no
// router_id and no worker_url, and it forwards no mark: the Service's
// handler (Service.Handler) does all three.
func NewHandler(r *scheduler.Router, m *metrics.Router, log *slog.Logger) (*Handler, error) {
	return newHandler(r, nil, m, log, 0, nil)
}

// newHandler returns a handler of replica routerID whose route replies
// carry the URLs of urls (nil: none) and that forwards marks with fwd
// (nil: none).
func newHandler(r *scheduler.Router, urls WorkerURLs, m *metrics.Router, log *slog.Logger, routerID uint64, fwd *forwarder) (*Handler, error) {
	if r == nil || m == nil {
		return nil, errors.New("router endpoints: nil router or metrics")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	sm, err := NewMetrics(m)
	if err != nil {
		return nil, fmt.Errorf("router endpoints: %w", err)
	}
	h := &Handler{r: r, urls: urls, m: sm, log: log, routerID: routerID, fwd: fwd}
	h.requests.New = func() any {
		req := &request{}
		req.reply.done = req.answer
		return req
	}
	h.buffers.New = func() any { b := make([]byte, 0, 512); return &b }
	return h, nil
}

// Serve answers one request of the endpoint named endpoint (one of
// Endpoints) whose JSON is body, and returns once to.Send has returned. A
// route request that must wait in the scheduler's queue blocks Serve until
// the queue releases it, until its queue timeout, until the router closes,
// or until ctx ends: then the request leaves the queue unrouted and is
// answered with the internal code. The other endpoints never wait and
// ignore ctx, but for a mark forwarded to the replica it names (see
// forward.go), which waits for that replica's answer at most
// ForwardTimeout, or until ctx ends. body is not kept after Serve returns.
// An unknown endpoint is ErrUnknownEndpoint, and nothing is sent.
func (h *Handler) Serve(ctx context.Context, endpoint string, body []byte, to Sender) error {
	switch endpoint {
	case metrics.EndpointRoute:
		h.route(ctx, body, to)
	case metrics.EndpointMarkPrefill:
		h.mark(ctx, h.m.MarkPrefill, false, body, to, false, nil)
	case metrics.EndpointMarkFree:
		h.mark(ctx, h.m.MarkFree, true, body, to, false, nil)
	case metrics.EndpointOverlapScores:
		h.overlapScores(body, to)
	case metrics.EndpointPotentialLoads:
		h.potentialLoads(body, to)
	default:
		return fmt.Errorf("%w: %q", ErrUnknownEndpoint, endpoint)
	}
	return nil
}

// respond sends body as the reply and records the request in the
// endpoint's metrics; code is the reply's error code, or empty.
func (h *Handler) respond(ep *Endpoint, to Sender, start time.Time, size int, body []byte, code string) {
	errType := code
	if err := to.Send(body, code); err != nil {
		errType = metrics.ErrorTypePublishResponse
		h.log.Debug("cannot reply", "endpoint", ep.Name, "error", err)
	}
	ep.Observe(time.Since(start), size, len(body), errType)
	ep.Inflight.Dec()
}

// fail replies with an error and counts a bad request by its reason.
func (h *Handler) fail(ep *Endpoint, to Sender, start time.Time, size int, err error) {
	code := scheduler.Code(err)
	var re *requestError
	if errors.As(err, &re) {
		code = scheduler.CodeBadRequest
	}
	if code == scheduler.CodeBadRequest {
		ep.BadRequests.WithLabelValues(reasonOf(err)).Inc()
	}
	b := h.buffer()
	*b = AppendError((*b)[:0], code, err.Error())
	h.respond(ep, to, start, size, *b, code)
	h.buffers.Put(b)
}

func (h *Handler) buffer() *[]byte { return h.buffers.Get().(*[]byte) }

// route answers a route request, waiting in the queue if it must
// (scheduler.Router.Route).
func (h *Handler) route(ctx context.Context, body []byte, to Sender) {
	start := time.Now()
	req, ok := h.decodeRoute(body, to, start)
	if !ok {
		return
	}
	defer h.requests.Put(req)
	d, err := h.r.Route(ctx, &req.sched)
	h.decided(to, start, len(body), d, err)
}

// decided answers a route request of size bytes, arrived at start, with
// the scheduler's decision or error.
func (h *Handler) decided(to Sender, start time.Time, size int, d scheduler.Decision, err error) {
	ep := h.m.Route
	if err != nil {
		h.fail(ep, to, start, size, err)
		return
	}
	b := h.buffer()
	*b = appendDecision((*b)[:0], d, h.routerID, h.urls)
	h.respond(ep, to, start, size, *b, "")
	h.buffers.Put(b)
}

// submit answers a route request without waiting for it: now, or, when it
// waits in the queue, from the goroutine that releases it
// (scheduler.Router.Submit). pending counts the request from its hand-over
// to the scheduler until it is answered, so that the caller can wait for
// every answer at shutdown.
func (h *Handler) submit(body []byte, to Sender, pending *sync.WaitGroup) {
	start := time.Now()
	req, ok := h.decodeRoute(body, to, start)
	if !ok {
		return
	}
	pending.Add(1)
	req.reply.h, req.reply.to, req.reply.start, req.reply.size, req.reply.pending = h, to, start, len(body), pending
	h.r.Submit(&req.sched, req.reply.done)
}

// decodeRoute counts a route request in flight and decodes it into a
// pooled request, which the caller returns to the pool. A request that
// does not decode is answered here, and ok is false.
func (h *Handler) decodeRoute(body []byte, to Sender, start time.Time) (req *request, ok bool) {
	h.m.Route.Inflight.Inc()
	req = h.requests.Get().(*request)
	if err := decodeRequest(body, req, routeFields, h.r.Config().BlockSize); err != nil {
		h.requests.Put(req)
		h.fail(h.m.Route, to, start, len(body), err)
		return nil, false
	}
	return req, true
}

// answer replies to a submitted route request with its decision; the
// scheduler calls it, once.
func (r *request) answer(d scheduler.Decision, err error) {
	rp := r.reply
	r.reply.to, r.reply.pending = nil, nil
	h := rp.h
	h.requests.Put(r)
	defer rp.pending.Done()
	h.decided(rp.to, rp.start, rp.size, d, err)
}

// mark answers mark_prefill (free false) or mark_free. A mark of an id
// this replica does not know, naming another replica by router_id, is
// forwarded there once (forward.go), unless it was forwarded here
// (forwarded): with pending set (the NATS transport) on a goroutine that
// pending counts, else before mark returns. A mark nobody knew is counted
// and logged (unknown).
func (h *Handler) mark(ctx context.Context, ep *Endpoint, free bool, body []byte, to Sender, forwarded bool, pending *sync.WaitGroup) {
	start := time.Now()
	ep.Inflight.Inc()
	m, err := decodeMark(body, free)
	if err != nil {
		h.fail(ep, to, start, len(body), err)
		return
	}
	var ok bool
	if free {
		ok = h.r.Free(m.id, m.outputTokens)
	} else {
		ok = h.r.MarkPrefill(m.id)
	}
	if !ok && !forwarded {
		if h.fwd.owns(m.routerID, h.routerID) {
			h.forwardMark(ctx, ep, m, body, to, start, pending)
			return
		}
		h.unknown(ep, m, "")
	}
	h.answerMark(ep, to, start, len(body), ok)
}

// answerMark sends a mark's reply and records it.
func (h *Handler) answerMark(ep *Endpoint, to Sender, start time.Time, size int, ok bool) {
	b := h.buffer()
	*b = appendSuccess((*b)[:0], ok)
	h.respond(ep, to, start, size, *b, "")
	h.buffers.Put(b)
}

// unknown counts and logs a mark of a request nobody knew; why, when not
// empty, says what forwarding it found.
func (h *Handler) unknown(ep *Endpoint, m markRequest, why string) {
	ep.UnknownMarks.Inc()
	if h.log.Enabled(context.Background(), slog.LevelDebug) {
		args := []any{"endpoint", ep.Name, "request_id", m.id, "router_id", m.routerID}
		if why != "" {
			args = append(args, "forwarded", why)
		}
		h.log.Debug("mark of an unknown request", args...)
	}
}

// overlapScores answers overlap_scores.
func (h *Handler) overlapScores(body []byte, to Sender) {
	h.answerPrompt(h.m.OverlapScores, body, to, func(dst []byte, req *scheduler.Request) ([]byte, error) {
		n, scores, err := h.r.OverlapScores(req)
		if err != nil {
			return dst, err
		}
		return appendOverlaps(dst, h.r.Config().BlockSize, n, scores, h.r.Disaggregated()), nil
	})
}

// potentialLoads answers potential_loads.
func (h *Handler) potentialLoads(body []byte, to Sender) {
	h.answerPrompt(h.m.PotentialLoads, body, to, func(dst []byte, req *scheduler.Request) ([]byte, error) {
		loads, pending, err := h.r.PotentialLoads(req)
		if err != nil {
			return dst, err
		}
		return appendLoads(dst, loads, pending), nil
	})
}

// answerPrompt serves an endpoint that reads a prompt and changes nothing:
// decode, let answer append the reply to a pooled buffer, respond.
func (h *Handler) answerPrompt(ep *Endpoint, body []byte, to Sender, answer func(dst []byte, req *scheduler.Request) ([]byte, error)) {
	start := time.Now()
	ep.Inflight.Inc()
	req := h.requests.Get().(*request)
	defer h.requests.Put(req)
	if err := decodeRequest(body, req, promptFields, h.r.Config().BlockSize); err != nil {
		h.fail(ep, to, start, len(body), err)
		return
	}
	b := h.buffer()
	defer h.buffers.Put(b)
	out, err := answer((*b)[:0], &req.sched)
	if err != nil {
		h.fail(ep, to, start, len(body), err)
		return
	}
	*b = out
	h.respond(ep, to, start, len(body), *b, "")
}
