package metrics

import (
	"flag"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/common/expfmt"
	"go.uber.org/goleak"
)

// The package starts no goroutines; goleak keeps it that way.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var update = flag.Bool("update", false, "rewrite the golden files in testdata/metrics")

// goldenPath is under the repository's testdata/metrics, where the project
// keeps its golden exposition files.
func goldenPath(name string) string { return filepath.Join("..", "testdata", "metrics", name) }

// checkGolden compares the exposition of the families names (all when none)
// with a golden file; with -update it rewrites the file first.
func checkGolden(t *testing.T, g prometheus.Gatherer, file string, names ...string) {
	t.Helper()
	path := goldenPath(file)
	if *update {
		writeGolden(t, g, path, names)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatalf("open golden file (run go test ./metrics/ -run %s -update to create it): %v", t.Name(), err)
	}
	defer f.Close()
	if err := testutil.GatherAndCompare(g, f, names...); err != nil {
		t.Errorf("exposition differs from %s (-update rewrites it):\n%v", path, err)
	}
}

func writeGolden(t *testing.T, g prometheus.Gatherer, path string, names []string) {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	keep := map[string]bool{}
	for _, n := range names {
		keep[n] = true
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
		if len(keep) == 0 || keep[mf.GetName()] {
			if err := enc.Encode(mf); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// fakeClock is a clock the test moves by hand.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{now: time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}
