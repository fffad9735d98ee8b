package zmqevents

import (
	"testing"

	"github.com/kvrouter/router/internal/testutil"
)

// Connections run goroutines; goleak checks that Run takes them all down.
func TestMain(m *testing.M) { testutil.VerifyTestMain(m) }
