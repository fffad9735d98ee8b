package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

func main() { os.Exit(run()) }

func run() int {
	rev := flag.String("rev", "main", "git revision to compare the working tree with")
	runs := flag.Int("runs", 3, "runs of each binary")
	goCmd := flag.String("go", "go", "the go command that builds both binaries")
	flag.Usage = func() {
		fmt.Fprintln(flag.CommandLine.Output(), "usage: benchcompare [-rev REV] [-runs N] [-go GO] -- BENCH-INDEX-ARGS...")
		flag.PrintDefaults()
	}
	flag.Parse()
	if *runs < 1 {
		fmt.Fprintf(os.Stderr, "benchcompare: -runs must be 1 or more, got %d\n", *runs)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := compare(ctx, *goCmd, *rev, *runs, flag.Args()); err != nil {
		fmt.Fprintf(os.Stderr, "benchcompare: %v\n", err)
		return 1
	}
	return 0
}

// compare builds both binaries in a temporary directory, runs them and
// prints the table.
func compare(ctx context.Context, goCmd, rev string, runs int, args []string) error {
	top, err := output(ctx, "", "git", "rev-parse", "--show-toplevel")
	if err != nil {
		return err
	}
	commit, err := output(ctx, top, "git", "rev-parse", "--verify", "--quiet", "--short", rev+"^{commit}")
	if err != nil {
		return fmt.Errorf("revision %q: %w", rev, err)
	}
	dir, err := os.MkdirTemp("", "benchcompare-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)

	label := rev + " " + commit
	if strings.HasPrefix(commit, rev) || strings.HasPrefix(rev, commit) {
		label = commit // REV was a commit id already
	}
	sides := []*side{
		{name: "before (" + label + ")", bin: filepath.Join(dir, "before")},
		{name: "after (working tree)", bin: filepath.Join(dir, "after")},
	}
	src := filepath.Join(dir, "src")
	if err := extract(ctx, top, commit, src); err != nil {
		return fmt.Errorf("extract %s: %w", rev, err)
	}
	for i, tree := range []string{src, top} {
		// -buildvcs=false: the extracted tree has no .git to stamp from.
		if err := runCmd(ctx, tree, nil, goCmd, "build", "-buildvcs=false", "-o", sides[i].bin, "./cmd/router"); err != nil {
			return fmt.Errorf("build %s: %w", sides[i].name, err)
		}
	}

	for n := range runs {
		for _, s := range sides {
			start := time.Now()
			var out bytes.Buffer
			if err := runCmd(ctx, "", &out, s.bin, append([]string{"bench", "index"}, args...)...); err != nil {
				return fmt.Errorf("%s, run %d: %w", s.name, n+1, err)
			}
			r, err := parseResult(out.Bytes())
			if err != nil {
				return fmt.Errorf("%s, run %d: %w", s.name, n+1, err)
			}
			s.samples = append(s.samples, r)
			fmt.Fprintf(os.Stderr, "run %d/%d %s: mixed %s block-ops/s (%.1fs)\n",
				n+1, runs, s.name, figures[0].format(r[0]), time.Since(start).Seconds())
		}
	}
	what := fmt.Sprintf("medians of %d runs of each, run alternately", runs)
	if runs == 1 {
		what = "one run of each"
	}
	title := fmt.Sprintf("router bench index %s: %s", strings.Join(args, " "), what)
	return writeTable(os.Stdout, title, sides[0], sides[1])
}

// extract writes the tree of commit into dir, through a tar file in dir's
// parent.
func extract(ctx context.Context, top, commit, dir string) error {
	tarFile := dir + ".tar"
	if err := runCmd(ctx, top, nil, "git", "archive", "--format=tar", "-o", tarFile, commit); err != nil {
		return err
	}
	if err := os.Mkdir(dir, 0o755); err != nil {
		return err
	}
	return runCmd(ctx, "", nil, "tar", "-x", "-f", tarFile, "-C", dir)
}

// runCmd runs name with args in dir ("" for the working directory), with
// standard output to stdout (standard error if nil) and standard error to
// standard error.
func runCmd(ctx context.Context, dir string, stdout io.Writer, name string, args ...string) error {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = stdout, os.Stderr
	if stdout == nil {
		cmd.Stdout = os.Stderr
	}
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s %s: %w", name, strings.Join(args, " "), err)
	}
	return nil
}

// output runs name with args in dir and returns its standard output, trimmed.
func output(ctx context.Context, dir, name string, args ...string) (string, error) {
	var out bytes.Buffer
	if err := runCmd(ctx, dir, &out, name, args...); err != nil {
		return "", err
	}
	return strings.TrimSpace(out.String()), nil
}
