package replay

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
)

// ErrRouter is wrapped by every error the router answers with; errors.As
// on a *RouterError gives its code.
var ErrRouter = errors.New("router error")

// RouterError is an error answer of the router (docs/api.md §3).
type RouterError struct {
	Endpoint string
	Code     string `json:"code"`
	Message  string `json:"message"`
}

func (e *RouterError) Error() string {
	return fmt.Sprintf("%s: %s: %s", e.Endpoint, e.Code, e.Message)
}

// Unwrap makes errors.Is(err, ErrRouter) hold.
func (e *RouterError) Unwrap() error { return ErrRouter }

// Choice is the router's answer to route.
type Choice struct {
	RequestID     string `json:"request_id"`
	WorkerID      uint64 `json:"worker_id"`
	DPRank        uint32 `json:"dp_rank"`
	OverlapBlocks int    `json:"overlap_blocks"`
	NumBlocks     int    `json:"num_blocks"`
	WorkerType    string `json:"worker_type"`
}

// RouterClient calls the router's NATS API (docs/api.md §3) as a
// frontend does. It is safe for concurrent use.
type RouterClient struct {
	nc      *nats.Conn
	prefix  string
	timeout time.Duration
}

// NewRouterClient returns a client of the router of component router in
// namespace ns; each call waits at most timeout for its answer.
func NewRouterClient(nc *nats.Conn, ns, router string, timeout time.Duration) *RouterClient {
	return &RouterClient{nc: nc, prefix: "namespace." + ns + ".component." + router + ".", timeout: timeout}
}

// Route asks for a worker for a prompt and books the request under id.
func (c *RouterClient) Route(ctx context.Context, id string, tokens []uint32) (Choice, error) {
	body := make([]byte, 0, 32+len(id)+11*len(tokens))
	body = append(body, `{"request_id":`...)
	body = strconv.AppendQuote(body, id)
	body = append(body, `,"token_ids":[`...)
	for i, t := range tokens {
		if i > 0 {
			body = append(body, ',')
		}
		body = strconv.AppendUint(body, uint64(t), 10)
	}
	body = append(body, "]}"...)
	var ch Choice
	if err := c.call(ctx, "route", body, &ch); err != nil {
		return Choice{}, err
	}
	return ch, nil
}

// MarkPrefill tells the router that request id has its first token.
func (c *RouterClient) MarkPrefill(ctx context.Context, id string) error {
	return c.mark(ctx, "mark_prefill", id, -1)
}

// MarkFree tells the router that request id is finished.
func (c *RouterClient) MarkFree(ctx context.Context, id string, outputTokens int) error {
	return c.mark(ctx, "mark_free", id, outputTokens)
}

func (c *RouterClient) mark(ctx context.Context, endpoint, id string, outputTokens int) error {
	body := append([]byte(`{"request_id":`), strconv.Quote(id)...)
	if outputTokens >= 0 {
		body = append(body, `,"output_tokens":`...)
		body = strconv.AppendInt(body, int64(outputTokens), 10)
	}
	body = append(body, '}')
	var ok struct {
		Success bool `json:"success"`
	}
	if err := c.call(ctx, endpoint, body, &ok); err != nil {
		return err
	}
	if !ok.Success {
		return fmt.Errorf("%s %s: router does not know the request", endpoint, id)
	}
	return nil
}

// Workers returns the ids of the workers the router would consider, from
// its potential_loads answer.
func (c *RouterClient) Workers(ctx context.Context) ([]uint64, error) {
	var loads struct {
		Loads []struct {
			WorkerID uint64 `json:"worker_id"`
		} `json:"loads"`
	}
	if err := c.call(ctx, "potential_loads", []byte(`{"token_ids":[0]}`), &loads); err != nil {
		return nil, err
	}
	ids := make([]uint64, 0, len(loads.Loads))
	for _, l := range loads.Loads {
		ids = append(ids, l.WorkerID)
	}
	return ids, nil
}

// call sends one request and decodes the answer into out, or the router's
// error answer into a *RouterError.
func (c *RouterClient) call(ctx context.Context, endpoint string, body []byte, out any) error {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	msg, err := c.nc.RequestWithContext(ctx, c.prefix+endpoint, body)
	if err != nil {
		if errors.Is(err, nats.ErrNoResponders) {
			return fmt.Errorf("%s: no router answers on %s: %w", endpoint, c.prefix+endpoint, err)
		}
		return fmt.Errorf("%s: %w", endpoint, err)
	}
	var envelope struct {
		Error *RouterError `json:"error"`
	}
	if err := json.Unmarshal(msg.Data, &envelope); err != nil {
		return fmt.Errorf("%s: answer %.200q: %w", endpoint, msg.Data, err)
	}
	if envelope.Error != nil {
		envelope.Error.Endpoint = endpoint
		return envelope.Error
	}
	if err := json.Unmarshal(msg.Data, out); err != nil {
		return fmt.Errorf("%s: answer %.200q: %w", endpoint, msg.Data, err)
	}
	return nil
}
