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
	t          *testing.T
	natsBin    string
	natsPort   int
	natsDir    string
	nats       *testutil.Process
	etcdURL    string
	etcdBin    string
	etcdArgs   []string
	etcd       *testutil.Process
	router     *testutil.Process
	statusBase string
}

// newCluster starts the three; bins must hold nats-server and etcd (need).
func newCluster(t *testing.T, bins installed, routerArgs ...string) *cluster {
	t.Helper()
	c := &cluster{t: t}
	c.natsBin = bins.path(t, natsServer)
	c.etcdBin = bins.path(t, etcdServer)
	router := routerBinary(t)

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

	statusPort := testutil.FreePort(t)
	c.statusBase = "http://" + testutil.Addr(statusPort)
	args := append([]string{"serve",
		"--nats-url", c.natsURL(), "--etcd-endpoints", c.etcdURL,
		"--system-host", "127.0.0.1", "--system-port", strconv.Itoa(statusPort),
		"--log-format", "json", "--log-level", "debug"}, routerArgs...)
	// The router fails fast if etcd is not up yet: retry until it stays up.
	testutil.Eventually(t, 60*time.Second, func() bool {
		c.router = testutil.Start(t, router, args...)
		ok := true
		testutil.Eventually(t, 30*time.Second, func() bool {
			if c.router.Exited() {
				ok = false
				return true
			}
			code, _ := c.get("/live")
			return code != 0
		}, "router status server never answered")
		return ok
	}, "router kept exiting at start")
	return c
}

func (c *cluster) natsURL() string { return "nats://" + testutil.Addr(c.natsPort) }

// startEtcd starts etcd, or starts it again on the same data and ports.
func (c *cluster) startEtcd() { c.etcd = testutil.Start(c.t, c.etcdBin, c.etcdArgs...) }

func (c *cluster) startNATS() {
	c.nats = testutil.Start(c.t, c.natsBin, "-a", "127.0.0.1", "-p", strconv.Itoa(c.natsPort), "-js", "-sd", c.natsDir)
}

// get fetches a path of the router's status server; code 0 means no answer.
func (c *cluster) get(path string) (int, string) {
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
func (c *cluster) health() (int, map[string]string) {
	code, body := c.get("/health")
	var h struct {
		Endpoints map[string]string `json:"endpoints"`
	}
	_ = json.Unmarshal([]byte(body), &h)
	return code, h.Endpoints
}

func (c *cluster) waitHealth(want int, within time.Duration) {
	c.t.Helper()
	testutil.Eventually(c.t, within, func() bool {
		code, _ := c.health()
		return code == want
	}, "health never became %d; last: %s", want, fmt.Sprint(c.healthString()))
}

func (c *cluster) healthString() string {
	code, body := c.get("/health")
	return fmt.Sprintf("%d %s", code, body)
}
