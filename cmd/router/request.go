package main

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/urfave/cli/v2"
)

// requestEndpoints are the router's NATS endpoints (docs/api.md §3).
var requestEndpoints = []string{"route", "mark_prefill", "mark_free", "overlap_scores", "potential_loads"}

func requestCommand() *cli.Command {
	return &cli.Command{
		Name:      "request",
		Usage:     "send one request to a running router over NATS and print the reply",
		ArgsUsage: "ENDPOINT (" + strings.Join(requestEndpoints, ", ") + ")",
		Description: "Builds the JSON body from --data, or from --token-ids and --request-id. " +
			"Exits 1 if the router answers with an error.",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "nats-url", Value: "nats://127.0.0.1:4222", EnvVars: []string{"NATS_SERVER"}, Usage: "NATS server URL"},
			&cli.StringFlag{Name: "namespace", Value: "dynamo", EnvVars: []string{"DYN_NAMESPACE"}, Usage: "Dynamo namespace"},
			&cli.StringFlag{Name: "router-component", Value: "router", EnvVars: []string{"DYN_ROUTER_COMPONENT"}, Usage: "the router's component"},
			&cli.StringFlag{Name: "data", Usage: "the request's JSON body, as is"},
			&cli.StringFlag{Name: "token-ids", Usage: "comma-separated token ids (route, overlap_scores, potential_loads)"},
			&cli.StringFlag{Name: "request-id", Usage: "request id (route, mark_prefill, mark_free)"},
			&cli.DurationFlag{Name: "timeout", Value: 10 * time.Second, Usage: "how long to wait for the reply"},
		},
		OnUsageError: func(_ *cli.Context, err error, _ bool) error {
			return usageError("request: %v", err)
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
				return exitError("request: cannot reach NATS at %s: %v", c.String("nats-url"), err)
			}
			defer nc.Close()
			subject := fmt.Sprintf("namespace.%s.component.%s.%s", c.String("namespace"), c.String("router-component"), endpoint)
			msg, err := nc.Request(subject, body, c.Duration("timeout"))
			if err != nil {
				return exitError("request: %s: %v", subject, err)
			}
			fmt.Fprintln(c.App.Writer, string(msg.Data))
			var reply struct {
				Error *struct {
					Code string `json:"code"`
				} `json:"error"`
			}
			if json.Unmarshal(msg.Data, &reply) == nil && reply.Error != nil {
				return exitError("request: the router answered %s", reply.Error.Code)
			}
			return nil
		},
	}
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
