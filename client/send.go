package client

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/nats-io/nats.go"
)

// Retries of marks and routes. A router that restarts is back within
// seconds; a call waits for it by polling NATS's no-responders answer,
// which costs one round trip to the NATS server each time.
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

// policy says when a call is sent again, within its deadline.
type policy struct {
	// noResponders sends again, after a backoff, when NATS says no router
	// is subscribed: the request reached nobody.
	noResponders bool
	// noReply sends again, at once, when an attempt got no reply within its
	// share of the time: attempt when set, else half the time left, at
	// most maxAttempt (the replica that took it may have died with it).
	noReply bool
	attempt time.Duration
	// fallback, when set, is the subject of every attempt after NATS said
	// no responders on the first subject (a handle's mark whose replica is
	// gone goes to the queue group), sent at once.
	fallback string
	// again, when set, returns the body of every attempt after one that got
	// no reply (a route's retry); nil sends the same body.
	again func() ([]byte, error)
}

// trail is what the attempts of a call went through.
type trail struct {
	// lost says some attempt got no reply: the router may have handled it.
	lost bool
	// fellBack says the first subject had no responders and the call went
	// on to the policy's fallback.
	fellBack bool
}

// policy of marks: idempotent, sent again on every failure that says the
// router did not answer.
var markPolicy = policy{noResponders: true, noReply: true}

// send sends body to subject and returns the reply, sending again as p
// says until ctx ends.
func (c *Client) send(ctx context.Context, subject string, body []byte, p policy) (reply []byte, tr trail, err error) {
	backoff := firstBackoff
	for attempt := 1; ; attempt++ {
		actx, cancel := ctx, context.CancelFunc(func() {})
		if p.noReply {
			wait := p.attempt
			if dl, ok := ctx.Deadline(); ok && wait == 0 {
				if half := time.Until(dl) / 2; half >= minAttempt {
					wait = min(half, maxAttempt)
				}
			}
			if wait > 0 {
				actx, cancel = context.WithTimeout(ctx, wait)
			}
		}
		msg, err := c.nc.RequestWithContext(actx, subject, body)
		cancel()
		if err == nil {
			return msg.Data, tr, nil
		}
		noRouter := errors.Is(err, nats.ErrNoResponders)
		noReply := errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout)
		fallback := noRouter && p.fallback != "" && !tr.fellBack
		if ctx.Err() != nil || !(fallback || noRouter && p.noResponders || noReply && p.noReply) {
			return nil, tr, sendError(subject, attempt, err, ctx.Err())
		}
		tr.lost = tr.lost || noReply
		if noReply && p.again != nil {
			b, aerr := p.again()
			if aerr != nil {
				return nil, tr, fmt.Errorf("encode the retry: %w", aerr)
			}
			body, p.again = b, nil // every later attempt sends the same retry
		}
		if c.onRetry != nil {
			c.onRetry(attempt, err)
		}
		if fallback {
			subject, tr.fellBack = p.fallback, true
			continue
		}
		if !noRouter {
			continue // the attempt's wait was the backoff
		}
		wait := backoff/2 + rand.N(backoff/2+1)
		backoff = min(2*backoff, maxBackoff)
		if tooLate(ctx, wait) {
			// An attempt sent now could be cut short by the deadline,
			// and a call that found no router would end as one that got
			// no reply (perhaps booked): wait out the deadline instead.
			<-ctx.Done()
			return nil, tr, sendError(subject, attempt, err, ctx.Err())
		}
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil, tr, sendError(subject, attempt, err, ctx.Err())
		}
	}
}

// tooLate reports whether an attempt sent after wait would leave the
// call less than minAttempt before its deadline for the answer.
func tooLate(ctx context.Context, wait time.Duration) bool {
	dl, ok := ctx.Deadline()
	return ok && time.Until(dl)-wait < minAttempt
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
