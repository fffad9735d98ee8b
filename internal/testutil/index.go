package testutil

import (
	"context"
	"fmt"
	"slices"
	"testing"

	"github.com/kvrouter/router/indexer"
)

// Canonical renders an index dump as sorted lines, one per (rank, block),
// equal for equal indexes, for comparing two indexes in a test.
func Canonical(evs []indexer.Event) []string {
	out := make([]string, 0, len(evs))
	for _, ev := range evs {
		for _, b := range ev.Blocks {
			out = append(out, fmt.Sprintf("%v parent=%v:%d block=%d tokens=%d", ev.Worker, ev.HasParent, ev.Parent, b.Hash, b.Tokens))
		}
	}
	slices.Sort(out)
	return out
}

// RunUntilCleanup runs fn(ctx) on a goroutine until the test ends, then
// cancels it and waits for it, failing the test on an error.
func RunUntilCleanup(t testing.TB, fn func(context.Context) error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- fn(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("run: %v", err)
		}
	})
}

// Later prints what its function returns when it is formatted, not when it
// is made: in a failure message of Eventually, the values the poll saw
// last.
type Later func() string

func (f Later) String() string { return f() }
