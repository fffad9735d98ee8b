package shutdown

import (
	"context"
	"errors"
	"testing"
	"testing/synctest"
	"time"
)

func TestDrainContext(t *testing.T) {
	for _, tc := range []struct {
		name  string
		cause func(now time.Time) error // nil: cancelled without a cause
		limit time.Duration
		want  time.Duration // from the moment the drain starts
	}{
		{"no cause: own limit", nil, 10 * time.Second, 10 * time.Second},
		{"other cause: own limit", func(time.Time) error { return errors.New("nats: subscribe failed") }, 10 * time.Second, 10 * time.Second},
		{"deadline first", func(now time.Time) error { return &Cause{Reason: context.Canceled, Deadline: now.Add(3 * time.Second)} }, 10 * time.Second, 3 * time.Second},
		{"own limit first", func(now time.Time) error { return &Cause{Reason: context.Canceled, Deadline: now.Add(time.Minute)} }, 10 * time.Second, 10 * time.Second},
		{"deadline passed", func(now time.Time) error { return &Cause{Deadline: now.Add(-time.Second)} }, 10 * time.Second, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				ctx, cancel := context.WithCancelCause(context.Background())
				var cause error
				if tc.cause != nil {
					cause = tc.cause(time.Now())
				}
				cancel(cause)
				start := time.Now()
				dctx, dcancel := DrainContext(ctx, tc.limit)
				defer dcancel()
				<-dctx.Done()
				if got := time.Since(start); got != tc.want {
					t.Errorf("drain ended after %v, want %v", got, tc.want)
				}
				if !errors.Is(dctx.Err(), context.DeadlineExceeded) {
					t.Errorf("drain context ended with %v, want a deadline", dctx.Err())
				}
			})
		})
	}
}

func TestCause(t *testing.T) {
	d := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	ctx, cancel := context.WithCancelCause(context.Background())
	if _, ok := Deadline(ctx); ok {
		t.Error("Deadline of a live context: ok")
	}
	// A child made before the stop carries the cause too, as the
	// components' errgroups do.
	child, stop := context.WithCancel(ctx)
	defer stop()
	cancel(&Cause{Reason: context.Canceled, Deadline: d})
	got, ok := Deadline(child)
	if !ok || !got.Equal(d) {
		t.Errorf("Deadline = %v, %v; want %v, true", got, ok, d)
	}
	if err := context.Cause(ctx); !errors.Is(err, context.Canceled) || err.Error() != "router stopping: context canceled" {
		t.Errorf("cause = %v; want one wrapping context.Canceled", err)
	}
	if got := (&Cause{}).Error(); got != "router stopping" {
		t.Errorf("Error without a reason = %q", got)
	}
}
