package zmqevents

import (
	"testing"

	"go.uber.org/goleak"
)

// Connections run goroutines; goleak checks that Run takes them all down.
// The fake engines' PUB sockets are zmq4's, whose writer goroutine outlives
// Close (zmq4 v0.17 never stops it); the router itself has no PUB socket.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreAnyFunction("github.com/go-zeromq/zmq4.(*pubMWriter).run"))
}
