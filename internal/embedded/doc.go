// Package embedded runs NATS (with JetStream) and etcd inside the process:
// the router's `serve --embedded` mode, which needs nothing installed, and
// the real servers that unit and integration tests talk to.
//
// Each Start function returns a running server; its Close method stops it
// and waits for its goroutines. Nothing starts until Start is called. A port
// another process holds fails Start at once with the listen error, which
// matches syscall.EADDRINUSE under errors.Is.
package embedded
