package main

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/urfave/cli/v2"
)

// serveConfig is everything `router serve` is told, before it is split into
// the components' own configurations.
type serveConfig struct {
	NATSURL           string
	EtcdEndpoints     []string
	Namespace         string
	Component         string
	PrefillComponent  string
	RouterComponent   string
	Embedded          bool
	DataDir           string
	SystemHost        string
	SystemPort        int
	SystemEnabled     bool
	HealthPath        string
	LivePath          string
	StartingStatus    string
	LogFormat         string
	LogLevel          string
	ShutdownTimeout   time.Duration
	LeaseTTL          time.Duration
	MaxIndexEntries   int
	MinInitialWorkers int
}

// serveFlags are the flags of `router serve`, each with its environment
// variable; Dynamo's names where Dynamo has them.
func serveFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "nats-url", Value: "nats://127.0.0.1:4222", EnvVars: []string{"NATS_SERVER"}, Usage: "NATS server URL; with --embedded, where the embedded NATS listens"},
		&cli.StringFlag{Name: "etcd-endpoints", Value: "http://127.0.0.1:2379", EnvVars: []string{"ETCD_ENDPOINTS"}, Usage: "comma-separated etcd endpoints; with --embedded, where the embedded etcd listens"},
		&cli.StringFlag{Name: "namespace", Value: "dynamo", EnvVars: []string{"DYN_NAMESPACE"}, Usage: "Dynamo namespace of the workers and the router"},
		&cli.StringFlag{Name: "component", Value: "backend", EnvVars: []string{"DYN_COMPONENT"}, Usage: "component of aggregated/decode workers"},
		&cli.StringFlag{Name: "prefill-component", Value: "prefill", EnvVars: []string{"DYN_PREFILL_COMPONENT"}, Usage: "component of prefill workers"},
		&cli.StringFlag{Name: "router-component", Value: "router", EnvVars: []string{"DYN_ROUTER_COMPONENT"}, Usage: "the router's own component: its NATS subjects, queue group and metrics labels"},
		&cli.StringFlag{Name: "endpoint", EnvVars: []string{"DYN_ENDPOINT"}, Usage: "workers' endpoint as Dynamo spells it, ns.component.endpoint; sets --namespace and --component"},
		&cli.BoolFlag{Name: "embedded", EnvVars: []string{"DYN_ROUTER_EMBEDDED"}, Usage: "also run NATS (with JetStream) and etcd inside the process, on the addresses of --nats-url and --etcd-endpoints"},
		&cli.StringFlag{Name: "data-dir", EnvVars: []string{"DYN_ROUTER_DATA_DIR"}, Usage: "with --embedded, where NATS and etcd keep their data (default: a temporary directory, removed at exit)"},
		&cli.StringFlag{Name: "system-host", Value: "0.0.0.0", EnvVars: []string{"DYN_SYSTEM_HOST"}, Usage: "status server host"},
		&cli.IntFlag{Name: "system-port", Value: -1, EnvVars: []string{"DYN_SYSTEM_PORT"}, Usage: "status server port (/metrics, /health, /live); 0 picks a free port; unset (-1) turns the server off, as in Dynamo"},
		&cli.StringFlag{Name: "system-health-path", Value: "/health", EnvVars: []string{"DYN_SYSTEM_HEALTH_PATH"}, Usage: "path of the health probe"},
		&cli.StringFlag{Name: "system-live-path", Value: "/live", EnvVars: []string{"DYN_SYSTEM_LIVE_PATH"}, Usage: "path of the liveness probe"},
		&cli.StringFlag{Name: "system-starting-health-status", Value: "notready", EnvVars: []string{"DYN_SYSTEM_STARTING_HEALTH_STATUS"}, Usage: "health reported until every check has passed once: notready or ready"},
		&cli.StringFlag{Name: "log-format", Value: "auto", EnvVars: []string{"DYN_LOG_FORMAT"}, Usage: "auto (colour text on a terminal, JSON otherwise), text or json"},
		&cli.StringFlag{Name: "log-level", Value: "info", EnvVars: []string{"DYN_LOG_LEVEL"}, Usage: "debug, info, warn or error"},
		&cli.DurationFlag{Name: "shutdown-timeout", Value: 10 * time.Second, EnvVars: []string{"DYN_ROUTER_SHUTDOWN_TIMEOUT"}, Usage: "how long a SIGINT/SIGTERM shutdown may take before the router gives up waiting (1s..5m)"},
		&cli.DurationFlag{Name: "lease-ttl", Value: 10 * time.Second, EnvVars: []string{"DYN_ROUTER_LEASE_TTL"}, Usage: "TTL of the router's own etcd lease, which names its instance id (2s..5m)"},
		&cli.IntFlag{Name: "router-max-index-entries", Value: 0, EnvVars: []string{"DYN_ROUTER_MAX_INDEX_ENTRIES"}, Usage: "cap on (worker, block) entries in the KV index; past it the least recently used prefixes are evicted; 0 means no cap"},
		&cli.IntFlag{Name: "router-min-initial-workers", Value: 0, EnvVars: []string{"DYN_ROUTER_MIN_INITIAL_WORKERS"}, Usage: "not ready until this many workers are registered"},
	}
}

// parseServe reads the flags into a serveConfig and validates it, returning
// every problem, one per line.
func parseServe(c *cli.Context) (serveConfig, error) {
	cfg := serveConfig{
		NATSURL:           c.String("nats-url"),
		Namespace:         c.String("namespace"),
		Component:         c.String("component"),
		PrefillComponent:  c.String("prefill-component"),
		RouterComponent:   c.String("router-component"),
		Embedded:          c.Bool("embedded"),
		DataDir:           c.String("data-dir"),
		SystemHost:        c.String("system-host"),
		SystemPort:        c.Int("system-port"),
		HealthPath:        c.String("system-health-path"),
		LivePath:          c.String("system-live-path"),
		StartingStatus:    c.String("system-starting-health-status"),
		LogFormat:         c.String("log-format"),
		LogLevel:          c.String("log-level"),
		ShutdownTimeout:   c.Duration("shutdown-timeout"),
		LeaseTTL:          c.Duration("lease-ttl"),
		MaxIndexEntries:   c.Int("router-max-index-entries"),
		MinInitialWorkers: c.Int("router-min-initial-workers"),
	}
	for _, ep := range strings.Split(c.String("etcd-endpoints"), ",") {
		if ep = strings.TrimSpace(ep); ep != "" {
			cfg.EtcdEndpoints = append(cfg.EtcdEndpoints, ep)
		}
	}
	var errs []error
	if ep := c.String("endpoint"); ep != "" {
		parts := strings.Split(ep, ".")
		if len(parts) != 3 || parts[0] == "" || parts[1] == "" || parts[2] == "" {
			errs = append(errs, fmt.Errorf("--endpoint: %q is not ns.component.endpoint", ep))
		} else {
			cfg.Namespace, cfg.Component = parts[0], parts[1]
		}
	}
	cfg.SystemEnabled = cfg.SystemPort >= 0
	errs = append(errs, cfg.validate()...)
	return cfg, errors.Join(errs...)
}

// validate checks what no component checks itself.
func (cfg serveConfig) validate() []error {
	var errs []error
	if u, err := url.Parse(cfg.NATSURL); err != nil || u.Host == "" || (u.Scheme != "nats" && u.Scheme != "tls") {
		errs = append(errs, fmt.Errorf("--nats-url: %q is not a nats:// URL", cfg.NATSURL))
	}
	if len(cfg.EtcdEndpoints) == 0 {
		errs = append(errs, errors.New("--etcd-endpoints: no endpoint given"))
	}
	for _, ep := range cfg.EtcdEndpoints {
		if u, err := url.Parse(ep); err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
			errs = append(errs, fmt.Errorf("--etcd-endpoints: %q is not an http:// URL", ep))
		}
	}
	for flag, v := range map[string]string{"--namespace": cfg.Namespace, "--component": cfg.Component,
		"--prefill-component": cfg.PrefillComponent, "--router-component": cfg.RouterComponent} {
		if !validName(v) {
			errs = append(errs, fmt.Errorf("%s: %q must be letters, digits, '-' or '_'", flag, v))
		}
	}
	if cfg.Component == cfg.PrefillComponent {
		errs = append(errs, fmt.Errorf("--prefill-component: %q is also the worker component", cfg.PrefillComponent))
	}
	if cfg.SystemPort < -1 || cfg.SystemPort > 65535 {
		errs = append(errs, fmt.Errorf("--system-port: %d is outside 0..65535 (or -1 for off)", cfg.SystemPort))
	}
	if cfg.ShutdownTimeout < time.Second || cfg.ShutdownTimeout > 5*time.Minute {
		errs = append(errs, fmt.Errorf("--shutdown-timeout: %v is outside 1s..5m", cfg.ShutdownTimeout))
	}
	if cfg.LeaseTTL < 2*time.Second || cfg.LeaseTTL > 5*time.Minute {
		errs = append(errs, fmt.Errorf("--lease-ttl: %v is outside 2s..5m", cfg.LeaseTTL))
	}
	if cfg.MaxIndexEntries < 0 {
		errs = append(errs, fmt.Errorf("--router-max-index-entries: %d is negative (0 means no cap)", cfg.MaxIndexEntries))
	}
	if cfg.MinInitialWorkers < 0 {
		errs = append(errs, fmt.Errorf("--router-min-initial-workers: %d is negative", cfg.MinInitialWorkers))
	}
	if cfg.DataDir != "" && !cfg.Embedded {
		errs = append(errs, errors.New("--data-dir: only meaningful with --embedded"))
	}
	return errs
}

// validName reports whether s is a usable namespace or component name: it
// becomes part of NATS subjects and etcd keys.
func validName(s string) bool {
	if s == "" || len(s) > 128 {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
			return false
		}
	}
	return true
}

func serveCommand() *cli.Command {
	return &cli.Command{
		Name:  "serve",
		Usage: "run the router daemon",
		Description: "Subscribes to the workers' KV events and load on NATS, discovers workers in etcd, and answers " +
			"route, mark_prefill, mark_free, overlap_scores and potential_loads requests on NATS. " +
			"With --embedded it also runs NATS and etcd itself, so it needs nothing installed.",
		Flags: serveFlags(),
		OnUsageError: func(_ *cli.Context, err error, _ bool) error {
			return usageError("serve: %v", err)
		},
		Action: func(c *cli.Context) error {
			if c.NArg() > 0 {
				return usageError("serve: unexpected argument %q", c.Args().First())
			}
			cfg, err := parseServe(c)
			if err != nil {
				return usageError("serve: invalid configuration:\n  %s", strings.ReplaceAll(err.Error(), "\n", "\n  "))
			}
			log, err := newLogger(c.App.ErrWriter, cfg.LogFormat, cfg.LogLevel)
			if err != nil {
				return usageError("serve: %v", err)
			}
			return serve(c.Context, cfg, log, c.App.Writer)
		},
	}
}

// exitError is a failure at run time (exit status 1) with a one-line reason.
func exitError(format string, args ...any) error {
	return cli.Exit(fmt.Sprintf(format, args...), 1)
}
