package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/kvrouter/router/internal/testutil"
)

// buildDir holds the router binary the tests build (64 MB with -race);
// TestMain makes it and removes it when the tests end.
var buildDir string

func TestMain(m *testing.M) {
	os.Exit(runTests(m))
}

// runTests runs the tests between making and removing buildDir: os.Exit in
// TestMain would skip a deferred removal.
func runTests(m *testing.M) int {
	dir, err := os.MkdirTemp("", "kvrouter-e2e-")
	if err != nil {
		fmt.Fprintf(os.Stderr, "e2e: directory for the router binary: %v\n", err)
		return 1
	}
	defer os.RemoveAll(dir)
	buildDir = dir
	code := m.Run()
	if code == 0 {
		if err := goleak.Find(testutil.LeakOptions()...); err != nil {
			fmt.Fprintf(os.Stderr, "goleak: %v\n", err)
			return 1
		}
	}
	return code
}

// buildRouter builds cmd/router with the race detector into buildDir, once,
// for the first test that needs it.
var buildRouter = sync.OnceValues(func() (string, error) {
	bin := filepath.Join(buildDir, "router")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "build", "-race", "-o", bin, "./cmd/router")
	cmd.Dir = ".." // tests run in e2e/
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("go build ./cmd/router: %w\n%s", err, out.String())
	}
	return bin, nil
})

// routerBinary returns the path of the race-built router.
func routerBinary(t *testing.T) string {
	t.Helper()
	bin, err := buildRouter()
	if err != nil {
		t.Fatal(err)
	}
	return bin
}

// program is an outside program the tests run, by its name on PATH.
type program string

// The programs the tests run.
const (
	natsServer program = "nats-server"
	etcdServer program = "etcd"
	promtool   program = "promtool"
	prometheus program = "prometheus"
)

// debianPackage names the Debian package that installs each program; .ci/run
// installs the same ones.
var debianPackage = map[program]string{
	natsServer: "nats-server",
	etcdServer: "etcd-server",
	promtool:   "prometheus",
	prometheus: "prometheus",
	pythonZMQ:  "python3-zmq python3-msgpack",
}

// installed maps each program a test asked for with need to its path.
type installed map[program]string

// path returns where p is installed; a test that did not ask for p with
// need fails here, so that every test declares what it runs up front.
func (in installed) path(t *testing.T, p program) string {
	t.Helper()
	path, ok := in[p]
	if !ok {
		t.Fatalf("the test runs %s but does not name it in its need(...) call", p)
	}
	return path
}

// need finds the programs a test runs. Call it first, before the test starts
// anything: outside CI a missing program skips the test at once, with the
// command that installs what is missing; in CI (CI=true), where .ci/run
// installs the programs, it fails the test.
func need(t *testing.T, progs ...program) installed {
	t.Helper()
	found := installed{}
	var missing []program
	for _, p := range progs {
		path, err := lookPath(string(p))
		if err != nil {
			missing = append(missing, p)
			continue
		}
		found[p] = path
	}
	if len(missing) == 0 {
		return found
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s; .ci/run installs it", missingMessage(missing))
	}
	t.Skipf("%s; CI runs this test", missingMessage(missing))
	return nil
}

// lookPath finds a program on PATH or where Debian installs it: nats-server
// is in /usr/sbin, which a user's PATH may lack.
func lookPath(name string) (string, error) {
	if name == string(pythonZMQ) {
		return debianPython()
	}
	if path, err := exec.LookPath(name); err == nil {
		return path, nil
	}
	for _, dir := range []string{"/usr/sbin", "/usr/bin", "/usr/local/bin"} {
		p := filepath.Join(dir, name)
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", errors.New(name + ": not installed")
}

// debianPython returns Debian's Python if it has the zmq and msgpack
// modules: a Python of another installation (pyenv, a virtualenv) on PATH
// lacks Debian's packages.
func debianPython() (string, error) {
	const python = "/usr/bin/python3"
	if err := exec.Command(python, "-c", "import zmq, msgpack").Run(); err != nil {
		return "", errors.New(python + " with zmq and msgpack: not installed")
	}
	return python, nil
}

// missingMessage says which programs are missing and how to install them,
// e.g. "promtool, prometheus not installed (apt-get install prometheus)".
// make test's summary collects the apt-get lines of skipped tests.
func missingMessage(missing []program) string {
	names := make([]string, len(missing))
	var pkgs []string
	for i, p := range missing {
		names[i] = string(p)
		if pkg := debianPackage[p]; !slices.Contains(pkgs, pkg) {
			pkgs = append(pkgs, pkg)
		}
	}
	return fmt.Sprintf("%s not installed (apt-get install %s)", strings.Join(names, ", "), strings.Join(pkgs, " "))
}

func TestMissingMessage(t *testing.T) {
	tests := []struct {
		name    string
		missing []program
		want    string
	}{
		{"one", []program{promtool}, "promtool not installed (apt-get install prometheus)"},
		{"one package for two programs", []program{promtool, prometheus}, "promtool, prometheus not installed (apt-get install prometheus)"},
		{"all", []program{natsServer, etcdServer, promtool, prometheus},
			"nats-server, etcd, promtool, prometheus not installed (apt-get install nats-server etcd-server prometheus)"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := missingMessage(tc.missing); got != tc.want {
				t.Errorf("missingMessage = %q, want %q", got, tc.want)
			}
		})
	}
}
