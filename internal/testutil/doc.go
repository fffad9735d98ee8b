// Package testutil starts real servers for tests: an embedded NATS with
// JetStream and an embedded etcd, each on random loopback ports with data in
// the test's temporary directory, stopped when the test ends.
package testutil
