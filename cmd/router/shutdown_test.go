package main

import (
	"context"
	"errors"
	"log/slog"
	"testing"
	"testing/synctest"
	"time"

	"github.com/kvrouter/router/internal/shutdown"
)

// The stopper's time is synctest's: every wait below is on fake time, so
// the durations are exact.

// A signal starts one deadline, which every component's context carries;
// components that stop in time end the wait without expire.
func TestStopperSignal(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		parent, signal := context.WithCancel(context.Background())
		s, ctx := newStopper(parent, 3*time.Second, slog.New(slog.DiscardHandler))
		defer s.release()
		var got time.Time
		s.Go(func() error {
			<-ctx.Done()
			got, _ = shutdown.Deadline(ctx)
			time.Sleep(time.Second) // a drain that finishes in time
			return nil
		})
		time.Sleep(time.Minute)
		signal()
		start := time.Now()
		if err := s.wait(func() { t.Error("expire called, though every component stopped in time") }); err != nil {
			t.Errorf("wait = %v, want nil", err)
		}
		if want := start.Add(3 * time.Second); !got.Equal(want) || !s.Deadline().Equal(want) {
			t.Errorf("deadline seen by the component %v, by the stopper %v; want %v", got, s.Deadline(), want)
		}
		if took := time.Since(start); took != time.Second {
			t.Errorf("wait took %v, want the component's 1s", took)
		}
	})
}

// A component still draining at the deadline is cut short by expire
// (closing NATS), called exactly at the deadline.
func TestStopperExpires(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		parent, signal := context.WithCancel(context.Background())
		s, ctx := newStopper(parent, 3*time.Second, slog.New(slog.DiscardHandler))
		defer s.release()
		natsClosed := make(chan struct{})
		s.Go(func() error {
			<-ctx.Done()
			<-natsClosed // a drain that only NATS closing ends
			return nil
		})
		signal()
		start := time.Now()
		var expiredAfter time.Duration
		err := s.wait(func() {
			expiredAfter = time.Since(start)
			close(natsClosed)
		})
		if err != nil {
			t.Errorf("wait = %v, want nil", err)
		}
		if expiredAfter != 3*time.Second || time.Since(start) != 3*time.Second {
			t.Errorf("expire after %v, wait returned after %v; want both at the 3s deadline", expiredAfter, time.Since(start))
		}
	})
}

// A component that ignores even NATS closing is left behind stopGrace
// after the deadline.
func TestStopperLeavesAStuckComponent(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s, ctx := newStopper(context.Background(), 2*time.Second, slog.New(slog.DiscardHandler))
		defer s.release()
		stuck := make(chan struct{})
		s.Go(func() error {
			<-ctx.Done()
			<-stuck
			return nil
		})
		start := time.Now()
		s.stop(nil)
		if err := s.wait(func() {}); err != nil {
			t.Errorf("wait = %v, want nil", err)
		}
		if took := time.Since(start); took != 2*time.Second+stopGrace {
			t.Errorf("wait returned after %v, want the deadline plus %v", took, stopGrace)
		}
		close(stuck) // let the bubble end
	})
}

// A failing component begins the stop: the others see the deadline, and
// wait returns the error.
func TestStopperComponentFails(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s, ctx := newStopper(context.Background(), 5*time.Second, slog.New(slog.DiscardHandler))
		defer s.release()
		boom := errors.New("subscribe: permissions violation")
		var got time.Time
		var cause error
		s.Go(func() error {
			<-ctx.Done()
			got, _ = shutdown.Deadline(ctx)
			cause = context.Cause(ctx)
			return nil
		})
		time.Sleep(time.Second)
		start := time.Now()
		s.Go(func() error { return boom })
		if err := s.wait(func() { t.Error("expire called") }); !errors.Is(err, boom) {
			t.Errorf("wait = %v, want %v", err, boom)
		}
		if want := start.Add(5 * time.Second); !got.Equal(want) {
			t.Errorf("deadline seen by the other component %v, want %v", got, want)
		}
		if !errors.Is(cause, boom) {
			t.Errorf("cause seen by the other component = %v, want one wrapping %v", cause, boom)
		}
	})
}
