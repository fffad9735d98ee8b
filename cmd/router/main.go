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

func main() { os.Exit(run(os.Args, os.Stdout, os.Stderr)) }

// run executes the command line and maps its error to an exit status.
func run(args []string, stdout, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := newApp(stdout, stderr).RunContext(ctx, args); err != nil {
		var exit cli.ExitCoder
		if errors.As(err, &exit) {
			if msg := err.Error(); msg != "" {
				fmt.Fprintln(stderr, "router:", msg)
			}
			return exit.ExitCode()
		}
		fmt.Fprintln(stderr, "router:", err)
		return 1
	}
	return 0
}

// newApp builds the command tree. Output goes to the injected writers so that
// tests can run commands in-process.
func newApp(stdout, stderr io.Writer) *cli.App {
	return &cli.App{
		Name:      "router",
		Usage:     "KV-aware router for LLM inference, a drop-in peer of Dynamo's KV router",
		Writer:    stdout,
		ErrWriter: stderr,
		// Errors are printed once, by run.
		ExitErrHandler: func(*cli.Context, error) {},
		Commands: []*cli.Command{
			hashCommand(),
			benchCommand(),
		},
	}
}

// usageError marks an error in the command line (exit status 2).
func usageError(format string, args ...any) error {
	return cli.Exit(fmt.Sprintf(format, args...), 2)
}
