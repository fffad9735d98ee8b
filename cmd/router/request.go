package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/urfave/cli/v2"

	"github.com/kvrouter/router/client"
)

func requestCommand() *cli.Command {
	return &cli.Command{
		Name:      "request",
		Usage:     "send one request to a running router over NATS (or its HTTP API) and print the reply",
		ArgsUsage: "ENDPOINT (" + endpointList() + ")",
		Description: "Builds the JSON body from --data, or from --token-ids and --request-id, and prints the reply on stdout. " +
			"With --http URL it sends the same body to the router's HTTP API, POST URL/v1/ENDPOINT, and prints the same reply. " +
			"Exits 1 if no router answers, if the router answers with an error, or if mark_prefill or mark_free " +
			"answers {\"success\":false} (no such request).",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "nats-url", Value: "nats://127.0.0.1:4222", EnvVars: []string{"NATS_SERVER"}, Usage: "NATS server URL"},
			&cli.StringFlag{Name: "namespace", Value: client.DefaultNamespace, EnvVars: []string{"DYN_NAMESPACE"}, Usage: "Dynamo namespace"},
			&cli.StringFlag{Name: "router-component", Value: client.DefaultRouterComponent, EnvVars: []string{"DYN_ROUTER_COMPONENT"}, Usage: "the router's component"},
			&cli.StringFlag{Name: "http", Usage: "the router's HTTP API, such as http://127.0.0.1:8000: send there instead of NATS (--nats-url, --namespace and --router-component are then unused)"},
			&cli.StringFlag{Name: "data", Usage: "the request's JSON body, as is"},
			&cli.StringFlag{Name: "token-ids", Usage: "comma-separated token ids (route, overlap_scores, potential_loads)"},
			&cli.StringFlag{Name: "request-id", Usage: "request id (route, mark_prefill, mark_free)"},
			&cli.DurationFlag{Name: "timeout", Value: 10 * time.Second, Usage: "how long to wait for the reply"},
		},
		Action: func(c *cli.Context) error {
			endpoint := client.Endpoint(c.Args().First())
			if c.NArg() != 1 || !validEndpoint(endpoint) {
				return usageError("request: name one endpoint: %s", endpointList())
			}
			body, err := requestBody(c)
			if err != nil {
				return usageError("request: %v", err)
			}
			if d := c.Duration("timeout"); d <= 0 {
				return usageError("request: --timeout: %v must be positive", d)
			}
			if u := c.String("http"); u != "" {
				return requestHTTP(c, u, endpoint, body)
			}
			return requestNATS(c, endpoint, body)
		},
	}
}

// requestNATS sends body to endpoint over NATS, once (client.Do: no
// retries, a tool shows what happened), and prints the reply.
func requestNATS(c *cli.Context, endpoint client.Endpoint, body []byte) error {
	nc, err := nats.Connect(c.String("nats-url"), nats.Name("kvrouter-request"))
	if err != nil {
		return exitError("request: cannot reach NATS at %s (--nats-url): %v", c.String("nats-url"), err)
	}
	defer nc.Close()
	namespace, component, timeout := c.String("namespace"), c.String("router-component"), c.Duration("timeout")
	rc, err := client.New(nc, client.WithNamespace(namespace), client.WithRouterComponent(component), client.WithTimeout(timeout))
	if err != nil {
		return listProblems("request", lines(err))
	}
	subject := rc.Subject(endpoint)
	reply, err := rc.Do(c.Context, endpoint, body)
	switch {
	case errors.Is(err, client.ErrNoRouter):
		return exitError("request: no router answered on %s: is `router serve` running, with %s?", subject, routerFlags(namespace, component))
	case errors.Is(err, context.DeadlineExceeded):
		return exitError("request: no reply on %s within %v (--timeout)", subject, timeout)
	case reply == nil && err != nil:
		return exitError("request: %s: %v", subject, err)
	}
	fmt.Fprintln(c.App.Writer, string(reply))
	return replyError(endpoint, body, err)
}

// maxHTTPReply bounds the reply read from the HTTP API: the router's
// largest replies (potential_loads of a large fleet) are far smaller.
const maxHTTPReply = 64 << 20

// requestHTTP sends body to endpoint of the router's HTTP API at base
// (POST base/v1/endpoint) and prints the reply. The API answers with the
// JSON of the NATS endpoints and a status that follows the reply's error
// code (docs/api.md): those replies are printed and judged as over NATS.
// Statuses of the HTTP layer itself (404, 405, 413, 415), or a body that
// is no reply of the router, are a failure of their own, named with the
// status.
func requestHTTP(c *cli.Context, base string, endpoint client.Endpoint, body []byte) error {
	u, err := url.Parse(base)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return usageError("request: --http: %q is not an http:// or https:// URL such as http://127.0.0.1:8000", base)
	}
	target := strings.TrimRight(base, "/") + "/v1/" + string(endpoint)
	timeout := c.Duration("timeout")
	ctx, cancel := context.WithTimeout(c.Context, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, target, bytes.NewReader(body))
	if err != nil {
		return usageError("request: --http: %v", err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	// A transport of its own, closed on return: nothing outlives the
	// command (and the proxy settings of the environment still apply).
	tr := http.DefaultTransport.(*http.Transport).Clone()
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Do(req)
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return exitError("request: no reply from %s within %v (--timeout)", target, timeout)
	case err != nil:
		return exitError("request: cannot reach the router's HTTP API at %s (--http): %v", target, unwrapURLError(err))
	}
	defer resp.Body.Close()
	reply, err := io.ReadAll(io.LimitReader(resp.Body, maxHTTPReply))
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			return exitError("request: no reply from %s within %v (--timeout)", target, timeout)
		}
		return exitError("request: POST %s: reading the reply: %v", target, err)
	}
	reply = bytes.TrimRight(reply, "\r\n")
	rerr := client.CheckReply(reply)
	var e *client.Error
	switch {
	case resp.StatusCode == http.StatusOK, errors.As(rerr, &e) && !httpLevel(resp.StatusCode):
		fmt.Fprintln(c.App.Writer, string(reply))
		return replyError(endpoint, body, rerr)
	case e != nil:
		return exitError("request: POST %s: %s: %s", target, resp.Status, e.Message)
	}
	return exitError("request: POST %s: %s: %.200q", target, resp.Status, reply)
}

// httpLevel reports whether status is one the HTTP API answers for a
// request that never reached an endpoint (docs/api.md).
func httpLevel(status int) bool {
	switch status {
	case http.StatusNotFound, http.StatusMethodNotAllowed, http.StatusRequestEntityTooLarge, http.StatusUnsupportedMediaType:
		return true
	}
	return false
}

// unwrapURLError drops the *url.Error wrapping, which repeats the method
// and the URL the message already names.
func unwrapURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// routerFlags are the flags a router answering on namespace and component
// runs with, as a hint: --namespace always, --router-component when it is
// not the default.
func routerFlags(namespace, component string) string {
	if component == client.DefaultRouterComponent {
		return "--namespace " + namespace
	}
	return "--namespace " + namespace + " --router-component " + component
}

// replyError is the exit error of a reply whose error (client.CheckReply)
// is err: the router's error, or {"success":false} from mark_prefill or
// mark_free, which is how the router says it has no such request
// (docs/api.md); body is the request, for its id.
func replyError(endpoint client.Endpoint, body []byte, err error) error {
	var e *client.Error
	switch {
	case err == nil:
		return nil
	case errors.As(err, &e):
		if e.Message != "" {
			return exitError("request: the router answered %s: %s", e.Code, e.Message)
		}
		return exitError("request: the router answered %s", e.Code)
	case errors.Is(err, client.ErrUnknownRequest):
		var req struct {
			RequestID string `json:"request_id"`
		}
		_ = json.Unmarshal(body, &req) // the body was built or checked as JSON
		if req.RequestID == "" {
			return exitError("request: %s: the router has no such request: give the id that route answered (--request-id)", endpoint)
		}
		return exitError("request: %s: the router has no request %q: never routed, already freed, or freed after a timeout", endpoint, req.RequestID)
	}
	return exitError("request: %s: %v", endpoint, err)
}

// endpointList names the endpoints for messages.
func endpointList() string {
	var names []string
	for _, e := range client.Endpoints() {
		names = append(names, string(e))
	}
	return strings.Join(names, ", ")
}

func validEndpoint(e client.Endpoint) bool {
	for _, x := range client.Endpoints() {
		if e == x {
			return true
		}
	}
	return false
}

// requestBody builds the JSON body from the flags.
func requestBody(c *cli.Context) ([]byte, error) {
	if d := c.String("data"); d != "" {
		if c.IsSet("token-ids") || c.IsSet("request-id") {
			return nil, fmt.Errorf("--data: give the body or --token-ids/--request-id, not both")
		}
		if !json.Valid([]byte(d)) {
			return nil, fmt.Errorf("--data: not valid JSON")
		}
		return []byte(d), nil
	}
	body := map[string]any{}
	if id := c.String("request-id"); id != "" {
		body["request_id"] = id
	}
	if s := c.String("token-ids"); s != "" {
		var tokens []uint32
		for i, f := range strings.Split(s, ",") {
			v, err := strconv.ParseUint(strings.TrimSpace(f), 10, 32)
			if err != nil {
				return nil, fmt.Errorf("--token-ids: item %d: %q is not a token id (0..4294967295)", i, f)
			}
			tokens = append(tokens, uint32(v))
		}
		body["token_ids"] = tokens
	}
	return json.Marshal(body)
}
