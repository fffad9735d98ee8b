package client_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/kvrouter/router/client"
	"github.com/kvrouter/router/sim"
)

// A frontend's whole request, as docs/frontend.md shows it: route, send
// the prompt to the chosen worker, mark_prefill at the first token,
// mark_free at the end. The worker here is a simulated one (router sim);
// a real frontend speaks its workers' protocol where generate speaks the
// simulator's.
func Example_frontend() {
	nc, err := nats.Connect(exampleNATSURL())
	if err != nil {
		fmt.Println(err)
		return
	}
	defer nc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	prompt := make([]uint32, 512) // 4 blocks of 128 tokens
	for i := range prompt {
		prompt[i] = uint32(i + 1)
	}
	if err := frontend(ctx, nc, prompt); err != nil {
		fmt.Println(err)
	}
	// Output:
	// route: r-1 to worker 1000, 0 of 4 blocks cached
	// first token: mark_prefill
	// done: 8 tokens, mark_free
}

// frontend serves one prompt: it asks the router for a worker, has the
// worker generate, and tells the router of the first token and the end.
func frontend(ctx context.Context, nc *nats.Conn, prompt []uint32) error {
	rc, err := client.New(nc)
	if err != nil {
		return err
	}
	req, err := rc.Route(ctx, client.RouteRequest{RequestID: "r-1", Prompt: client.Prompt{TokenIDs: prompt}})
	if err != nil {
		return err // errors.Is(err, client.ErrNoWorkers) and the like say why
	}
	// From here on the router holds a booking: free it on every path.
	// The Done at the end, with the count of tokens, is the one that
	// counts; this one then does nothing.
	defer req.Done(ctx, -1)
	d := req.Decision()
	fmt.Printf("route: %s to worker %d, %d of %d blocks cached\n", req.ID(), d.WorkerID, d.OverlapBlocks, d.NumBlocks)

	n, err := generate(ctx, nc, d.WorkerID, req.ID(), prompt, 8, func() error {
		fmt.Println("first token: mark_prefill")
		return req.Prefilled(ctx)
	})
	if err != nil {
		return err
	}
	fmt.Printf("done: %d tokens, mark_free\n", n)
	return req.Done(ctx, n)
}

// generate has worker id generate maxTokens tokens after the prompt,
// calls firstToken at the first, and returns the number generated. It
// speaks the simulated workers' generate protocol (docs/replay.md).
func generate(ctx context.Context, nc *nats.Conn, id client.WorkerID, requestID string, prompt []uint32, maxTokens int, firstToken func() error) (int, error) {
	inbox := nc.NewRespInbox()
	sub, err := nc.SubscribeSync(inbox)
	if err != nil {
		return 0, err
	}
	defer sub.Unsubscribe()
	body, err := json.Marshal(sim.GenerateRequest{RequestID: requestID, TokenIDs: prompt, MaxTokens: maxTokens})
	if err != nil {
		return 0, err
	}
	if err := nc.PublishRequest(sim.GenerateSubject("dynamo", "backend", uint64(id)), inbox, body); err != nil {
		return 0, err
	}
	for {
		msg, err := sub.NextMsgWithContext(ctx)
		if err != nil {
			return 0, fmt.Errorf("worker %d: %w", id, err)
		}
		var rep sim.GenerateReply
		if err := json.Unmarshal(msg.Data, &rep); err != nil {
			return 0, fmt.Errorf("worker %d: %w", id, err)
		}
		switch rep.Event {
		case sim.ReplyFirstToken:
			if err := firstToken(); err != nil {
				return 0, err
			}
		case sim.ReplyDone:
			return rep.OutputTokens, nil
		case sim.ReplyError:
			return 0, fmt.Errorf("worker %d refused the request: %s", id, rep.Error.Message)
		}
	}
}

// Done frees the booking once: the deferred call after the explicit one
// does nothing.
func ExampleRequest_Done() {
	rc, err := client.Dial(exampleNATSURL())
	if err != nil {
		fmt.Println(err)
		return
	}
	defer rc.Close()
	ctx := context.Background()
	req, err := rc.Route(ctx, client.RouteRequest{Prompt: client.Prompt{TokenIDs: []uint32{1, 2, 3}}})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer req.Done(ctx, -1) // a no-op after the Done below
	if err := req.Prefilled(ctx); err != nil {
		fmt.Println(err)
	}
	fmt.Println("mark_free:", req.Done(ctx, 12))
	fmt.Println("again:", req.Done(ctx, 12))
	// Output:
	// mark_free: <nil>
	// again: <nil>
}

// The router's error replies match their sentinels.
func ExampleError() {
	rc, err := client.Dial(exampleNATSURL())
	if err != nil {
		fmt.Println(err)
		return
	}
	defer rc.Close()
	_, err = rc.Route(context.Background(), client.RouteRequest{
		Prompt:           client.Prompt{TokenIDs: []uint32{1, 2, 3}},
		AllowedWorkerIDs: []client.WorkerID{42}, // no such worker
	})
	var e *client.Error
	if errors.As(err, &e) {
		fmt.Println("code:", e.Code)
	}
	fmt.Println("no workers:", errors.Is(err, client.ErrNoWorkers))
	fmt.Println("overloaded:", errors.Is(err, client.ErrOverloaded))
	// Output:
	// code: no_workers
	// no workers: true
	// overloaded: false
}

// A mark the router does not know is ErrUnknownRequest.
func ExampleClient_MarkFree() {
	rc, err := client.Dial(exampleNATSURL())
	if err != nil {
		fmt.Println(err)
		return
	}
	defer rc.Close()
	err = rc.MarkFree(context.Background(), "never-routed", 0)
	fmt.Println(errors.Is(err, client.ErrUnknownRequest))
	// Output:
	// true
}

// overlap_scores says which workers hold the prompt's blocks, and changes
// nothing.
func ExampleClient_OverlapScores() {
	rc, err := client.Dial(exampleNATSURL())
	if err != nil {
		fmt.Println(err)
		return
	}
	defer rc.Close()
	o, err := rc.OverlapScores(context.Background(), client.Prompt{TokenIDs: make([]uint32, 300)})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Printf("%d full blocks of %d tokens, held by %d workers\n", o.NumBlocks, o.BlockSize, len(o.Workers))
	// Output:
	// 2 full blocks of 128 tokens, held by 0 workers
}

// Options name the router's namespace and component, and bound each call.
func ExampleDial() {
	rc, err := client.Dial(exampleNATSURL(), client.WithNamespace("dynamo"), client.WithRouterComponent("router"), client.WithTimeout(5*time.Second))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer rc.Close()
	fmt.Println(rc.Subject(client.EndpointRoute))
	// Output:
	// namespace.dynamo.component.router.route
}
