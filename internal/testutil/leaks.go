package testutil

import (
	"testing"

	"go.uber.org/goleak"
)

// LeakOptions are the goroutines that goleak should not count as leaks in
// this module's tests: a background worker of a dependency of etcd's
// client (OpenCensus's view worker) starts once per process and outlives
// every Close by design.
func LeakOptions() []goleak.Option {
	return []goleak.Option{goleak.IgnoreTopFunction("go.opencensus.io/stats/view.(*worker).start")}
}

// VerifyTestMain runs a package's tests and fails the run if they leave a
// goroutine behind (goleak.VerifyTestMain with LeakOptions).
func VerifyTestMain(m *testing.M) { goleak.VerifyTestMain(m, LeakOptions()...) }
