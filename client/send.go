package client

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/nats-io/nats.go"
)

// Retries of marks. A router that restarts is back within seconds; a mark
// waits for it by polling NATS's no-responders answer, which costs one
// round trip to the NATS server each time.
const (
	// firstBackoff is the first wait after no responders; each next wait
	// doubles, up to maxBackoff. Each wait is jittered down by up to half,
	// so that the frontends of a fleet do not all poll in step after a
	// router restart.
	firstBackoff = 10 * time.Millisecond
	maxBackoff   = 250 * time.Millisecond
	// minAttempt is the shortest wait for one reply worth splitting off the
	// time left: below twice this, the last attempt takes all of it.
	minAttempt = 100 * time.Millisecond
	// maxAttempt caps the wait for one reply. A router answers a mark in
	// microseconds; one that has not answered in seconds died with the
	// mark, and waiting longer only delays the next attempt (and a
	// deferred Done, the caller's return).
	maxAttempt = 5 * time.Second
)

// send sends body to subject and returns the reply. Without retry it sends
// once. With retry (marks) it sends again until ctx ends: after NATS says
// no router is subscribed, following a backoff, and after an attempt got no
// reply within half the time left, at most maxAttempt (the replica that
// took it may have died), at once. lost reports that some attempt got no reply, so that the
// router may have handled it.
func (c *Client) send(ctx context.Context, subject string, body []byte, retry bool) (reply []byte, lost bool, err error) {
	backoff := firstBackoff
	for attempt := 1; ; attempt++ {
		actx, cancel := ctx, context.CancelFunc(func() {})
		if dl, ok := ctx.Deadline(); ok && retry {
			if half := time.Until(dl) / 2; half >= minAttempt {
				actx, cancel = context.WithTimeout(ctx, min(half, maxAttempt))
			}
		}
		msg, err := c.nc.RequestWithContext(actx, subject, body)
		cancel()
		if err == nil {
			return msg.Data, lost, nil
		}
		noRouter := errors.Is(err, nats.ErrNoResponders)
		noReply := errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout)
		if !retry || ctx.Err() != nil || !(noRouter || noReply) {
			return nil, lost, sendError(subject, attempt, err, ctx.Err())
		}
		lost = lost || noReply
		if c.onRetry != nil {
			c.onRetry(attempt, err)
		}
		if !noRouter {
			continue // the attempt's wait was the backoff
		}
		t := time.NewTimer(backoff/2 + rand.N(backoff/2+1))
		backoff = min(2*backoff, maxBackoff)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil, lost, sendError(subject, attempt, err, ctx.Err())
		}
	}
}

// sendError is the error of a request to subject whose last attempt (of
// attempts) failed with err, ctxErr being the call's context's error.
func sendError(subject string, attempts int, err, ctxErr error) error {
	tries := ""
	if attempts > 1 {
		tries = fmt.Sprintf(" (%d attempts)", attempts)
	}
	switch {
	case errors.Is(err, nats.ErrNoResponders) && ctxErr != nil:
		return fmt.Errorf("%w on %s%s: %w, then %w", ErrNoRouter, subject, tries, err, ctxErr)
	case errors.Is(err, nats.ErrNoResponders):
		return fmt.Errorf("%w on %s%s: %w", ErrNoRouter, subject, tries, err)
	case errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("no reply on %s%s within the deadline: %w", subject, tries, err)
	}
	return fmt.Errorf("request on %s%s: %w", subject, tries, err)
}
