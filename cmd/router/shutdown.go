package main

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/kvrouter/router/internal/shutdown"
)

// stopGrace is how long stopper.wait still waits for the components once
// NATS was closed at the deadline: closing it ends every drain that waits
// on it at once, so this only guards against a component that ignores its
// context.
const stopGrace = 200 * time.Millisecond

// stopper runs the daemon's long-lived components and gives their stop one
// deadline: --shutdown-timeout from the moment the stop begins, when the
// parent context ends (SIGINT or SIGTERM) or a component fails. The
// components' context then ends with a shutdown.Cause carrying that
// deadline, by which each bounds its drains and flushes; the daemon bounds
// its own last steps (NATS drain, lease revoke) by Deadline.
type stopper struct {
	timeout time.Duration
	log     *slog.Logger
	cancel  context.CancelCauseFunc
	unwatch func() bool // stops watching the parent context
	g       errgroup.Group

	once     sync.Once
	stopping chan struct{} // closed when the stop begins
	// mu guards deadline; a leaf lock (docs/locks.md).
	mu       sync.Mutex
	deadline time.Time // set when the stop begins
}

// newStopper returns a stopper and the context to run its components in,
// which ends when the stop begins. Call release when done.
func newStopper(parent context.Context, timeout time.Duration, log *slog.Logger) (*stopper, context.Context) {
	// The components' context must not end with the parent's own cause,
	// which carries no deadline: it ends only through stop.
	ctx, cancel := context.WithCancelCause(context.WithoutCancel(parent))
	s := &stopper{timeout: timeout, log: log, cancel: cancel, stopping: make(chan struct{})}
	s.unwatch = context.AfterFunc(parent, func() { s.stop(context.Cause(parent)) })
	return s, ctx
}

// Go runs f as a component; an error from f begins the stop.
func (s *stopper) Go(f func() error) {
	s.g.Go(func() error {
		err := f()
		if err != nil {
			s.stop(err)
		}
		return err
	})
}

// stop begins the stop, once, for reason; later calls do nothing.
func (s *stopper) stop(reason error) {
	s.once.Do(func() {
		d := time.Now().Add(s.timeout)
		s.mu.Lock()
		s.deadline = d
		s.mu.Unlock()
		close(s.stopping)
		s.cancel(&shutdown.Cause{Reason: reason, Deadline: d})
	})
}

// Deadline returns when the whole stop must be over; it begins the stop if
// it has not begun.
func (s *stopper) Deadline() time.Time {
	s.stop(nil)
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.deadline
}

// wait returns the first error of the components once all have returned.
// If some still run at the deadline, it calls expire (closing NATS, which
// ends every drain still waiting on it), says so, and waits at most
// stopGrace more.
func (s *stopper) wait(expire func()) error {
	done := make(chan error, 1)
	go func() { done <- s.g.Wait() }()
	select {
	case err := <-done:
		return err
	case <-s.stopping:
	}
	timer := time.NewTimer(time.Until(s.Deadline()))
	defer timer.Stop()
	select {
	case err := <-done:
		return err
	case <-timer.C:
	}
	s.log.Warn("shutdown deadline reached with components still stopping; closing NATS", "shutdown_timeout", s.timeout)
	expire()
	timer.Reset(stopGrace)
	select {
	case err := <-done:
		return err
	case <-timer.C:
		s.log.Error("components still running after NATS was closed; exiting without them", "shutdown_timeout", s.timeout)
		return nil
	}
}

// release stops watching the parent context.
func (s *stopper) release() { s.unwatch() }
