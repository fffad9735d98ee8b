package replay

import (
	"testing"

	"go.uber.org/goleak"
)

// Replays and fleets start goroutines; goleak checks that they stop.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// etcd's and grpc's background workers linger after Close, as in
		// internal/testutil.
		goleak.IgnoreTopFunction("go.opencensus.io/stats/view.(*worker).start"),
	)
}
