package e2e

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kvrouter/router/internal/testutil"
)

// TestShutdownWithinTimeoutWithNATSDown kills nats-server under a running
// router, then stops the router with SIGTERM: it must exit 0 within
// --shutdown-timeout, although none of its NATS drains and flushes can
// finish (docs/api.md §6).
func TestShutdownWithinTimeoutWithNATSDown(t *testing.T) {
	const (
		timeout = 3 * time.Second
		// margin covers what follows the deadline: closing the clients
		// and the process exit of a race-built binary.
		margin = time.Second
	)
	// The race-built router would otherwise sleep 1s at exit (the race
	// runtime's default atexit_sleep_ms), which is no part of its shutdown.
	bins := need(t, natsServer, etcdServer)
	t.Setenv("GORACE", "atexit_sleep_ms=0")
	c := newCluster(t, bins, "--shutdown-timeout", timeout.String())
	c.waitHealth(200, 60*time.Second)

	c.nats.Kill()
	c.waitHealth(503, 30*time.Second) // the router knows NATS is gone
	begin := time.Now()
	c.router.Signal(syscall.SIGTERM)
	code := c.router.Wait(timeout + 30*time.Second)
	took := time.Since(begin)
	if code != 0 {
		t.Errorf("router exit code %d after SIGTERM, want 0", code)
	}
	if took > timeout+margin {
		t.Errorf("router took %v to exit with NATS down, want at most --shutdown-timeout %v (+%v)", took, timeout, margin)
	}
	// The drains were cut short at the deadline, and said so.
	if out := c.router.Output(); !strings.Contains(out, "cut short") {
		t.Errorf("no log line says a drain was cut short at the deadline")
	}
	t.Logf("shutdown with NATS down took %v (--shutdown-timeout %v)", took, timeout)
}

// healthBody is the JSON of /health (docs/api.md §5).
type healthBody struct {
	Status    string            `json:"status"`
	Endpoints map[string]string `json:"endpoints"`
	Problems  []string          `json:"problems"`
	Degraded  []string          `json:"degraded"`
}

// healthJSON fetches /health; code 0 means no answer.
func (c *routerProc) healthJSON() (int, healthBody) {
	code, body := c.get("/health")
	var h healthBody
	if code != 0 {
		if err := json.Unmarshal([]byte(body), &h); err != nil {
			c.t.Errorf("/health answered %d with %q: %v", code, body, err)
		}
	}
	return code, h
}

// etcdDegraded reports whether a /health body lists etcd as degraded.
func etcdDegraded(h healthBody) bool {
	return slices.ContainsFunc(h.Degraded, func(l string) bool { return strings.HasPrefix(l, "etcd: unreachable") })
}

// TestHealthReadyThroughEtcdOutage registers a worker, kills etcd for 30 s
// and checks, all along, that /health stays 200 with etcd listed as
// degraded and that routes are answered from the last known worker; the
// metrics say etcd is unreachable and how stale the workers are. Then etcd
// comes back on the same data, and the router finds it reachable again.
func TestHealthReadyThroughEtcdOutage(t *testing.T) {
	const (
		blockSize = 4
		outage    = 30 * time.Second
	)
	bins := need(t, natsServer, etcdServer)
	c := newCluster(t, bins, "--router-block-size", fmt.Sprint(blockSize),
		"--etcd-probe-interval", "500ms", "--etcd-timeout", "1s")
	c.waitHealth(200, 60*time.Second)
	f := newFleet(t, c, blockSize)
	w := f.register(64)
	p := f.newPrompt(1, 4*blockSize)
	testutil.Eventually(t, 30*time.Second, every(50*time.Millisecond, func() bool {
		var r routeReply
		return f.ask(t.Context(), "route", routeRequest{TokenIDs: p.tokens, Book: book(false)}, &r) == nil && r.WorkerID == w.id
	}), "worker %d never routed to", w.id)
	if v := samples(c.mustScrape(), "dynamo_component_router_etcd_reachable", nil); len(v) != 1 || v[0] != 1 {
		t.Fatalf("dynamo_component_router_etcd_reachable before the outage: %v, want [1]", v)
	}

	c.etcd.Kill()
	killed := time.Now()
	// Hold the outage for 30 s, probing and routing all along: 200 every
	// time, and etcd degraded once the router has noticed (its probe runs
	// every 500ms with a 1s timeout).
	var probes, routes int
	var noticed time.Duration
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for time.Since(killed) < outage {
		code, h := c.healthJSON()
		probes++
		if code != 200 || h.Status != "ready" || h.Endpoints["etcd"] != "ready" {
			t.Fatalf("/health %v into the etcd outage: %d %+v, want 200 ready", time.Since(killed).Round(time.Millisecond), code, h)
		}
		if etcdDegraded(h) && noticed == 0 {
			noticed = time.Since(killed)
		}
		var r routeReply
		if err := f.ask(t.Context(), "route", routeRequest{TokenIDs: p.tokens, Book: book(false)}, &r); err != nil || r.Error != nil || r.WorkerID != w.id {
			t.Fatalf("route %v into the etcd outage: %+v, %v; want worker %d", time.Since(killed).Round(time.Millisecond), r, err, w.id)
		}
		routes++
		<-tick.C
	}
	if noticed == 0 || noticed > 10*time.Second {
		t.Fatalf("etcd listed as degraded %v after it died, want within 10s", noticed)
	}
	code, h := c.healthJSON()
	if code != 200 || !etcdDegraded(h) || len(h.Problems) != 0 {
		t.Fatalf("/health at the end of the outage: %d %+v, want 200, etcd degraded, no problems", code, h)
	}
	fams := c.mustScrape()
	if v := samples(fams, "dynamo_component_router_etcd_reachable", nil); len(v) != 1 || v[0] != 0 {
		t.Errorf("dynamo_component_router_etcd_reachable during the outage: %v, want [0]", v)
	}
	if v := samples(fams, "dynamo_component_router_workers_staleness_seconds", nil); len(v) != 1 || v[0] < (outage-noticed).Seconds()-1 || v[0] > outage.Seconds()+5 {
		t.Errorf("dynamo_component_router_workers_staleness_seconds after %v of outage: %v", outage, v)
	}
	t.Logf("%v outage: %d probes and %d routes answered; etcd degraded after %v", outage, probes, routes, noticed)

	c.startEtcd()
	testutil.Eventually(t, 60*time.Second, every(100*time.Millisecond, func() bool {
		code, h := c.healthJSON()
		v := samples(c.mustScrape(), "dynamo_component_router_etcd_reachable", nil)
		return code == 200 && len(h.Degraded) == 0 && len(v) == 1 && v[0] == 1
	}), "etcd never reachable again; last /health: %s", lazy(c.healthString))
	if v := samples(c.mustScrape(), "dynamo_component_router_workers_staleness_seconds", nil); len(v) != 1 || v[0] != 0 {
		t.Errorf("dynamo_component_router_workers_staleness_seconds after the outage: %v, want [0]", v)
	}
	if r := f.route(routeRequest{TokenIDs: p.tokens, Book: book(false)}); r.WorkerID != w.id {
		t.Errorf("route after the outage: %+v, want worker %d", r, w.id)
	}
}
