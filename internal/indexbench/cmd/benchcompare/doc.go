// Command benchcompare compares `router bench index` at a git revision with
// the working tree. It builds cmd/router twice, from the revision (extracted
// with git archive into a temporary directory) and from the working tree,
// runs `bench index` of the two binaries alternately, -runs times each, with
// the arguments after the flags, and prints the medians of the figures that
// index changes move: mixed, load and query block-ops/s, find_matches p50
// and p99, and bytes per entry, before and after, with after/before.
//
// The arguments must make bench index print JSON (--json); a relative
// --trace is resolved against the working directory. `make bench-compare`
// runs it from the repository root:
//
//	benchcompare -rev main -runs 3 -- --trace testdata/mooncake_excerpt.jsonl --json
//
// It prints a line per run on standard error and the table on standard
// output, and leaves nothing behind: the binaries and the extracted tree live
// in a temporary directory that it removes, also when interrupted. It runs
// one benchmark at a time, from one goroutine.
package main
