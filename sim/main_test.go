package sim

import (
	"testing"

	"go.uber.org/goleak"
)

// Workers and fleets start goroutines; goleak checks that Run takes them
// all down.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// etcd's and grpc's background workers linger after Close, as in
		// internal/testutil.
		goleak.IgnoreTopFunction("go.opencensus.io/stats/view.(*worker).start"),
	)
}
