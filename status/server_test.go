package status

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"github.com/kvrouter/router/internal/shutdown"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// start runs a server on a free loopback port until the test ends.
func start(t *testing.T, cfg Config, checks map[string]Check) string {
	t.Helper()
	reg := prometheus.NewRegistry()
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "dynamo_component_test_total", Help: "A test counter."})
	reg.MustRegister(c)
	c.Add(3)
	cfg.Host, cfg.Port = "127.0.0.1", 0
	s := New(cfg, reg, slog.New(slog.DiscardHandler))
	for name, ch := range checks {
		s.AddCheck(name, ch)
	}
	addr, err := s.Listen()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return "http://" + addr.String()
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	client := &http.Client{Timeout: 5 * time.Second}
	resp, err := client.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	client.CloseIdleConnections()
	return resp.StatusCode, string(body)
}

func TestRoutes(t *testing.T) {
	var natsUp atomic.Bool
	base := start(t, DefaultConfig(), map[string]Check{
		"nats": func() (State, string) {
			if natsUp.Load() {
				return OK, ""
			}
			return Failed, "disconnected"
		},
		"etcd": func() (State, string) { return OK, "" },
	})

	code, body := get(t, base+"/metrics")
	if code != 200 || !strings.Contains(body, "dynamo_component_test_total 3") {
		t.Fatalf("/metrics: %d %q", code, body)
	}
	for _, path := range []string{"/", "/nope", "/healthz"} {
		if code, _ := get(t, base+path); code != 404 {
			t.Errorf("%s: %d, want 404", path, code)
		}
	}

	for _, tc := range []struct {
		name     string
		up       bool
		wantCode int
		want     Health
	}{
		{"nats down", false, 503, Health{Status: NotReady, Endpoints: map[string]string{"nats": NotReady, "etcd": Ready}, Problems: []string{"nats: disconnected"}}},
		{"all up", true, 200, Health{Status: Ready, Endpoints: map[string]string{"nats": Ready, "etcd": Ready}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			natsUp.Store(tc.up)
			for _, path := range []string{"/health", "/live"} {
				code, body := get(t, base+path)
				if code != tc.wantCode {
					t.Errorf("%s: %d, want %d", path, code, tc.wantCode)
				}
				var got Health
				if err := json.Unmarshal([]byte(body), &got); err != nil {
					t.Fatalf("%s: %v in %q", path, err, body)
				}
				got.Uptime = Uptime{}
				if diff := cmp.Diff(tc.want, got); diff != "" {
					t.Errorf("%s (-want +got):\n%s", path, diff)
				}
			}
		})
	}
}

func TestRenamedPathsAndStartingStatus(t *testing.T) {
	cfg := DefaultConfig()
	cfg.HealthPath, cfg.LivePath, cfg.StartingStatus = "/ready", "/alive", Ready
	var up atomic.Bool
	base := start(t, cfg, map[string]Check{"nats": func() (State, string) {
		if up.Load() {
			return OK, ""
		}
		return Failed, "down"
	}})
	if code, _ := get(t, base+"/health"); code != 404 {
		t.Errorf("/health after renaming: %d, want 404", code)
	}
	// Ready from the start, as configured, until the checks first pass...
	if code, _ := get(t, base+"/ready"); code != 200 {
		t.Errorf("/ready while starting: %d, want 200", code)
	}
	up.Store(true)
	if code, _ := get(t, base+"/alive"); code != 200 {
		t.Errorf("/alive: %d, want 200", code)
	}
	// ...and honest after that.
	up.Store(false)
	if code, _ := get(t, base+"/ready"); code != 503 {
		t.Errorf("/ready after a failure: %d, want 503", code)
	}
}

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		mod  func(*Config)
		want string // substring of the error; "" means valid
	}{
		{"default", func(*Config) {}, ""},
		{"port", func(c *Config) { c.Port = 70000 }, "--system-port: 70000 is out of range (allowed 0..65535)"},
		{"health path", func(c *Config) { c.HealthPath = "health" }, `--system-health-path: "health" must start with /`},
		{"same paths", func(c *Config) { c.LivePath = c.HealthPath }, `--system-live-path: "/health" is also the health path`},
		{"starting", func(c *Config) { c.StartingStatus = "maybe" }, `--system-starting-health-status: "maybe" is not ready or notready`},
		{"every problem", func(c *Config) { c.Port, c.StartingStatus = -2, "" }, "--system-port: -2 is out of range (allowed 0..65535)\n--system-starting-health-status"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := DefaultConfig()
			tc.mod(&c)
			err := c.Validate()
			if tc.want == "" {
				if err != nil {
					t.Fatalf("Validate = %v, want nil", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Validate = %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

// A degraded check keeps the router ready and is reported in "degraded"; a
// failed one makes it notready and is reported in "problems"; a state
// outside the three counts as failed.
func TestReportStates(t *testing.T) {
	var etcd, kv atomic.Uint32
	s := New(DefaultConfig(), prometheus.NewRegistry(), slog.New(slog.DiscardHandler))
	s.AddCheck("etcd", func() (State, string) { return State(etcd.Load()), "unreachable for 12s" })
	s.AddCheck("kv_events", func() (State, string) { return State(kv.Load()), "" })
	for _, tc := range []struct {
		name     string
		etcd, kv State
		want     Health
	}{
		{"all ok", OK, OK, Health{Status: Ready, Endpoints: map[string]string{"etcd": Ready, "kv_events": Ready}}},
		{"etcd degraded", Degraded, OK, Health{Status: Ready, Endpoints: map[string]string{"etcd": Ready, "kv_events": Ready},
			Degraded: []string{"etcd: unreachable for 12s"}}},
		{"etcd degraded, events failed", Degraded, Failed, Health{Status: NotReady, Endpoints: map[string]string{"etcd": Ready, "kv_events": NotReady},
			Problems: []string{"kv_events"}, Degraded: []string{"etcd: unreachable for 12s"}}},
		{"etcd failed", Failed, OK, Health{Status: NotReady, Endpoints: map[string]string{"etcd": NotReady, "kv_events": Ready},
			Problems: []string{"etcd: unreachable for 12s"}}},
		{"unknown state", State(7), OK, Health{Status: NotReady, Endpoints: map[string]string{"etcd": NotReady, "kv_events": Ready},
			Problems: []string{"etcd: unreachable for 12s"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			etcd.Store(uint32(tc.etcd))
			kv.Store(uint32(tc.kv))
			got := s.Report()
			got.Uptime = Uptime{}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("Report (-want +got):\n%s", diff)
			}
		})
	}
}

func TestStateString(t *testing.T) {
	for s, want := range map[State]string{OK: "ok", Degraded: "degraded", Failed: "failed", 9: "State(9)"} {
		if got := s.String(); got != want {
			t.Errorf("State(%d).String() = %q, want %q", uint8(s), got, want)
		}
	}
}

// Run stops waiting for open requests at the router's shutdown deadline,
// not after its own five seconds.
func TestRunStopsAtShutdownDeadline(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Host, cfg.Port = "127.0.0.1", 0
	s := New(cfg, prometheus.NewRegistry(), slog.New(slog.DiscardHandler))
	addr, err := s.Listen()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancelCause(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	// A request whose header never ends keeps its connection active, so
	// Shutdown waits for it.
	conn, err := net.Dial("tcp", addr.String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte("GET /health HTTP/1.1\r\nHost: x\r\n")); err != nil {
		t.Fatal(err)
	}
	// The server has the request once it holds the connection active; a
	// second request on another connection proves it is serving.
	if code, _ := get(t, "http://"+addr.String()+"/health"); code != 200 {
		t.Fatalf("/health: %d", code)
	}
	const grace = 300 * time.Millisecond
	begin := time.Now()
	cancel(&shutdown.Cause{Reason: context.Canceled, Deadline: begin.Add(grace)})
	select {
	case err = <-done:
	case <-time.After(4 * time.Second):
		t.Fatal("Run still shutting down after 4s; the deadline was 300ms")
	}
	if took := time.Since(begin); took < grace {
		t.Errorf("Run returned after %v, before the deadline, with a request still open", took)
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Run = %v, want a shutdown cut short by the deadline", err)
	}
}
