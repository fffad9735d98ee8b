// Package testutil starts real servers for tests: an embedded NATS with
// JetStream and an embedded etcd, each on random loopback ports with data in
// the test's temporary directory, stopped when the test ends. kvevents.go
// writes KV events in Dynamo's MessagePack encoding for the decoder's and
// the subscriber's tests.
package testutil
