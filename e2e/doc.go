// Package e2e holds the end-to-end tests: the router binary, Debian's
// nats-server and etcd, and Prometheus, each started as a separate process
// on loopback ports, talking to each other for real. .ci/run installs the
// programs; elsewhere a missing program skips the tests that need it.
package e2e
