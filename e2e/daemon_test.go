package e2e

import (
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestDaemonRidesOutNATSOutage runs the router against real nats-server and
// etcd processes, kills NATS, and checks that the router says so, recovers
// when NATS is back, and exits 0 on SIGTERM.
func TestDaemonRidesOutNATSOutage(t *testing.T) {
	bins := need(t, natsServer, etcdServer, promtool)
	c := newCluster(t, bins)
	c.waitHealth(200, 60*time.Second)

	code, body := c.get("/metrics")
	if code != 200 || !strings.Contains(body, "dynamo_component_uptime_seconds") {
		t.Fatalf("/metrics: %d", code)
	}
	checkExposition(t, bins, body)

	c.nats.Kill()
	c.waitHealth(503, 30*time.Second)
	if _, eps := c.health(); eps["nats"] != "notready" {
		t.Fatalf("health endpoints during the outage: %v, want nats notready", eps)
	}
	c.startNATS()
	c.waitHealth(200, 60*time.Second)

	c.router.Signal(syscall.SIGTERM)
	if code := c.router.Wait(30 * time.Second); code != 0 {
		t.Fatalf("router exit code %d after SIGTERM, want 0", code)
	}
}

// knownPromtoolExceptions are promtool complaints about names that Dynamo
// compatibility requires (docs/metrics.md, "Lint exceptions").
var knownPromtoolExceptions = []string{
	"dynamo_router_overhead_",                  // milliseconds, Dynamo's unit
	"dynamo_component_kv_cache_events_applied", // a counter without _total, Dynamo's name
}

// promtoolProblems returns promtool's complaints that are not known
// exceptions.
func promtoolProblems(out string) []string {
	var problems []string
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if line == "" {
			continue
		}
		known := false
		for _, k := range knownPromtoolExceptions {
			known = known || strings.HasPrefix(line, k)
		}
		if !known {
			problems = append(problems, line)
		}
	}
	return problems
}
