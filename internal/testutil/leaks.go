package testutil

import (
	"testing"

	"go.uber.org/goleak"
)

// LeakOptions are the goroutines that goleak should not count as leaks in
// this module's tests: a background worker of a dependency of etcd's
// client (OpenCensus's view worker) starts once per process and outlives
// every Close by design; go-zeromq's PUB sockets, which play engines in
// tests (internal/zmqtest), leave their writer goroutine behind after Close
// (zmq4 v0.17 never stops it; the router itself has no PUB socket).
// go-zeromq's reading sockets (SUB, DEALER, ROUTER) hand each message
// read to the socket with a send that does not watch the socket's
// context: a message read just as the socket closes leaves that goroutine
// blocked for good (zmq4 v0.17, qreader.listen; seen once in CI). That is
// one goroutine a closed socket, in the dependency, not a goroutine of
// this module's that outlives its Run.
func LeakOptions() []goleak.Option {
	return []goleak.Option{
		goleak.IgnoreTopFunction("go.opencensus.io/stats/view.(*worker).start"),
		goleak.IgnoreAnyFunction("github.com/go-zeromq/zmq4.(*pubMWriter).run"),
		goleak.IgnoreTopFunction("github.com/go-zeromq/zmq4.(*qreader).listen"),
	}
}

// VerifyTestMain runs a package's tests and fails the run if they leave a
// goroutine behind (goleak.VerifyTestMain with LeakOptions).
func VerifyTestMain(m *testing.M) { goleak.VerifyTestMain(m, LeakOptions()...) }
