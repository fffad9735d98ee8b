package main

import (
	"io"
	"strings"
	"testing"

	"github.com/urfave/cli/v2"
)

// FuzzServeFlags feeds arbitrary command lines to `serve`'s flag parsing and
// validation: it must never panic, and a configuration it accepts must be
// one every component accepts too.
func FuzzServeFlags(f *testing.F) {
	for _, seed := range []string{
		"",
		"--router-block-size 16 --router-temperature 0.5",
		"--router-queue-threshold 4 --router-queue-policy wspt",
		"--endpoint dynamo.backend.generate --system-port 0",
		"--router-mode random --no-router-kv-events --router-ttl-secs 5",
		"--nats-url nats://x:1 --etcd-endpoints http://a:1,http://b:2",
		"--router-block-size -3 --router-event-threads 0",
		"--active-prefill-tokens-threshold-frac 1e309",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, line string) {
		app := &cli.App{
			Writer: io.Discard, ErrWriter: io.Discard,
			ExitErrHandler: func(*cli.Context, error) {},
			Commands: []*cli.Command{{
				Name:  "serve",
				Flags: serveFlags(),
				Action: func(c *cli.Context) error {
					cfg, err := parseServe(c)
					if err != nil {
						return err
					}
					for name, verr := range map[string]error{
						"events": cfg.Events.Validate(), "workers": cfg.Workers.Validate(),
						"scheduler": cfg.Scheduler.Validate(), "service": cfg.Service.Validate(),
					} {
						if verr != nil {
							t.Fatalf("serve accepted %q but %s rejects it: %v", line, name, verr)
						}
					}
					return nil
				},
			}},
		}
		_ = app.Run(append([]string{"router", "serve"}, strings.Fields(line)...))
	})
}
