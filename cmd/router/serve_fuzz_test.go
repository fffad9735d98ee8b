package main

import (
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/urfave/cli/v2"
)

// FuzzServeFlags feeds arbitrary command lines to `serve`'s flag parsing and
// validation, through the same problem report as the router's: it must
// never panic; a configuration it accepts must be one every component
// accepts too; and a command line it rejects is rejected with one line per
// problem, each naming its flag first, once.
func FuzzServeFlags(f *testing.F) {
	for _, seed := range []string{
		"",
		"--router-block-size 16 --router-temperature 0.5",
		"--router-queue-threshold 4 --router-queue-policy wspt",
		"--endpoint dynamo.backend.generate --system-port 0",
		"--http-port 0 --http-host ::1 --router-queue-timeout 2h",
		"--router-mode random --no-router-kv-events --router-ttl-secs 5",
		"--nats-url nats://x:1 --etcd-endpoints http://a:1,http://b:2",
		"--router-block-size -3 --router-event-threads 0",
		"--active-prefill-tokens-threshold-frac 1e309",
		"--router-host-cache-hit-weight 0.5 --router-disk-cache-hit-weight 2",
		"--router-block-size x --router-mode y --block-size --lease-ttl",
		"-router-temperature=warm ---x -= --system-port 0 --system-live-path /health",
		"  h 00", // once read as the help subcommand (exit 3)
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, line string) {
		cmds := []*cli.Command{{
			Name:  "serve",
			Flags: serveFlags(),
			Action: func(c *cli.Context) error {
				cfg, err := parseServe(c)
				if err != nil {
					return listProblems("serve", lines(err))
				}
				checks := map[string]error{
					"events": cfg.Events.Validate(), "workers": cfg.Workers.Validate(),
					"scheduler": cfg.Scheduler.Validate(), "service": cfg.Service.Validate(),
				}
				if cfg.SystemEnabled {
					checks["status"] = cfg.statusConfig().Validate()
				}
				if cfg.HTTPEnabled {
					checks["http"] = cfg.httpConfig().Validate()
				}
				for name, verr := range checks {
					if verr != nil {
						t.Fatalf("serve accepted %q but %s rejects it: %v", line, name, verr)
					}
				}
				return nil
			},
		}}
		reportProblems("", cmds, map[string]flagCheck{"serve": checkServe})
		app := &cli.App{
			Writer: io.Discard, ErrWriter: io.Discard,
			ExitErrHandler: func(*cli.Context, error) {},
			Commands:       cmds,
		}
		err := app.Run(append([]string{"router", "serve"}, strings.Fields(line)...))
		if err == nil {
			return
		}
		var exit cli.ExitCoder
		if !errors.As(err, &exit) || exitCode(exit) != 2 {
			t.Fatalf("%q: error %v is not a usage error", line, err)
		}
		if exit.ExitCode() == 3 {
			return // urfave/cli's own help, asked for a topic it lacks ("-h 0"): no flag to name
		}
		msg, ok := strings.CutPrefix(err.Error(), "serve: ")
		if !ok {
			t.Fatalf("%q: error %q does not name the command", line, err)
		}
		problems := []string{msg}
		if head, rest, several := strings.Cut(msg, " problems:\n  "); several && !strings.Contains(head, " ") {
			problems = strings.Split(rest, "\n  ")
		}
		for _, p := range problems {
			flag, _, _ := strings.Cut(p, ": ")
			if !strings.HasPrefix(flag, "-") || strings.Contains(p, flag+": "+flag+":") {
				t.Errorf("%q: problem %q does not name its flag first, once", line, p)
			}
			if strings.Contains(p, "\n") {
				t.Errorf("%q: problem %q spans lines", line, p)
			}
		}
	})
}
