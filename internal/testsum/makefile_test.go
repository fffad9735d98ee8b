package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// makeAt runs make in the repository root with args and returns its exit
// code and output. The test skips without make and bash, which the targets
// need; the environment of an outer make (make test) is left out.
func makeAt(t *testing.T, env []string, args ...string) (int, string) {
	t.Helper()
	for _, prog := range []string{"make", "bash"} {
		if _, err := exec.LookPath(prog); err != nil {
			t.Skipf("%s is not installed: the Makefile needs it", prog)
		}
	}
	cmd := exec.Command("make", append([]string{"-s", "--no-print-directory", "-C", filepath.Join("..", "..")}, args...)...)
	for _, kv := range os.Environ() {
		if name, _, _ := strings.Cut(kv, "="); name != "MAKEFLAGS" && name != "MFLAGS" && name != "MAKELEVEL" {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, env...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if exit, ok := err.(*exec.ExitError); ok {
		return exit.ExitCode(), out.String()
	}
	if err != nil {
		t.Fatalf("make %s: %v", strings.Join(args, " "), err)
	}
	return 0, out.String()
}

// make help shows the values of the variables its descriptions name, not
// $(NAME).
func TestMakeHelpExpandsVariables(t *testing.T) {
	code, out := makeAt(t, nil, "help", "SYSTEM_PORT=4242", "TRACE=traces/x.jsonl")
	if code != 0 {
		t.Fatalf("make help: exit %d\n%s", code, out)
	}
	if strings.Contains(out, "$(") {
		t.Errorf("make help prints an unexpanded variable:\n%s", out)
	}
	for _, want := range []string{"status server on 4242", "index replay on traces/x.jsonl", "  test "} {
		if !strings.Contains(out, want) {
			t.Errorf("make help lacks %q:\n%s", want, out)
		}
	}
}

// make test fails when go test fails, even where every event it printed
// passed (pipefail), and when an event failed, even where go test exited 0
// (testsum's own status); it passes only when both pass. A stand-in for go
// prints the events and exits as told; it builds testsum with the real go.
func TestMakeTestExitStatus(t *testing.T) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("go is not on PATH")
	}
	const (
		passed = `{"Action":"run","Package":"p","Test":"TestA"}
{"Action":"pass","Package":"p","Test":"TestA"}
{"Action":"output","Package":"p","Output":"ok  \tp\t0.1s\n"}
{"Action":"pass","Package":"p","Elapsed":0.1}`
		failed = `{"Action":"run","Package":"p","Test":"TestA"}
{"Action":"output","Package":"p","Test":"TestA","Output":"    a_test.go:1: broken\n"}
{"Action":"fail","Package":"p","Test":"TestA"}
{"Action":"output","Package":"p","Output":"FAIL\tp\t0.1s\n"}
{"Action":"fail","Package":"p","Elapsed":0.1}`
	)
	tests := []struct {
		name     string
		events   string
		goExit   int
		wantFail bool
		wantLast string
	}{
		{"all pass", passed, 0, false, "summary: 1 package, 1 passed, 0 failed, 0 skipped"},
		{"go test fails, events pass", passed, 3, true, "summary: 1 package, 1 passed, 0 failed, 0 skipped"},
		{"a test fails", failed, 1, true, "summary: 1 package (1 failed), 0 passed, 1 failed, 0 skipped"},
		{"a test fails, go test exits 0", failed, 0, true, "summary: 1 package (1 failed), 0 passed, 1 failed, 0 skipped"},
	}
	dir := t.TempDir()
	fakeGo := filepath.Join(dir, "go")
	script := `#!/bin/sh
if [ "$1" = test ]; then cat "$FAKE_EVENTS"; exit "$FAKE_EXIT"; fi
exec "$REAL_GO" "$@"
`
	if err := os.WriteFile(fakeGo, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			events := filepath.Join(dir, "events"+strconv.Itoa(i))
			if err := os.WriteFile(events, []byte(tc.events+"\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			env := []string{"REAL_GO=" + goBin, "FAKE_EVENTS=" + events, "FAKE_EXIT=" + strconv.Itoa(tc.goExit)}
			code, out := makeAt(t, env, "test", "GO="+fakeGo, "TESTSUM="+filepath.Join(dir, "testsum"))
			if (code != 0) != tc.wantFail {
				t.Errorf("make test: exit %d, want failure %v\n%s", code, tc.wantFail, out)
			}
			if !strings.Contains(out, tc.wantLast+"\n") {
				t.Errorf("make test output lacks %q:\n%s", tc.wantLast, out)
			}
		})
	}
}
