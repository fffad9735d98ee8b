package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/kvrouter/router/internal/testutil"
)

// cluster is a NATS server, an etcd and a router, each its own process.
type cluster struct {
	*servers
	*routerProc
}

// servers are a NATS server and an etcd, each its own process.
type servers struct {
	t        *testing.T
	natsBin  string
	natsPort int
	natsDir  string
	nats     *testutil.Process
	etcdURL  string
	etcdBin  string
	etcdArgs []string
	etcd     *testutil.Process
}

// routerProc is a router process and the base URL of its status server.
type routerProc struct {
	t          *testing.T
	router     *testutil.Process
	statusBase string
}

// newCluster starts the three; bins must hold nats-server and etcd (need).
func newCluster(t *testing.T, bins installed, routerArgs ...string) *cluster {
	t.Helper()
	s := newServers(t, bins)
	return &cluster{servers: s, routerProc: s.startRouter(testutil.FreePort(t), routerArgs...)}
}

// newServers starts nats-server and etcd on free ports.
func newServers(t *testing.T, bins installed) *servers {
	t.Helper()
	c := &servers{t: t}
	c.natsBin = bins.path(t, natsServer)
	c.etcdBin = bins.path(t, etcdServer)

	c.natsPort = testutil.FreePort(t)
	c.natsDir = t.TempDir()
	c.startNATS()

	clientPort, peerPort := testutil.FreePort(t), testutil.FreePort(t)
	c.etcdURL = "http://" + testutil.Addr(clientPort)
	peerURL := "http://" + testutil.Addr(peerPort)
	c.etcdArgs = []string{"--name", "e2e", "--data-dir", t.TempDir(),
		"--listen-client-urls", c.etcdURL, "--advertise-client-urls", c.etcdURL,
		"--listen-peer-urls", peerURL, "--initial-advertise-peer-urls", peerURL,
		"--initial-cluster", "e2e=" + peerURL}
	c.startEtcd()
	return c
}

// startRouter starts a router on the servers with its status server on
// statusPort, and returns once that answers.
func (c *servers) startRouter(statusPort int, routerArgs ...string) *routerProc {
	t := c.t
	t.Helper()
	bin := routerBinary(t)
	r := &routerProc{t: t, statusBase: "http://" + testutil.Addr(statusPort)}
	args := append([]string{"serve",
		"--nats-url", c.natsURL(), "--etcd-endpoints", c.etcdURL,
		"--system-host", "127.0.0.1", "--system-port", strconv.Itoa(statusPort),
		"--log-format", "json", "--log-level", "debug"}, routerArgs...)
	// The router fails fast if etcd is not up yet: retry until it stays up.
	testutil.Eventually(t, 60*time.Second, func() bool {
		r.router = testutil.Start(t, bin, args...)
		ok := true
		testutil.Eventually(t, 30*time.Second, func() bool {
			if r.router.Exited() {
				ok = false
				return true
			}
			code, _ := r.get("/live")
			return code != 0
		}, "router status server never answered")
		return ok
	}, "router kept exiting at start")
	return r
}

func (c *servers) natsURL() string { return "nats://" + testutil.Addr(c.natsPort) }

// startEtcd starts etcd, or starts it again on the same data and ports.
func (c *servers) startEtcd() { c.etcd = testutil.Start(c.t, c.etcdBin, c.etcdArgs...) }

func (c *servers) startNATS() {
	c.nats = testutil.Start(c.t, c.natsBin, "-a", "127.0.0.1", "-p", strconv.Itoa(c.natsPort), "-js", "-sd", c.natsDir)
}

// get fetches a path of the router's status server; code 0 means no answer.
func (c *routerProc) get(path string) (int, string) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, c.statusBase+path, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// health returns the status of /health and its endpoints map.
func (c *routerProc) health() (int, map[string]string) {
	code, body := c.get("/health")
	var h struct {
		Endpoints map[string]string `json:"endpoints"`
	}
	_ = json.Unmarshal([]byte(body), &h)
	return code, h.Endpoints
}

func (c *routerProc) waitHealth(want int, within time.Duration) {
	c.t.Helper()
	last := "no answer"
	testutil.Eventually(c.t, within, func() bool {
		if c.router.Exited() {
			return true
		}
		code, body := c.get("/health")
		last = fmt.Sprintf("%d %s", code, body)
		return code == want
	}, "health never became %d; last: %s", want, lazy(func() string { return last }))
	if c.router.Exited() {
		c.t.Fatalf("the router exited while its health was awaited (last: %s)", last)
	}
}

func (c *routerProc) healthString() string {
	code, body := c.get("/health")
	return fmt.Sprintf("%d %s", code, body)
}
