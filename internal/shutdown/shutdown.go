// Package shutdown carries the router's one shutdown deadline from where
// the router is wired (cmd/router) to every component that drains when it
// stops. The wiring ends the components' context with a Cause that says by
// when the whole stop must be over (--shutdown-timeout from the signal);
// each component bounds its drains and flushes with DrainContext, so that
// no drain waits past that deadline, whatever its own limit.
//
// Nothing here starts a goroutine; everything is safe for concurrent use.
package shutdown

import (
	"context"
	"errors"
	"time"
)

// Cause is the cause with which the router ends its components' context
// when it stops (context.CancelCauseFunc). It wraps the reason, so that
// errors.Is(context.Cause(ctx), context.Canceled) still holds after a
// signal.
type Cause struct {
	// Reason is why the router stops: context.Canceled after SIGINT or
	// SIGTERM, or the error of the component that failed.
	Reason error
	// Deadline is when the whole stop must be over.
	Deadline time.Time
}

// Error says that the router is stopping, and why.
func (c *Cause) Error() string {
	if c.Reason == nil {
		return "router stopping"
	}
	return "router stopping: " + c.Reason.Error()
}

// Unwrap returns the reason.
func (c *Cause) Unwrap() error { return c.Reason }

// Deadline returns the shutdown deadline that ctx ended with, and false if
// ctx has not ended or ended without a Cause (a component run on its own,
// as in tests).
func Deadline(ctx context.Context) (time.Time, bool) {
	var c *Cause
	if errors.As(context.Cause(ctx), &c) {
		return c.Deadline, true
	}
	return time.Time{}, false
}

// DrainContext returns the context of a drain that a component starts once
// ctx has ended: it ends after limit, the component's own bound, or at the
// shutdown deadline that ctx ended with, whichever comes first. It keeps
// ctx's values. The caller must call the cancel function.
func DrainContext(ctx context.Context, limit time.Duration) (context.Context, context.CancelFunc) {
	d := time.Now().Add(limit)
	if sd, ok := Deadline(ctx); ok && sd.Before(d) {
		d = sd
	}
	return context.WithDeadline(context.WithoutCancel(ctx), d)
}
