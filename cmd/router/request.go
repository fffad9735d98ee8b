package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/urfave/cli/v2"

	"github.com/kvrouter/router/service"
)

// requestEndpoints are the router's NATS endpoints (docs/api.md §3).
var requestEndpoints = []string{"route", "mark_prefill", "mark_free", "overlap_scores", "potential_loads"}

func requestCommand() *cli.Command {
	return &cli.Command{
		Name:      "request",
		Usage:     "send one request to a running router over NATS and print the reply",
		ArgsUsage: "ENDPOINT (" + strings.Join(requestEndpoints, ", ") + ")",
		Description: "Builds the JSON body from --data, or from --token-ids and --request-id, and prints the reply on stdout. " +
			"Exits 1 if no router answers, if the router answers with an error, or if mark_prefill or mark_free " +
			"answers {\"success\":false} (no such request).",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "nats-url", Value: "nats://127.0.0.1:4222", EnvVars: []string{"NATS_SERVER"}, Usage: "NATS server URL"},
			&cli.StringFlag{Name: "namespace", Value: "dynamo", EnvVars: []string{"DYN_NAMESPACE"}, Usage: "Dynamo namespace"},
			&cli.StringFlag{Name: "router-component", Value: "router", EnvVars: []string{"DYN_ROUTER_COMPONENT"}, Usage: "the router's component"},
			&cli.StringFlag{Name: "data", Usage: "the request's JSON body, as is"},
			&cli.StringFlag{Name: "token-ids", Usage: "comma-separated token ids (route, overlap_scores, potential_loads)"},
			&cli.StringFlag{Name: "request-id", Usage: "request id (route, mark_prefill, mark_free)"},
			&cli.DurationFlag{Name: "timeout", Value: 10 * time.Second, Usage: "how long to wait for the reply"},
		},
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 || !validEndpoint(c.Args().First()) {
				return usageError("request: name one endpoint: %s", strings.Join(requestEndpoints, ", "))
			}
			endpoint := c.Args().First()
			body, err := requestBody(c)
			if err != nil {
				return usageError("request: %v", err)
			}
			nc, err := nats.Connect(c.String("nats-url"), nats.Name("kvrouter-request"))
			if err != nil {
				return exitError("request: cannot reach NATS at %s (--nats-url): %v", c.String("nats-url"), err)
			}
			defer nc.Close()
			namespace, component := c.String("namespace"), c.String("router-component")
			subject := service.Subject(namespace, component, endpoint)
			msg, err := nc.Request(subject, body, c.Duration("timeout"))
			switch {
			case errors.Is(err, nats.ErrNoResponders):
				return exitError("request: no router answered on %s: is `router serve` running, with %s?", subject, routerFlags(namespace, component))
			case errors.Is(err, nats.ErrTimeout):
				return exitError("request: no reply on %s within %v (--timeout)", subject, c.Duration("timeout"))
			case err != nil:
				return exitError("request: %s: %v", subject, err)
			}
			fmt.Fprintln(c.App.Writer, string(msg.Data))
			return replyError(endpoint, body, msg.Data)
		},
	}
}

// routerFlags are the flags a router answering on namespace and component
// runs with, as a hint: --namespace always, --router-component when it is
// not the default.
func routerFlags(namespace, component string) string {
	if component == service.DefaultComponent {
		return "--namespace " + namespace
	}
	return "--namespace " + namespace + " --router-component " + component
}

// routerAnswer holds the parts of any reply of the router that say a
// request failed: an error object, or "success": false.
type routerAnswer struct {
	Error *struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
	Success *bool `json:"success"`
}

// replyError is the exit error of a reply that says the request failed: an
// error object, or {"success":false} from mark_prefill or mark_free, which
// is how the router says it has no such request (docs/api.md).
func replyError(endpoint string, body, data []byte) error {
	var reply routerAnswer
	if json.Unmarshal(data, &reply) != nil {
		return nil
	}
	if e := reply.Error; e != nil {
		if e.Message != "" {
			return exitError("request: the router answered %s: %s", e.Code, e.Message)
		}
		return exitError("request: the router answered %s", e.Code)
	}
	if reply.Success != nil && !*reply.Success {
		var req struct {
			RequestID string `json:"request_id"`
		}
		_ = json.Unmarshal(body, &req) // the body was built or checked as JSON
		if req.RequestID == "" {
			return exitError("request: %s: the router has no such request: give the id that route answered (--request-id)", endpoint)
		}
		return exitError("request: %s: the router has no request %q: never routed, already freed, or freed after a timeout", endpoint, req.RequestID)
	}
	return nil
}

func validEndpoint(e string) bool {
	for _, x := range requestEndpoints {
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
