package testutil

import (
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	promtest "github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/common/expfmt"
)

// CheckExposition compares the text exposition of g's families names (all
// when none are given) with the golden file at path. With update it first
// rewrites the file from g, for a reviewer to read in the diff.
func CheckExposition(t testing.TB, g prometheus.Gatherer, path string, update bool, names ...string) {
	t.Helper()
	if update {
		writeExposition(t, g, path, names)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatalf("open golden file (run the test with -update to create it): %v", err)
	}
	defer f.Close()
	if err := promtest.GatherAndCompare(g, f, names...); err != nil {
		t.Errorf("exposition differs from %s (-update rewrites it):\n%v", path, err)
	}
}

func writeExposition(t testing.TB, g prometheus.Gatherer, path string, names []string) {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	enc := expfmt.NewEncoder(f, expfmt.NewFormat(expfmt.TypeTextPlain))
	for _, mf := range mfs {
		if len(names) == 0 || slices.Contains(names, mf.GetName()) {
			if err := enc.Encode(mf); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// Clock is a clock a test moves by hand, starting at a fixed instant, so
// that golden files with times in them repeat. Safe for concurrent use.
type Clock struct {
	mu  sync.Mutex
	now time.Time
}

// NewClock returns a Clock at 2025-01-02 03:04:05 UTC.
func NewClock() *Clock {
	return &Clock{now: time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)}
}

// Now returns the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// Advance moves the clock forward by d.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}
