// Package e2e holds the end-to-end tests: the router binary, Debian's
// nats-server and etcd, and Prometheus, each started as a separate process
// on loopback ports, talking to each other for real. Each test names the
// programs it runs before it starts anything; .ci/run installs them, and
// elsewhere a missing program skips the test at once, with the apt-get
// command that installs it. The race-built router lives in a temporary
// directory that TestMain removes.
package e2e
