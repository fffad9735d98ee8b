package sim

import (
	"testing"

	"github.com/kvrouter/router/internal/testutil"
)

// Workers and fleets start goroutines; goleak checks that Run takes them
// all down.
func TestMain(m *testing.M) {
	testutil.VerifyTestMain(m)
}
