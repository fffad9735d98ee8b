// Command testsum reads the events of `go test -json` on its standard input
// and prints what `go test` prints without -v: a line per package, and the
// output of every test and package that failed. It ends with the tests that
// failed or were skipped, each with its reason, the command that installs
// what the skipped tests need, and one plain line:
//
//	summary: 21 packages, 812 passed, 0 failed, 3 skipped
//
// It exits 1 if a test or a package failed or the input held no package.
// `make test` runs it:
//
//	go test -json -race ./... | go run ./internal/testsum
//
// It runs in one goroutine and keeps only the output of tests still running.
package main
