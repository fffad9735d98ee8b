package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"net"
	"net/url"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/kvrouter/router/internal/embedded"
	"github.com/kvrouter/router/metrics"
	"github.com/kvrouter/router/replicas"
	"github.com/kvrouter/router/stack"
	"github.com/kvrouter/router/workers"
)

// serve runs the daemon until ctx ends (SIGINT/SIGTERM) or a component
// fails. Startup failures return a one-line reason.
func serve(ctx context.Context, cfg serveConfig, log *slog.Logger, out io.Writer) error {
	if cfg.Embedded {
		stop, err := startEmbedded(&cfg, log)
		if err != nil {
			return exitError("serve: %v", err)
		}
		defer stop()
	}

	conns := &connState{closed: make(chan struct{})}
	nc, err := connectNATS(cfg.NATSURL, log, conns)
	if err != nil {
		return exitError("serve: %v", err)
	}
	defer nc.Close()

	// Without etcd (an empty --etcd-endpoints), the router has no lease to name
	// it, and no replica presence: its id is drawn at random, in the range
	// of etcd's lease ids.
	var (
		etcd     *clientv3.Client
		lease    *clientv3.LeaseGrantResponse
		routerID = uint64(rand.Int64N(math.MaxInt64)) + 1
	)
	if !cfg.Workers.NoEtcd {
		if etcd, err = connectEtcd(ctx, cfg.EtcdEndpoints); err != nil {
			return exitError("serve: %v", err)
		}
		defer etcd.Close()
		if lease, err = etcd.Grant(ctx, int64(cfg.LeaseTTL/time.Second)); err != nil {
			return exitError("serve: etcd %v: grant the router's lease: %v", cfg.EtcdEndpoints, err)
		}
		routerID = uint64(lease.ID)
	}
	log = log.With("router_id", routerID)
	if cfg.Workers.NoEtcd {
		log.Info("running without etcd (--etcd-endpoints ''): workers come from the workers file only, replica presence is off, the router id is random",
			"workers_file", cfg.WorkersFile)
	}

	promReg := prometheus.NewRegistry()
	promReg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m, err := metrics.New(promReg, metrics.Config{Namespace: cfg.Namespace, Component: cfg.RouterComponent, RouterID: routerID})
	if err != nil {
		return exitError("serve: metrics: %v", err)
	}
	var rng *rand.Rand
	if cfg.Seed != 0 {
		rng = rand.New(rand.NewPCG(cfg.Seed, cfg.Seed))
	}
	scfg := stack.Config{
		RouterID: routerID, MaxIndexEntries: cfg.MaxIndexEntries, KVEvents: cfg.KVEvents,
		Events: cfg.Events, Workers: cfg.Workers, Scheduler: cfg.Scheduler, Service: cfg.Service, Rand: rng,
		Gatherer: promReg, EventPlane: cfg.EventPlane,
	}
	if cfg.SystemEnabled {
		sc := cfg.statusConfig()
		scfg.Status = &sc
	}
	if cfg.HTTPEnabled {
		hc := cfg.httpConfig()
		scfg.HTTP = &hc
	}
	if cfg.WorkersFile != "" {
		// SIGHUP reads the workers file again; without one, SIGHUP keeps
		// its default action.
		hup := make(chan os.Signal, 1)
		signal.Notify(hup, syscall.SIGHUP)
		defer signal.Stop(hup)
		scfg.WorkersFileReload = hup
	}
	var presence *replicas.Presence
	if etcd != nil {
		if presence, err = replicas.New(replicas.Config{Namespace: cfg.Namespace, Component: cfg.RouterComponent, RouterID: routerID,
			LeaseTTL: cfg.LeaseTTL, ReplicaSync: cfg.Scheduler.ReplicaSync}, etcd, lease.ID, m, log); err != nil {
			return exitError("serve: %v", err)
		}
	}
	st, err := stack.New(scfg, nc, etcd, m, log)
	if le, ok := errors.AsType[*stack.ListenError](err); ok && errors.Is(err, syscall.EADDRINUSE) {
		flag := "--system-port (DYN_SYSTEM_PORT"
		if le.Server == stack.ServerHTTP {
			flag = "--http-port (DYN_ROUTER_HTTP_PORT"
		}
		return exitError("serve: %v; stop what holds the port or choose another with %s; 0 picks a free port)", err, flag)
	}
	if err != nil {
		return exitError("serve: %v", err)
	}
	if addr := st.StatusAddr(); addr != "" {
		log.Info("status server listening", "addr", addr)
	}
	if addr := st.HTTPAddr(); addr != "" {
		log.Info("http api listening", "addr", addr)
	}

	// One deadline for the whole stop, from the signal on (shutdown.go).
	stop, gctx := newStopper(ctx, cfg.ShutdownTimeout, log)
	defer stop.release()
	if presence != nil {
		stop.Go(func() error { return presence.Run(gctx) })
	}
	stop.Go(func() error { return st.Run(gctx) })

	if cfg.Embedded {
		printNextSteps(out, cfg, st.StatusAddr())
	}
	log.Info("router started", "namespace", cfg.Namespace, "component", cfg.Component,
		"prefill_component", cfg.PrefillComponent, "nats", cfg.NATSURL, "etcd", cfg.EtcdEndpoints)

	err = stop.wait(nc.Close)
	deadline := stop.Deadline()
	// The components have stopped taking requests and answered what they
	// held; let NATS flush what it still owes, until the deadline.
	if derr := nc.Drain(); derr != nil && !errors.Is(derr, nats.ErrConnectionClosed) {
		log.Warn("drain nats", "err", derr)
	}
	select {
	case <-conns.closed:
	case <-time.After(time.Until(deadline)):
		log.Warn("nats drain cut short at the shutdown deadline", "shutdown_timeout", cfg.ShutdownTimeout)
		nc.Close()
	}
	// Best effort, with the time left: the lease expires anyway.
	if presence != nil {
		rctx, cancel := context.WithDeadline(context.Background(), deadline)
		_, _ = etcd.Revoke(rctx, presence.Lease())
		cancel()
	}
	if err != nil && !errors.Is(err, context.Canceled) {
		return exitError("serve: %v", err)
	}
	log.Info("router stopped")
	return nil
}

// connState tracks the router's NATS connection: closed once a drain has
// finished. (/health reads the connection's own status.)
type connState struct {
	closed chan struct{}
}

// connectNATS connects, failing fast if NATS is not there at start and
// reconnecting forever after that.
func connectNATS(u string, log *slog.Logger, st *connState) (*nats.Conn, error) {
	nc, err := nats.Connect(u,
		nats.Name("kvrouter"),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250*time.Millisecond),
		nats.DisconnectErrHandler(func(nc *nats.Conn, err error) {
			if !nc.IsDraining() && !nc.IsClosed() {
				log.Warn("nats disconnected, reconnecting", "err", err)
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			log.Info("nats reconnected", "url", nc.ConnectedUrlRedacted())
		}),
		nats.ClosedHandler(func(*nats.Conn) {
			close(st.closed)
		}),
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			subject := ""
			if sub != nil {
				subject = sub.Subject
			}
			log.Warn("nats async error", "subject", subject, "err", err)
		}),
	)
	if err != nil {
		return nil, fmt.Errorf("cannot reach NATS at %s: %w", u, err)
	}
	return nc, nil
}

// connectEtcd connects and checks that etcd answers.
func connectEtcd(ctx context.Context, endpoints []string) (*clientv3.Client, error) {
	c, err := clientv3.New(clientv3.Config{
		Endpoints:   endpoints,
		DialTimeout: 5 * time.Second,
		// The router reports etcd's state itself; the client's own
		// zap warnings on every retry would drown the log.
		Logger: zap.NewNop(),
	})
	if err != nil {
		return nil, fmt.Errorf("etcd %v: %w", endpoints, err)
	}
	sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, err := c.Status(sctx, endpoints[0]); err != nil {
		c.Close()
		return nil, fmt.Errorf("cannot reach etcd at %v: %w", endpoints, err)
	}
	return c, nil
}

// startEmbedded runs NATS and etcd in the process on the configured
// addresses and rewrites cfg to point at them.
func startEmbedded(cfg *serveConfig, log *slog.Logger) (stop func(), err error) {
	dir := cfg.DataDir
	cleanup := func() {}
	if dir == "" {
		dir, err = os.MkdirTemp("", "kvrouter-")
		if err != nil {
			return nil, fmt.Errorf("embedded: data directory: %w", err)
		}
		cleanup = func() { os.RemoveAll(dir) }
	}
	nu, err := url.Parse(cfg.NATSURL)
	if err != nil {
		cleanup()
		return nil, fmt.Errorf("embedded: --nats-url: %w", err)
	}
	port := 4222
	if p := nu.Port(); p != "" {
		port, _ = strconv.Atoi(p)
	}
	if port == 0 {
		port = -1 // NATS's "any free port"
	}
	// A port in use is the usual first-hour failure (a second `make run`, a
	// nats-server or etcd service): say which flag moves it.
	inUse := func(err error, flag, what, scheme, host string) error {
		if !errors.Is(err, syscall.EADDRINUSE) {
			return fmt.Errorf("embedded: %w", err)
		}
		return fmt.Errorf("embedded: %w; stop what holds the port (another router, or %s) or choose another with %s (%s://%s picks a free port)",
			err, what, flag, scheme, net.JoinHostPort(host, "0"))
	}
	ns, err := embedded.StartNATS(embedded.NATSConfig{Host: nu.Hostname(), Port: port, JetStream: true, StoreDir: dir + "/nats"})
	if err != nil {
		cleanup()
		return nil, inUse(err, "--nats-url", "a nats-server service", "nats", nu.Hostname())
	}
	eu, err := url.Parse(cfg.EtcdEndpoints[0])
	if err != nil {
		ns.Close()
		cleanup()
		return nil, fmt.Errorf("embedded: --etcd-endpoints: %w", err)
	}
	peer := "http://" + net.JoinHostPort(eu.Hostname(), "0")
	es, err := embedded.StartEtcd(embedded.EtcdConfig{ClientURL: cfg.EtcdEndpoints[0], PeerURL: peer, Dir: dir + "/etcd"})
	if err != nil {
		ns.Close()
		cleanup()
		return nil, inUse(err, "--etcd-endpoints", "an etcd service", "http", eu.Hostname())
	}
	cfg.NATSURL = ns.URL()
	cfg.EtcdEndpoints = []string{es.Endpoint()}
	log.Info("embedded NATS and etcd running", "nats", cfg.NATSURL, "etcd", es.Endpoint(), "data_dir", dir)
	return func() {
		es.Close()
		ns.Close()
		cleanup()
	}, nil
}

// printNextSteps tells a newcomer what to do with an embedded router: the
// README's quick tour, with the flags that this router's addresses and
// names need (none with make run's defaults).
func printNextSteps(out io.Writer, cfg serveConfig, statusAddr string) {
	metricsURL := "(status server off: set DYN_SYSTEM_PORT)"
	health := ""
	if statusAddr != "" {
		base := "http://" + loopbackAddr(statusAddr)
		metricsURL = base + "/metrics"
		health = "Health (a worker with another block size shows under \"degraded\"):\n  curl -s " + base + cfg.HealthPath + "\n"
	}
	var conn, names string
	if cfg.NATSURL != "nats://127.0.0.1:4222" {
		conn += " --nats-url " + cfg.NATSURL
	}
	if cfg.Namespace != "dynamo" {
		conn += " --namespace " + cfg.Namespace
	}
	if cfg.Component != "backend" {
		names += " --component " + cfg.Component
	}
	if cfg.RouterComponent != "router" {
		names += " --router-component " + cfg.RouterComponent
	}
	simFlags := conn
	if cfg.EtcdEndpoints[0] != "http://127.0.0.1:2379" {
		simFlags += " --etcd-endpoints " + cfg.EtcdEndpoints[0]
	}
	if cfg.Component != "backend" {
		simFlags += " --component " + cfg.Component
	}
	if cfg.Workers.BlockSize != workers.DefaultBlockSize {
		simFlags += " --block-size " + strconv.Itoa(cfg.Workers.BlockSize)
	}
	reqFlags := conn
	if cfg.RouterComponent != "router" {
		reqFlags += " --router-component " + cfg.RouterComponent
	}
	fmt.Fprintf(out, `
kvrouter is running with embedded NATS and etcd.
  NATS:    %s
  etcd:    %s
  metrics: %s

Try it in another terminal (the README's quick tour). Two simulated workers:
  bin/router sim --workers 2%s
Then, in a third, a prompt of 4 blocks, served once and routed again to the worker that holds it:
  P=$(seq %d | paste -sd, -)
  bin/router sim generate%s --token-ids $P
  bin/router request%s --token-ids $P --request-id again route
  bin/router request%s --request-id again mark_free
%sStop with Ctrl-C.
`, cfg.NATSURL, cfg.EtcdEndpoints[0], metricsURL,
		simFlags, 4*cfg.Workers.BlockSize, conn+names, reqFlags, reqFlags, health)
}

// loopbackAddr turns a wildcard listen address into one a local client can
// use.
func loopbackAddr(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
		host = "localhost"
	}
	return net.JoinHostPort(host, port)
}
