package main

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// Each testdata/*.jsonl is a recorded `go test -json` run of a small module
// (packages that pass, fail, skip, panic, time out, fail to build, have no
// tests); its report is testdata/*.golden.
func TestSummariseRecordedRuns(t *testing.T) {
	tests := []struct {
		name string
		want Counts
		ok   bool
	}{
		{"pass", Counts{Packages: 2, Passed: 4}, true},
		{"skips", Counts{Packages: 2, Passed: 1, Skipped: 3}, true},
		{"mixed", Counts{Packages: 6, Passed: 8, Failed: 4, Skipped: 3, PackagesFailed: 3}, false},
		{"timeout", Counts{Packages: 1, Failed: 1, PackagesFailed: 1}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			in, err := os.Open(filepath.Join("testdata", tc.name+".jsonl"))
			if err != nil {
				t.Fatal(err)
			}
			defer in.Close()
			var out bytes.Buffer
			sum, err := summarise(in, &out)
			if err != nil {
				t.Fatal(err)
			}
			got := Counts{Packages: sum.Packages, Passed: sum.Passed, Failed: sum.Failed, Skipped: sum.Skipped, PackagesFailed: sum.PackagesFailed}
			if got != tc.want {
				t.Errorf("counts = %+v, want %+v", got, tc.want)
			}
			if sum.ok() != tc.ok {
				t.Errorf("ok() = %v, want %v", sum.ok(), tc.ok)
			}
			golden := filepath.Join("testdata", tc.name+".golden")
			if *update {
				if err := os.WriteFile(golden, out.Bytes(), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatal(err)
			}
			if out.String() != string(want) {
				t.Errorf("report differs from %s (go test -run %s -update rewrites it):\n--- got\n%s\n--- want\n%s", golden, t.Name(), out.String(), want)
			}
		})
	}
}

// The report's lines that matter, checked by content rather than by golden
// file: what a reader looks for.
func TestSummaryLines(t *testing.T) {
	tests := []struct {
		name     string
		input    string
		contains []string
		absent   []string
	}{
		{"last line", "mixed", []string{"\nsummary: 6 packages (3 failed), 8 passed, 4 failed, 3 skipped\n"}, nil},
		{"failure output", "mixed", []string{"fail_test.go:8: got 1, want 2", "--- FAIL: TestBad", "FAIL\texample.com/m/fail", "panic: boom"}, []string{"=== RUN"}},
		{"build error", "mixed", []string{`b_test.go:5:40: cannot use "s"`, "FAIL\texample.com/m/broken [build failed]"}, nil},
		{"passing tests stay quiet", "pass", []string{"ok  \texample.com/m/pass\t"}, []string{"quiet on success", "--- PASS"}},
		{"skips named with the install command", "skips", []string{
			"example.com/m/skip TestNeedsNATS: nats-server, etcd not installed",
			"example.com/m/skip TestShort: the race detector makes sync.Pool drop items",
			"apt-get install nats-server etcd-server prometheus\n",
		}, []string{"looking for programs"}},
		{"unfinished test", "timeout", []string{"example.com/m/hang TestHangs: did not finish", "panic: test timed out after 1s"}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			in, err := os.ReadFile(filepath.Join("testdata", tc.input+".jsonl"))
			if err != nil {
				t.Fatal(err)
			}
			var out bytes.Buffer
			if _, err := summarise(bytes.NewReader(in), &out); err != nil {
				t.Fatal(err)
			}
			for _, s := range tc.contains {
				if !strings.Contains(out.String(), s) {
					t.Errorf("report lacks %q:\n%s", s, out.String())
				}
			}
			for _, s := range tc.absent {
				if strings.Contains(out.String(), s) {
					t.Errorf("report has %q:\n%s", s, out.String())
				}
			}
		})
	}
}

// Lines that are not events pass through; no events at all is a failure.
func TestSummariseWithoutEvents(t *testing.T) {
	var out bytes.Buffer
	sum, err := summarise(strings.NewReader("go: cannot find main module\n"), &out)
	if err != nil {
		t.Fatal(err)
	}
	if sum.ok() {
		t.Error("ok() with no package read")
	}
	for _, want := range []string{"go: cannot find main module\n", "no test results read", "summary: 0 packages, 0 passed, 0 failed, 0 skipped\n"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, out.String())
		}
	}
}
