package client

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
)

// Defaults of the options.
const (
	// DefaultNamespace is Dynamo's default namespace.
	DefaultNamespace = "dynamo"
	// DefaultRouterComponent is the router's default component.
	DefaultRouterComponent = "router"
	// DefaultTimeout bounds each call. It is longer than the router's
	// default queue timeout (10 s) on purpose: a route that waits in the
	// router's queue then gets the router's answer, a decision or
	// ErrTimeout, instead of giving up while the router may still book it.
	DefaultTimeout = 30 * time.Second
)

// Client sends requests to the router's endpoints over NATS. It is safe
// for concurrent use.
type Client struct {
	nc        *nats.Conn
	namespace string
	component string
	timeout   time.Duration
	// routeAttempt is WithRouteRetry's; 0 sends a route once (but after no
	// responders).
	routeAttempt time.Duration
	// closed is closed by NATS when a connection Dial made is closed; nil
	// for a connection the caller owns.
	closed    chan struct{}
	closeOnce sync.Once
	// onRetry, when set, is told of each attempt that is sent again
	// (tests).
	onRetry func(attempt int, err error)
}

// Option configures a Client.
type Option func(*options)

type options struct {
	namespace    string
	component    string
	timeout      time.Duration
	routeAttempt time.Duration
}

// WithNamespace sets the Dynamo namespace (default DefaultNamespace): the
// router's --namespace.
func WithNamespace(ns string) Option { return func(o *options) { o.namespace = ns } }

// WithRouterComponent sets the router's component (default
// DefaultRouterComponent): the router's --router-component.
func WithRouterComponent(component string) Option {
	return func(o *options) { o.component = component }
}

// WithTimeout sets how long one call may take, its retries included
// (default DefaultTimeout); a context's earlier deadline ends it sooner.
func WithTimeout(d time.Duration) Option { return func(o *options) { o.timeout = d } }

// WithRouteRetry makes Route send a route again, with the same request id
// and the retry flag, when an attempt gets no reply within attempt (the
// replica that took it may have been killed), until the call's deadline.
// A route without a RequestID (and not Book false) gets a random one from
// the client, since a retry must name the route it retries. Off by
// default: Route waits for one reply the whole deadline.
//
// A router that holds the id booked answers the retry from that booking,
// so a retry that reaches the replica that booked the first attempt, or
// any replica with --router-replica-sync, books nothing more. A retry that
// reaches another replica without replica sync while the first one is
// alive but slow books the request a second time there; the first
// booking, whose reply the client gave up on, is never marked, and that
// replica frees it after --router-prefill-timeout (5 min), counted in
// dynamo_router_bookings_expired_total. Choose attempt well above the
// router's usual answer time, and above --router-queue-timeout when the
// router queues requests (--router-queue-threshold): a route waiting in
// the queue gets no reply until it leaves it. attempt may be at most the
// call's timeout (WithTimeout); 0 turns the retries off.
func WithRouteRetry(attempt time.Duration) Option {
	return func(o *options) { o.routeAttempt = attempt }
}

// build applies opts to the defaults and checks the result.
func build(opts []Option) (options, error) {
	o := options{namespace: DefaultNamespace, component: DefaultRouterComponent, timeout: DefaultTimeout}
	for _, opt := range opts {
		opt(&o)
	}
	var errs []error
	for _, n := range []struct{ what, v string }{{"namespace", o.namespace}, {"router component", o.component}} {
		if n.v == "" || strings.ContainsAny(n.v, ".*> \t\r\n") {
			errs = append(errs, fmt.Errorf("client: %s %q must be a non-empty NATS subject token (no '.', '*', '>' or white space)", n.what, n.v))
		}
	}
	if o.timeout <= 0 {
		errs = append(errs, fmt.Errorf("client: timeout %v must be positive", o.timeout))
	}
	if o.routeAttempt < 0 || o.routeAttempt > o.timeout && o.timeout > 0 {
		errs = append(errs, fmt.Errorf("client: route retry attempt %v is out of range (allowed 0, off, or up to the timeout %v)", o.routeAttempt, o.timeout))
	}
	return o, errors.Join(errs...)
}

// New returns a client on nc, which the caller owns: Close leaves it
// open.
func New(nc *nats.Conn, opts ...Option) (*Client, error) {
	if nc == nil {
		return nil, errors.New("client: nil NATS connection")
	}
	o, err := build(opts)
	if err != nil {
		return nil, err
	}
	return o.client(nc, nil), nil
}

// client returns a client on nc with these options; closed is Dial's.
func (o options) client(nc *nats.Conn, closed chan struct{}) *Client {
	return &Client{nc: nc, namespace: o.namespace, component: o.component, timeout: o.timeout, routeAttempt: o.routeAttempt, closed: closed}
}

// Dial connects to NATS at natsURL and returns a client that owns the
// connection: Close closes it. The connection reconnects forever. For
// credentials, TLS or other connection options, connect yourself and use
// New.
func Dial(natsURL string, opts ...Option) (*Client, error) {
	o, err := build(opts)
	if err != nil {
		return nil, err
	}
	closed := make(chan struct{})
	nc, err := nats.Connect(natsURL, nats.Name("kvrouter-client"), nats.MaxReconnects(-1),
		nats.ClosedHandler(func(*nats.Conn) { close(closed) }))
	if err != nil {
		return nil, fmt.Errorf("client: connect to NATS at %s: %w", natsURL, err)
	}
	return o.client(nc, closed), nil
}

// Close drains and closes the connection Dial made, and returns once it
// is closed; calls still waiting then fail. On a client from New it does
// nothing. It is safe to call more than once.
func (c *Client) Close() error {
	if c.closed == nil {
		return nil
	}
	c.closeOnce.Do(func() {
		if err := c.nc.Drain(); err != nil {
			c.nc.Close() // closed or reconnecting: nothing to drain
		}
		<-c.closed
	})
	return nil
}

// Subject returns the subject of endpoint e:
// namespace.{ns}.component.{router}.{e}.
func (c *Client) Subject(e Endpoint) string {
	return "namespace." + c.namespace + ".component." + c.component + "." + string(e)
}

// ReplicaSubject returns the subject on which router replica routerID
// alone answers mark endpoint e:
// namespace.{ns}.component.{router}.{e}.{routerID in lower-case hex}. It
// is the router's service.ReplicaSubject.
func (c *Client) ReplicaSubject(e Endpoint, routerID uint64) string {
	return c.Subject(e) + "." + strconv.FormatUint(routerID, 16)
}

// markSubject returns the subject of a mark of r, or of a mark by request
// id alone when r is nil: the subject of the replica that booked r when
// its decision names one, else the queue group's. This is the one place
// that chooses where a mark goes.
func (c *Client) markSubject(e Endpoint, r *Request) string {
	if r == nil || r.d.RouterID == 0 {
		return c.Subject(e)
	}
	return c.ReplicaSubject(e, r.d.RouterID)
}

// Route asks the router for a worker for req and, unless req.Book is
// false, books the request there. The handle's Prefilled and Done report
// the request's progress; Done must be called once the request ends.
//
// Route is sent again, within the deadline, when NATS says no router is
// subscribed (a router restarting): the request reached nobody, so nothing
// was booked. An attempt that reached a router and got no reply is sent
// again only with WithRouteRetry, which says when that can book twice.
// Without it, a route whose reply comes too late, past the call's
// deadline, may have been booked all the same; the router frees such a
// booking after --router-prefill-timeout.
//
// On error the handle is nil; the methods of a nil *Request do nothing.
func (c *Client) Route(ctx context.Context, req RouteRequest) (*Request, error) {
	p := policy{noResponders: true}
	if c.routeAttempt > 0 {
		p.noReply, p.attempt = true, c.routeAttempt
		if req.RequestID == "" && (req.Book == nil || *req.Book) {
			req.RequestID = newRequestID()
		}
		p.again = func() ([]byte, error) {
			q := req
			q.Retry = true
			return encode(&q)
		}
	}
	var d Decision
	if _, err := c.call(ctx, EndpointRoute, c.Subject(EndpointRoute), &req, &d, p); err != nil {
		return nil, fmt.Errorf("route: %w", err)
	}
	if d.RequestID == "" {
		d.RequestID = req.RequestID
	}
	return &Request{c: c, d: d, booked: req.Book == nil || *req.Book}, nil
}

// newRequestID returns a random request id of 16 lower-case hex digits.
func newRequestID() string {
	var b [8]byte
	_, _ = rand.Read(b[:]) // never fails (crypto/rand)
	return hex.EncodeToString(b[:])
}

// MarkPrefill reports the first output token of request id (mark_prefill),
// through the queue group. It is retried within the deadline when no
// router answers. A router that does not know id answers
// ErrUnknownRequest. Prefer Request.Prefilled, which goes to the replica
// that booked the request.
func (c *Client) MarkPrefill(ctx context.Context, id string) error {
	return c.mark(ctx, EndpointMarkPrefill, nil, id, -1)
}

// MarkFree ends request id (mark_free), through the queue group: the
// router frees its booking. outputTokens is the number of tokens
// generated, negative when unknown. It is retried within the deadline
// when no router answers; after a retry ErrUnknownRequest may mean an
// earlier attempt freed it and its reply was lost. Prefer Request.Done,
// which goes to the replica that booked the request.
func (c *Client) MarkFree(ctx context.Context, id string, outputTokens int) error {
	return c.mark(ctx, EndpointMarkFree, nil, id, outputTokens)
}

// OverlapScores returns how many of the prompt's blocks each rank holds.
// It changes nothing.
func (c *Client) OverlapScores(ctx context.Context, p Prompt) (*Overlaps, error) {
	var o Overlaps
	if _, err := c.call(ctx, EndpointOverlapScores, c.Subject(EndpointOverlapScores), &p, &o, policy{}); err != nil {
		return nil, fmt.Errorf("overlap_scores: %w", err)
	}
	return &o, nil
}

// PotentialLoads returns each rank's load if the prompt went there, and
// the router's wait queue. It changes nothing.
func (c *Client) PotentialLoads(ctx context.Context, p Prompt) (*Loads, error) {
	var l Loads
	if _, err := c.call(ctx, EndpointPotentialLoads, c.Subject(EndpointPotentialLoads), &p, &l, policy{}); err != nil {
		return nil, fmt.Errorf("potential_loads: %w", err)
	}
	return &l, nil
}

// Do sends body, as is, to endpoint e once, without retries, and returns
// the reply as is whenever the router answered, with the error the reply
// says (CheckReply): an *Error or ErrUnknownRequest. It is for tools that
// pass JSON through, such as `router request`.
func (c *Client) Do(ctx context.Context, e Endpoint, body []byte) ([]byte, error) {
	reply, _, err := c.exchange(ctx, c.Subject(e), body, policy{})
	if err != nil {
		return nil, err
	}
	return reply, CheckReply(reply)
}

// exchange sends body to subject within the client's timeout (send, which
// sends again as p says) and returns the reply.
func (c *Client) exchange(ctx context.Context, subject string, body []byte, p policy) (reply []byte, tr trail, err error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	return c.send(ctx, subject, body, p)
}

// mark sends a mark of request id, from handle r (nil for a bare id). A
// handle's mark names the replica that booked it (router_id) and goes to
// that replica's subject; when NATS says no responders there (the replica
// is gone), it goes on to the queue group, where a replica with replica
// sync knows the booking, and one without forwards it, in vain, to the
// replica named. Then ErrUnknownRequest means the booking went with its
// replica: nothing is left to free or mark, and mark returns nil.
func (c *Client) mark(ctx context.Context, e Endpoint, r *Request, id string, outputTokens int) error {
	var routerID uint64
	if r != nil {
		routerID = r.d.RouterID
	}
	var m any = MarkPrefillRequest{RequestID: id, RouterID: routerID}
	if e == EndpointMarkFree {
		f := MarkFreeRequest{RequestID: id, RouterID: routerID}
		if outputTokens >= 0 {
			f.OutputTokens = &outputTokens
		}
		m = f
	}
	p := markPolicy
	subject := c.markSubject(e, r)
	if group := c.Subject(e); subject != group {
		p.fallback = group
	}
	var rep MarkReply
	tr, err := c.call(ctx, e, subject, m, &rep, p)
	if tr.fellBack && errors.Is(err, ErrUnknownRequest) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("%s %q: %w", e, id, err)
	}
	if rep.Success == nil {
		return fmt.Errorf("%s %q: the reply has no \"success\"", e, id)
	}
	return nil
}

// encode encodes a request: by its appendJSON when it has one, else by
// json.Marshal.
func encode(req any) ([]byte, error) {
	if a, ok := req.(interface{ appendJSON([]byte) ([]byte, error) }); ok {
		return a.appendJSON(nil)
	}
	return json.Marshal(req)
}

// call sends req to subject, bounded by the client's timeout, sending
// again as p says, and decodes the reply into out; an error reply is its
// error. It returns what the attempts went through.
func (c *Client) call(ctx context.Context, e Endpoint, subject string, req, out any, p policy) (trail, error) {
	body, err := encode(req)
	if err != nil {
		return trail{}, fmt.Errorf("encode the request: %w", err)
	}
	reply, tr, err := c.exchange(ctx, subject, body, p)
	if err != nil {
		return tr, err
	}
	if err := CheckReply(reply); err != nil {
		if tr.lost && errors.Is(err, ErrUnknownRequest) {
			return tr, fmt.Errorf("%w (an earlier attempt got no reply: it may have reached the router)", err)
		}
		return tr, err
	}
	if err := json.Unmarshal(reply, out); err != nil {
		return tr, fmt.Errorf("the reply %.200q is not %s's: %w", reply, e, err)
	}
	return tr, nil
}
