package metrics

import (
	"flag"
	"path/filepath"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	kvtest "github.com/kvrouter/router/internal/testutil"
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
	kvtest.CheckExposition(t, g, goldenPath(file), *update, names...)
}
