// Command router is a KV-aware router for LLM inference, wire compatible with
// NVIDIA Dynamo's KV router.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/urfave/cli/v2"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run executes the command line until ctx ends and maps its error to an exit
// status: 0 on success or a clean shutdown, 2 for a bad command line, 1 for
// anything else.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if err := newApp(stdout, stderr).RunContext(ctx, args); err != nil {
		var exit cli.ExitCoder
		if errors.As(err, &exit) {
			if msg := err.Error(); msg != "" {
				fmt.Fprintln(stderr, "router:", msg)
			}
			return exitCode(exit)
		}
		fmt.Fprintln(stderr, "router:", err)
		return 1
	}
	return 0
}

// exitCode is err's exit status. urfave/cli exits 3 when help is asked for a
// topic that does not exist ("router serve -h 0"): a bad command line like
// any other, so 2.
func exitCode(err cli.ExitCoder) int {
	if code := err.ExitCode(); code != 3 {
		return code
	}
	return 2
}

// newApp builds the command tree. Output goes to the injected writers so that
// tests can run commands in-process.
func newApp(stdout, stderr io.Writer) *cli.App {
	cmds := []*cli.Command{
		serveCommand(),
		requestCommand(),
		hashCommand(),
		benchCommand(),
		simCommand(),
		replayCommand(),
		compareCommand(),
	}
	// Flags that do not parse are reported alike by every command, with
	// the values out of range of the commands that check them (usage.go).
	reportProblems("", cmds, map[string]flagCheck{"serve": checkServe})
	return &cli.App{
		Name:      "router",
		Usage:     "KV-aware router for LLM inference, a drop-in peer of Dynamo's KV router",
		Writer:    stdout,
		ErrWriter: stderr,
		// Errors are printed once, by run.
		ExitErrHandler: func(*cli.Context, error) {},
		OnUsageError: func(_ *cli.Context, err error, _ bool) error {
			return usageProblems("", nil, nil, err, nil)
		},
		Commands: cmds,
	}
}

// usageError marks an error in the command line (exit status 2).
func usageError(format string, args ...any) error {
	return cli.Exit(fmt.Sprintf(format, args...), 2)
}
