package testutil

import (
	"net"
	"testing"
)

// TestFreePortNeverRepeats asks for many ports in a row. Listening on port 0
// and closing, as FreePort does, gets the same port again within a few hundred
// tries on Linux, which once gave a router one port for two servers: every
// port must be new and bindable.
func TestFreePortNeverRepeats(t *testing.T) {
	seen := map[int]bool{}
	for range 1000 {
		port := FreePort(t)
		if seen[port] {
			t.Fatalf("FreePort returned %d twice", port)
		}
		seen[port] = true
	}
	ln, err := net.Listen("tcp", Addr(FreePort(t)))
	if err != nil {
		t.Fatalf("a port from FreePort cannot be bound: %v", err)
	}
	ln.Close()
}
