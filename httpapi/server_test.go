package httpapi_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/kvrouter/router/httpapi"
	"github.com/kvrouter/router/internal/shutdown"
	"github.com/kvrouter/router/internal/testutil"
	"github.com/kvrouter/router/scheduler"
)

// A shutdown that a request in flight would outlast ends at the drain
// timeout or at the router's shutdown deadline, whichever comes first:
// Run closes the connections left and returns, and the request, seeing its
// client gone, leaves the queue.
func TestShutdownIsBounded(t *testing.T) {
	for _, c := range []struct {
		name     string
		drain    time.Duration
		deadline time.Duration // of the router's shutdown; 0: none
	}{
		{"drain timeout", 200 * time.Millisecond, 0},
		{"shutdown deadline", time.Hour, 200 * time.Millisecond},
	} {
		t.Run(c.name, func(t *testing.T) {
			// Worker 7 is busy once it has prefill work, and a request
			// waits for it for a minute. Nothing closes this router (no
			// scheduler Run), so the wait outlasts the shutdown.
			fx := fixedServer(t, func(sc *scheduler.Config, hc *httpapi.Config) {
				sc.QueueThreshold = ptr(0.0)
				sc.QueueTimeout = time.Minute
				hc.Host, hc.DrainTimeout = "127.0.0.1", c.drain
			})
			addr, err := fx.srv.Listen()
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancelCause(context.Background())
			defer cancel(nil)
			done := make(chan error, 1)
			go func() { done <- fx.srv.Run(ctx) }()

			only7 := `,"worker_type":"aggregated","allowed_worker_ids":[7]}`
			if code := fx.status("POST", "/v1/route", "application/json", `{"request_id":"busy","token_ids":[1,2,3,4]`+only7); code != http.StatusOK {
				t.Fatalf("route: %d", code)
			}
			transport := &http.Transport{}
			defer transport.CloseIdleConnections()
			answered := make(chan error, 1)
			go func() {
				resp, err := (&http.Client{Transport: transport}).Post("http://"+addr.String()+"/v1/route", "application/json",
					strings.NewReader(`{"token_ids":[5,6,7,8]`+only7))
				if err == nil {
					resp.Body.Close()
				}
				answered <- err
			}()
			testutil.Eventually(t, 5*time.Second, func() bool { return fx.r.Pending().Requests == 1 }, "a request waiting")

			began := time.Now()
			var cause error = context.Canceled
			if c.deadline > 0 {
				cause = &shutdown.Cause{Reason: context.Canceled, Deadline: began.Add(c.deadline)}
			}
			cancel(cause)
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Run: %v", err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("Run did not return within 10s")
			}
			took := time.Since(began)
			if took > 5*time.Second {
				t.Errorf("Run returned after %v, want about 200ms", took)
			}
			if err := <-answered; err == nil {
				t.Error("the waiting request was answered; want its connection closed")
			}
			testutil.Eventually(t, 5*time.Second, func() bool { return fx.r.Pending().Requests == 0 }, "the request out of the queue")
			t.Logf("Run returned after %v", took)
		})
	}
}
