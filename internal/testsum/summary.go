package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strings"
)

// event is one line of `go test -json` (go doc test2json).
type event struct {
	Action  string
	Package string
	Test    string
	Elapsed float64
	Output  string
}

// key names a test of a package; Test "" is the package itself.
type key struct{ pkg, test string }

// note is a failed or skipped test and why, as the summary lists it.
type note struct {
	key
	reason string
}

// Counts says how many packages and tests a run had, by outcome. Tests
// include subtests.
type Counts struct {
	Packages, Passed, Failed, Skipped int
	// PackagesFailed counts packages that failed, with or without a failed
	// test: a build error, a panic in TestMain, a leak found after the tests.
	PackagesFailed int
}

// Summary is what a run did: the counts and the tests behind them.
type Summary struct {
	Counts
	failed  []note
	skipped []note
}

func (s *Summary) ok() bool { return s.Packages > 0 && s.Failed == 0 && s.PackagesFailed == 0 }

// summariser follows the events of one run.
type summariser struct {
	w   io.Writer
	sum Summary
	// out holds what each running test and package printed so far.
	out map[key]*strings.Builder
	// running lists each package's tests that have not ended, in start
	// order: when a package ends, these died with it (a panic, a timeout).
	running map[string][]string
}

// summarise reads `go test -json` from r and writes the report to w. Lines
// that are not JSON events (a go command's own message) pass through.
func summarise(r io.Reader, w io.Writer) (*Summary, error) {
	s := &summariser{w: w, out: map[key]*strings.Builder{}, running: map[string][]string{}}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 16<<20)
	for sc.Scan() {
		line := sc.Bytes()
		var ev event
		if len(line) == 0 || line[0] != '{' || json.Unmarshal(line, &ev) != nil {
			fmt.Fprintf(w, "%s\n", line)
			continue
		}
		s.apply(ev)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read go test -json: %w", err)
	}
	s.report()
	return &s.sum, nil
}

func (s *summariser) apply(ev event) {
	k := key{ev.Package, ev.Test}
	switch ev.Action {
	case "build-output":
		// Compiler and vet messages: what a failed build has to say.
		io.WriteString(s.w, ev.Output)
	case "run":
		s.running[ev.Package] = append(s.running[ev.Package], ev.Test)
	case "output":
		b := s.out[k]
		if b == nil {
			b = &strings.Builder{}
			s.out[k] = b
		}
		b.WriteString(ev.Output)
	case "pass", "fail", "skip":
		if ev.Test == "" {
			s.endPackage(ev)
		} else {
			s.endTest(k, ev.Action)
		}
	}
}

func (s *summariser) endTest(k key, action string) {
	s.running[k.pkg] = slices.DeleteFunc(s.running[k.pkg], func(t string) bool { return t == k.test })
	out := s.take(k)
	switch action {
	case "pass":
		s.sum.Passed++
	case "fail":
		s.sum.Failed++
		s.sum.failed = append(s.sum.failed, note{k, ""})
		s.print(out)
	case "skip":
		s.sum.Skipped++
		s.sum.skipped = append(s.sum.skipped, note{k, skipReason(out)})
	}
}

func (s *summariser) endPackage(ev event) {
	s.sum.Packages++
	// Tests still running when their package ended did not pass.
	for _, test := range s.running[ev.Package] {
		k := key{ev.Package, test}
		s.sum.Failed++
		s.sum.failed = append(s.sum.failed, note{k, "did not finish"})
		s.print(s.take(k))
	}
	delete(s.running, ev.Package)
	out := s.take(key{pkg: ev.Package})
	if ev.Action == "fail" {
		s.sum.PackagesFailed++
		s.print(out)
		return
	}
	// A package that passed shows its closing line only, as go test does.
	for _, line := range strings.Split(out, "\n") {
		if strings.HasPrefix(line, "ok  ") || strings.HasPrefix(line, "?   ") {
			fmt.Fprintln(s.w, line)
			return
		}
	}
	fmt.Fprintf(s.w, "ok  \t%s\t%.3fs\n", ev.Package, ev.Elapsed)
}

// take returns and forgets what k printed.
func (s *summariser) take(k key) string {
	b := s.out[k]
	delete(s.out, k)
	if b == nil {
		return ""
	}
	return b.String()
}

// framing matches the lines test2json adds to mark where tests run; the
// report of a failure reads better without them, as in go test without -v.
var framing = regexp.MustCompile(`^\s*=== (RUN|PAUSE|CONT|NAME)\b`)

// print writes out without its framing lines.
func (s *summariser) print(out string) {
	for _, line := range strings.SplitAfter(out, "\n") {
		if line != "" && !framing.MatchString(line) {
			io.WriteString(s.w, line)
		}
	}
	if out != "" && !strings.HasSuffix(out, "\n") {
		io.WriteString(s.w, "\n")
	}
}

// logPrefix is the file:line that t.Log and t.Skip put before a message.
var logPrefix = regexp.MustCompile(`^\S+\.go:\d+: `)

// skipReason returns the last message a skipped test printed: its t.Skip.
func skipReason(out string) string {
	lines := strings.Split(out, "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		line := strings.TrimSpace(lines[i])
		if line == "" || framing.MatchString(line) || strings.HasPrefix(line, "--- SKIP") {
			continue
		}
		return logPrefix.ReplaceAllString(line, "")
	}
	return ""
}

// aptInstall matches the install hint of a skipped test, e.g.
// "(apt-get install nats-server etcd-server)".
var aptInstall = regexp.MustCompile(`apt-get install ([a-z0-9][a-z0-9.+-]*(?: [a-z0-9][a-z0-9.+-]*)*)`)

// report writes the closing lines: the tests that failed, the tests that
// were skipped and why, one command installing what they need, the counts.
func (s *summariser) report() {
	sum := &s.sum
	if len(sum.failed) > 0 {
		fmt.Fprintf(s.w, "\nfailed:\n")
		for _, n := range sum.failed {
			fmt.Fprintf(s.w, "  %s %s%s\n", n.pkg, n.test, suffix(n.reason))
		}
	}
	if len(sum.skipped) > 0 {
		fmt.Fprintf(s.w, "\nskipped:\n")
		var pkgs []string
		for _, n := range sum.skipped {
			fmt.Fprintf(s.w, "  %s %s%s\n", n.pkg, n.test, suffix(n.reason))
			for _, m := range aptInstall.FindAllStringSubmatch(n.reason, -1) {
				for _, p := range strings.Fields(m[1]) {
					if !slices.Contains(pkgs, p) {
						pkgs = append(pkgs, p)
					}
				}
			}
		}
		if len(pkgs) > 0 {
			fmt.Fprintf(s.w, "to run the skipped tests that need programs: apt-get install %s\n", strings.Join(pkgs, " "))
		}
	}
	if sum.PackagesFailed > 0 && sum.Failed == 0 {
		fmt.Fprintf(s.w, "\n%d packages failed outside their tests: see their output above\n", sum.PackagesFailed)
	}
	if sum.Packages == 0 {
		fmt.Fprintf(s.w, "\nno test results read: is the input go test -json?\n")
	}
	pkgs := fmt.Sprintf("%d packages", sum.Packages)
	if sum.Packages == 1 {
		pkgs = "1 package"
	}
	if sum.PackagesFailed > 0 {
		pkgs += fmt.Sprintf(" (%d failed)", sum.PackagesFailed)
	}
	fmt.Fprintf(s.w, "summary: %s, %d passed, %d failed, %d skipped\n", pkgs, sum.Passed, sum.Failed, sum.Skipped)
}

func suffix(reason string) string {
	if reason == "" {
		return ""
	}
	return ": " + reason
}
