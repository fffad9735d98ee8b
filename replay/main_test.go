package replay

import (
	"testing"

	"github.com/kvrouter/router/internal/testutil"
)

// Replays and fleets start goroutines; goleak checks that they stop.
func TestMain(m *testing.M) {
	testutil.VerifyTestMain(m)
}
