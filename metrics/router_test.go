package metrics

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	kvtest "github.com/kvrouter/router/internal/testutil"
)

// The families of the whole router, and their golden expositions, are
// tested where they are all built: stack/metrics_test.go. Here: the root
// every package builds from.

func testConfig(clock *kvtest.Clock) Config {
	cfg := DefaultConfig()
	cfg.RouterID = 7587888160958628000
	cfg.Now = clock.Now
	return cfg
}

func newTestRouter(t *testing.T) (*Router, *prometheus.Registry, *kvtest.Clock) {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	clock := kvtest.NewClock()
	m, err := New(reg, testConfig(clock))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return m, reg, clock
}

// New registers the uptime gauge only; the scopes it hands out carry the
// configured labels.
func TestRouterScopes(t *testing.T) {
	m, _, clock := newTestRouter(t)
	if diff := cmp.Diff([]string{NameUptimeSeconds}, m.Registry().Names()); diff != "" {
		t.Errorf("families created by New (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(prometheus.Labels{LabelNamespace: "dynamo", LabelComponent: "router"}, m.Component().Labels()); diff != "" {
		t.Errorf("component scope labels (-want +got):\n%s", diff)
	}
	if got := len(m.Unscoped().Labels()); got != 0 {
		t.Errorf("unscoped scope has %d labels, want none", got)
	}
	id := m.RouterID()
	if diff := cmp.Diff(prometheus.Labels{LabelRouterID: "7587888160958628000"}, id); diff != "" {
		t.Errorf("RouterID (-want +got):\n%s", diff)
	}
	id["x"] = "y" // the caller's own map
	if len(m.RouterID()) != 1 {
		t.Errorf("RouterID returned a shared map")
	}
	if !m.Now().Equal(clock.Now()) {
		t.Errorf("Now = %v, want the configured clock's %v", m.Now(), clock.Now())
	}
}

func TestUptime(t *testing.T) {
	m, _, clock := newTestRouter(t)
	if got := testutil.ToFloat64(m.Uptime); got != 0 {
		t.Errorf("uptime at start = %v, want 0", got)
	}
	clock.Advance(90 * time.Second)
	if got := testutil.ToFloat64(m.Uptime); got != 90 {
		t.Errorf("uptime after 90s = %v, want 90", got)
	}
}

// Two Routers on one registry share collectors instead of failing; a
// registry already holding the uptime gauge with another shape fails New
// with an error naming the metric.
func TestNewOnSharedRegistry(t *testing.T) {
	t.Run("twice", func(t *testing.T) {
		reg := prometheus.NewRegistry()
		clock := kvtest.NewClock()
		a, err := New(reg, testConfig(clock))
		if err != nil {
			t.Fatal(err)
		}
		b, err := New(reg, testConfig(clock))
		if err != nil {
			t.Fatalf("second New: %v", err)
		}
		if a.Uptime != b.Uptime {
			t.Errorf("second New made another uptime gauge")
		}
		ca, err := a.Component().Counter(Opts{Name: "x_total", Help: "x"})
		if err != nil {
			t.Fatal(err)
		}
		cb, err := b.Component().Counter(Opts{Name: "x_total", Help: "x"})
		if err != nil {
			t.Fatalf("second router's counter: %v", err)
		}
		cb.Inc()
		if got := testutil.ToFloat64(ca); got != 1 {
			t.Errorf("first router's counter = %v, want 1 (shared)", got)
		}
	})
	t.Run("conflict", func(t *testing.T) {
		reg := prometheus.NewRegistry()
		reg.MustRegister(prometheus.NewCounter(prometheus.CounterOpts{Name: NameUptimeSeconds, Help: "Wrong type."}))
		_, err := New(reg, testConfig(kvtest.NewClock()))
		if err == nil || !strings.Contains(err.Error(), NameUptimeSeconds) {
			t.Fatalf("got %v, want an error naming %s", err, NameUptimeSeconds)
		}
	})
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name    string
		cfg     Config
		wantErr error
	}{
		{name: "default", cfg: DefaultConfig()},
		{name: "dashed namespace is fine", cfg: Config{Namespace: "my-ns", Component: "router"}},
		{name: "empty namespace", cfg: Config{Component: "router"}, wantErr: ErrInvalidName},
		{name: "invalid component", cfg: Config{Namespace: "dynamo", Component: "%%"}, wantErr: ErrInvalidName},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Validate() = %v, want %v", err, tt.wantErr)
			}
			if _, err := New(prometheus.NewRegistry(), tt.cfg); !errors.Is(err, tt.wantErr) {
				t.Fatalf("New() = %v, want %v", err, tt.wantErr)
			}
		})
	}
}

// A Builder reports every broken family of a run, and builds the others.
func TestBuilder(t *testing.T) {
	m, _, _ := newTestRouter(t)
	var b Builder
	ok := b.Counter(m.Component(), Opts{Name: "fine_total", Help: "fine"})
	b.Gauge(m.Component(), Opts{Name: "no_help"})
	b.Histogram(m.Unscoped(), Opts{Name: "bad_buckets", Help: "h", Buckets: []float64{2, 1}})
	b.GaugeVec(m.Component(), Opts{Name: "fine_total", Help: "another shape", Labels: []string{"x"}})
	err := b.Err()
	for _, want := range []error{ErrInvalidOpts, ErrConflict} {
		if !errors.Is(err, want) {
			t.Errorf("Err() = %v, want it to wrap %v", err, want)
		}
	}
	for _, name := range []string{"no_help", "bad_buckets", "fine_total"} {
		if err == nil || !strings.Contains(err.Error(), name) {
			t.Errorf("Err() = %v, want it to name %s", err, name)
		}
	}
	if ok == nil {
		t.Errorf("the valid counter was not built")
	}
}

func TestSuffixAndWorkerValues(t *testing.T) {
	if got := Suffix(NameRequestsTotal); got != "requests_total" {
		t.Errorf("Suffix(%s) = %q", NameRequestsTotal, got)
	}
	if got := Suffix(NameOverheadTotal); got != NameOverheadTotal {
		t.Errorf("Suffix of an unscoped name = %q, want it unchanged", got)
	}
	w := Worker{ID: 7587888160958628000, DPRank: 3, Type: WorkerTypePrefill}
	if diff := cmp.Diff([]string{"7587888160958628000", "3", "prefill"}, w.Values()); diff != "" {
		t.Errorf("Values (-want +got):\n%s", diff)
	}
}

// New registers nothing on client_golang's global registry.
func TestNoGlobalRegistration(t *testing.T) {
	newTestRouter(t)
	mfs, err := prometheus.DefaultGatherer.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if strings.HasPrefix(mf.GetName(), "dynamo_") {
			t.Errorf("%s is on the global registry", mf.GetName())
		}
	}
}
