package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
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
	// closed is closed by NATS when a connection Dial made is closed; nil
	// for a connection the caller owns.
	closed    chan struct{}
	closeOnce sync.Once
	// onRetry, when set, is told of each mark attempt that is retried
	// (tests).
	onRetry func(attempt int, err error)
}

// Option configures a Client.
type Option func(*options)

type options struct {
	namespace string
	component string
	timeout   time.Duration
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
	return &Client{nc: nc, namespace: o.namespace, component: o.component, timeout: o.timeout, closed: closed}
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

// markSubject returns the subject of a mark of r, or of a mark by request
// id alone when r is nil. Today every mark goes to the queue group, so it
// reaches any replica. This is the one place that chooses where a mark
// goes: when route replies name the replica that booked the request and a
// subject of its own (issue 18), a mark of a handle goes there.
func (c *Client) markSubject(e Endpoint, r *Request) string {
	return c.Subject(e)
}

// Route asks the router for a worker for req and, unless req.Book is
// false, books the request there. The handle's Prefilled and Done report
// the request's progress; Done must be called once the request ends.
//
// Route is never retried, not even on a lost reply: the router may have
// booked the request, and a second route would book it again (or fail
// as a duplicate of a request id). On ErrNoRouter nothing was booked and
// the caller may try again. A route whose reply comes too late, past the
// call's deadline, may have been booked all the same; the router frees
// such a booking after --router-prefill-timeout.
//
// On error the handle is nil; the methods of a nil *Request do nothing.
func (c *Client) Route(ctx context.Context, req RouteRequest) (*Request, error) {
	var d Decision
	if err := c.call(ctx, EndpointRoute, c.Subject(EndpointRoute), &req, &d, false); err != nil {
		return nil, fmt.Errorf("route: %w", err)
	}
	if d.RequestID == "" {
		d.RequestID = req.RequestID
	}
	return &Request{c: c, d: d, booked: req.Book == nil || *req.Book}, nil
}

// MarkPrefill reports the first output token of request id (mark_prefill).
// It is retried within the deadline when no router answers. A router that
// does not know id answers ErrUnknownRequest. Prefer Request.Prefilled.
func (c *Client) MarkPrefill(ctx context.Context, id string) error {
	return c.mark(ctx, EndpointMarkPrefill, nil, id, -1)
}

// MarkFree ends request id (mark_free): the router frees its booking.
// outputTokens is the number of tokens generated, negative when unknown.
// It is retried within the deadline when no router answers; after a retry
// ErrUnknownRequest may mean an earlier attempt freed it and its reply was
// lost. Prefer Request.Done.
func (c *Client) MarkFree(ctx context.Context, id string, outputTokens int) error {
	return c.mark(ctx, EndpointMarkFree, nil, id, outputTokens)
}

// OverlapScores returns how many of the prompt's blocks each rank holds.
// It changes nothing.
func (c *Client) OverlapScores(ctx context.Context, p Prompt) (*Overlaps, error) {
	var o Overlaps
	if err := c.call(ctx, EndpointOverlapScores, c.Subject(EndpointOverlapScores), &p, &o, false); err != nil {
		return nil, fmt.Errorf("overlap_scores: %w", err)
	}
	return &o, nil
}

// PotentialLoads returns each rank's load if the prompt went there, and
// the router's wait queue. It changes nothing.
func (c *Client) PotentialLoads(ctx context.Context, p Prompt) (*Loads, error) {
	var l Loads
	if err := c.call(ctx, EndpointPotentialLoads, c.Subject(EndpointPotentialLoads), &p, &l, false); err != nil {
		return nil, fmt.Errorf("potential_loads: %w", err)
	}
	return &l, nil
}

// Do sends body, as is, to endpoint e once, without retries, and returns
// the reply as is whenever the router answered, with the error the reply
// says (CheckReply): an *Error or ErrUnknownRequest. It is for tools that
// pass JSON through, such as `router request`.
func (c *Client) Do(ctx context.Context, e Endpoint, body []byte) ([]byte, error) {
	reply, _, err := c.exchange(ctx, c.Subject(e), body, false)
	if err != nil {
		return nil, err
	}
	return reply, CheckReply(reply)
}

// exchange sends body to subject within the client's timeout (send, which
// retries when retry is set) and returns the reply.
func (c *Client) exchange(ctx context.Context, subject string, body []byte, retry bool) (reply []byte, lost bool, err error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	return c.send(ctx, subject, body, retry)
}

// mark sends a mark of request id, from handle r (nil for a bare id).
func (c *Client) mark(ctx context.Context, e Endpoint, r *Request, id string, outputTokens int) error {
	var m any = MarkPrefillRequest{RequestID: id}
	if e == EndpointMarkFree {
		f := MarkFreeRequest{RequestID: id}
		if outputTokens >= 0 {
			f.OutputTokens = &outputTokens
		}
		m = f
	}
	var rep MarkReply
	if err := c.call(ctx, e, c.markSubject(e, r), m, &rep, true); err != nil {
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

// call sends req to subject, bounded by the client's timeout, and decodes
// the reply into out; an error reply is its error. Marks (retry) are
// retried on the failures that a mark can safely be sent again after.
func (c *Client) call(ctx context.Context, e Endpoint, subject string, req, out any, retry bool) error {
	body, err := encode(req)
	if err != nil {
		return fmt.Errorf("encode the request: %w", err)
	}
	reply, lost, err := c.exchange(ctx, subject, body, retry)
	if err != nil {
		return err
	}
	if err := CheckReply(reply); err != nil {
		if lost && errors.Is(err, ErrUnknownRequest) {
			return fmt.Errorf("%w (an earlier attempt got no reply: it may have reached the router)", err)
		}
		return err
	}
	if err := json.Unmarshal(reply, out); err != nil {
		return fmt.Errorf("the reply %.200q is not %s's: %w", reply, e, err)
	}
	return nil
}
