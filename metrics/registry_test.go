package metrics

import (
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
)

// TestHierarchyExposition shows what each level adds: the prefix everywhere
// in the hierarchy, the labels of the levels above, constant labels, and
// nothing at all in the unscoped scope.
func TestHierarchyExposition(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	r := NewRegistry(reg)
	ns := r.Namespace("my-ns")
	comp := ns.Component("router")
	ep := comp.Endpoint("route")

	rt, err := r.Runtime().Counter(Opts{Name: "runtime_events_total", Help: "Runtime level."})
	if err != nil {
		t.Fatal(err)
	}
	rt.Inc()
	g, err := ns.Gauge(Opts{Name: "namespace_things", Help: "Namespace level."})
	if err != nil {
		t.Fatal(err)
	}
	g.Set(2)
	cv, err := comp.CounterVec(Opts{Name: "component.events-total", Help: "Component level, name sanitised.", Labels: []string{"kind"}})
	if err != nil {
		t.Fatal(err)
	}
	cv.WithLabelValues("a").Add(3)
	h, err := ep.Histogram(Opts{Name: "latency_seconds", Help: "Endpoint level.", ConstLabels: prometheus.Labels{"router_id": "42"}, Buckets: []float64{0.1, 1}})
	if err != nil {
		t.Fatal(err)
	}
	h.Observe(0.5)
	gv, err := ep.GaugeVec(Opts{Name: "queue_depth", Help: "Endpoint level vector.", Labels: []string{"shard"}})
	if err != nil {
		t.Fatal(err)
	}
	gv.WithLabelValues("0").Set(4)
	hv, err := comp.HistogramVec(Opts{Name: "sizes", Help: "Component level histogram vector.", Labels: []string{"kind"}, Buckets: []float64{1, 10}})
	if err != nil {
		t.Fatal(err)
	}
	hv.WithLabelValues("b").Observe(5)
	u, err := r.Unscoped().Gauge(Opts{Name: "dynamo_frontend_example", Help: "Unscoped."})
	if err != nil {
		t.Fatal(err)
	}
	u.Set(1)

	checkGolden(t, reg, "hierarchy.prom")

	if diff := cmp.Diff(prometheus.Labels{LabelNamespace: "my_ns", LabelComponent: "router", LabelEndpoint: "route"}, ep.Labels()); diff != "" {
		t.Errorf("endpoint labels (-want +got):\n%s", diff)
	}
	want := []string{
		"dynamo_component_component_events_total", "dynamo_component_latency_seconds",
		"dynamo_component_namespace_things", "dynamo_component_queue_depth",
		"dynamo_component_runtime_events_total", "dynamo_component_sizes", "dynamo_frontend_example",
	}
	if diff := cmp.Diff(want, r.Names()); diff != "" {
		t.Errorf("Names() (-want +got):\n%s", diff)
	}
}

// Asking twice for the same metric returns the same collector, and a family
// may hold one collector per set of constant labels (one per endpoint).
func TestCreateTwiceReturnsExisting(t *testing.T) {
	reg := prometheus.NewRegistry()
	r := NewRegistry(reg)
	comp := r.Namespace("dynamo").Component("router")
	o := Opts{Name: "requests_total", Help: "Requests."}

	a, err := comp.Endpoint("route").Counter(o)
	if err != nil {
		t.Fatal(err)
	}
	b, err := comp.Endpoint("route").Counter(o)
	if err != nil {
		t.Fatal(err)
	}
	if a != b {
		t.Errorf("second Counter returned a new collector")
	}
	c, err := comp.Endpoint("mark_free").Counter(o)
	if err != nil {
		t.Fatalf("same family, other endpoint: %v", err)
	}
	if c == a {
		t.Errorf("another endpoint shares the collector of route")
	}

	hv1, err := comp.HistogramVec(Opts{Name: "h", Help: "H.", Labels: []string{"x"}, Buckets: []float64{1, 2}})
	if err != nil {
		t.Fatal(err)
	}
	hv2, err := comp.HistogramVec(Opts{Name: "h", Help: "H.", Labels: []string{"x"}, Buckets: []float64{1, 2}})
	if err != nil {
		t.Fatal(err)
	}
	if hv1 != hv2 {
		t.Errorf("second HistogramVec returned a new collector")
	}
}

func TestCreateConflicts(t *testing.T) {
	base := Opts{Name: "things_total", Help: "Things.", Labels: []string{"kind"}}
	tests := []struct {
		name   string
		create func(s *Scope) error
	}{
		{name: "other kind", create: func(s *Scope) error {
			_, err := s.GaugeVec(base)
			return err
		}},
		{name: "scalar of a vector", create: func(s *Scope) error {
			_, err := s.Counter(Opts{Name: base.Name, Help: base.Help})
			return err
		}},
		{name: "other help", create: func(s *Scope) error {
			o := base
			o.Help = "Other."
			_, err := s.CounterVec(o)
			return err
		}},
		{name: "other labels", create: func(s *Scope) error {
			o := base
			o.Labels = []string{"reason"}
			_, err := s.CounterVec(o)
			return err
		}},
		{name: "labels in another order", create: func(s *Scope) error {
			o := base
			o.Labels = []string{"b", "a"}
			if _, err := s.CounterVec(Opts{Name: "ordered_total", Help: "O.", Labels: []string{"a", "b"}}); err != nil {
				return err
			}
			o.Name = "ordered_total"
			o.Help = "O."
			_, err := s.CounterVec(o)
			return err
		}},
		{name: "other constant label names in the family", create: func(s *Scope) error {
			o := base
			o.ConstLabels = prometheus.Labels{"extra": "1"}
			_, err := s.CounterVec(o)
			return err
		}},
		{name: "other buckets", create: func(s *Scope) error {
			if _, err := s.Histogram(Opts{Name: "lat_seconds", Help: "L.", Buckets: []float64{1, 2}}); err != nil {
				return err
			}
			_, err := s.Histogram(Opts{Name: "lat_seconds", Help: "L.", Buckets: []float64{1, 3}})
			return err
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := NewRegistry(prometheus.NewRegistry())
			s := r.Namespace("dynamo").Component("router")
			if _, err := s.CounterVec(base); err != nil {
				t.Fatal(err)
			}
			err := tt.create(s)
			if !errors.Is(err, ErrConflict) {
				t.Fatalf("got %v, want ErrConflict", err)
			}
			if !strings.Contains(err.Error(), "dynamo_component_") {
				t.Errorf("error %q does not name the metric", err)
			}
		})
	}
}

func TestCreateInvalidOpts(t *testing.T) {
	tests := []struct {
		name    string
		create  func(s *Scope) error
		wantErr error
	}{
		{name: "no help", wantErr: ErrInvalidOpts, create: func(s *Scope) error {
			_, err := s.Counter(Opts{Name: "x_total"})
			return err
		}},
		{name: "empty name", wantErr: ErrInvalidName, create: func(s *Scope) error {
			_, err := s.Counter(Opts{Help: "X."})
			return err
		}},
		{name: "labels on a scalar", wantErr: ErrInvalidOpts, create: func(s *Scope) error {
			_, err := s.Gauge(Opts{Name: "x", Help: "X.", Labels: []string{"a"}})
			return err
		}},
		{name: "buckets on a counter", wantErr: ErrInvalidOpts, create: func(s *Scope) error {
			_, err := s.CounterVec(Opts{Name: "x_total", Help: "X.", Labels: []string{"a"}, Buckets: []float64{1}})
			return err
		}},
		{name: "unsorted buckets", wantErr: ErrInvalidOpts, create: func(s *Scope) error {
			_, err := s.Histogram(Opts{Name: "x", Help: "X.", Buckets: []float64{2, 1}})
			return err
		}},
		{name: "repeated bucket", wantErr: ErrInvalidOpts, create: func(s *Scope) error {
			_, err := s.HistogramVec(Opts{Name: "x", Help: "X.", Labels: []string{"a"}, Buckets: []float64{1, 1}})
			return err
		}},
		{name: "le on a histogram vector", wantErr: ErrInvalidOpts, create: func(s *Scope) error {
			_, err := s.HistogramVec(Opts{Name: "x", Help: "X.", Labels: []string{"le"}})
			return err
		}},
		{name: "le as a constant label of a histogram", wantErr: ErrInvalidOpts, create: func(s *Scope) error {
			_, err := s.Histogram(Opts{Name: "x", Help: "X.", ConstLabels: prometheus.Labels{"le": "1"}})
			return err
		}},
		{name: "hierarchy label as constant label", wantErr: ErrInvalidOpts, create: func(s *Scope) error {
			_, err := s.Counter(Opts{Name: "x_total", Help: "X.", ConstLabels: prometheus.Labels{LabelComponent: "other"}})
			return err
		}},
		{name: "hierarchy label as variable label", wantErr: ErrInvalidOpts, create: func(s *Scope) error {
			_, err := s.CounterVec(Opts{Name: "x_total", Help: "X.", Labels: []string{LabelNamespace}})
			return err
		}},
		{name: "repeated variable label", wantErr: ErrInvalidOpts, create: func(s *Scope) error {
			_, err := s.CounterVec(Opts{Name: "x_total", Help: "X.", Labels: []string{"a", "a"}})
			return err
		}},
		{name: "invalid label name", wantErr: ErrInvalidName, create: func(s *Scope) error {
			_, err := s.GaugeVec(Opts{Name: "x", Help: "X.", Labels: []string{"worker-id"}})
			return err
		}},
		{name: "reserved label name", wantErr: ErrInvalidName, create: func(s *Scope) error {
			_, err := s.GaugeVec(Opts{Name: "x", Help: "X.", Labels: []string{"__name__"}})
			return err
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			reg := prometheus.NewRegistry()
			s := NewRegistry(reg).Namespace("dynamo").Component("router")
			if err := tt.create(s); !errors.Is(err, tt.wantErr) {
				t.Fatalf("got %v, want %v", err, tt.wantErr)
			}
			mfs, err := reg.Gather()
			if err != nil || len(mfs) != 0 {
				t.Errorf("a rejected metric left %d families, %v", len(mfs), err)
			}
		})
	}
}

func TestScopeErrors(t *testing.T) {
	r := NewRegistry(prometheus.NewRegistry())
	tests := []struct {
		name    string
		scope   *Scope
		wantErr error
	}{
		{name: "endpoint under a namespace", scope: r.Namespace("dynamo").Endpoint("route"), wantErr: ErrScope},
		{name: "component under the runtime", scope: r.Runtime().Component("router"), wantErr: ErrScope},
		{name: "namespace under a namespace", scope: r.Namespace("a").Namespace("b"), wantErr: ErrScope},
		{name: "namespace under unscoped", scope: r.Unscoped().Namespace("a"), wantErr: ErrScope},
		{name: "empty namespace", scope: r.Namespace(""), wantErr: ErrInvalidName},
		{name: "invalid component, error carried down", scope: r.Namespace("dynamo").Component("%%").Endpoint("route"), wantErr: ErrInvalidName},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if !errors.Is(tt.scope.Err(), tt.wantErr) {
				t.Fatalf("Err() = %v, want %v", tt.scope.Err(), tt.wantErr)
			}
			if _, err := tt.scope.Counter(Opts{Name: "x_total", Help: "X."}); !errors.Is(err, tt.wantErr) {
				t.Fatalf("Counter: %v, want %v", err, tt.wantErr)
			}
		})
	}
}

func TestNilRegisterer(t *testing.T) {
	_, err := NewRegistry(nil).Runtime().Gauge(Opts{Name: "x", Help: "X."})
	if !errors.Is(err, ErrNoRegisterer) {
		t.Fatalf("got %v, want ErrNoRegisterer", err)
	}
}

// A collector registered on the same Registerer by other code is reused if
// it has the right type, and reported as a conflict if not.
func TestAlreadyRegisteredOutside(t *testing.T) {
	t.Run("same type is reused", func(t *testing.T) {
		reg := prometheus.NewRegistry()
		outside := prometheus.NewGauge(prometheus.GaugeOpts{Name: "dynamo_frontend_x", Help: "X."})
		reg.MustRegister(outside)
		g, err := NewRegistry(reg).Unscoped().Gauge(Opts{Name: "dynamo_frontend_x", Help: "X."})
		if err != nil {
			t.Fatal(err)
		}
		if g != outside {
			t.Errorf("got a new gauge, want the one registered outside")
		}
	})
	t.Run("other type is a conflict", func(t *testing.T) {
		reg := prometheus.NewRegistry()
		reg.MustRegister(prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "dynamo_frontend_x", Help: "X."}, nil))
		_, err := NewRegistry(reg).Unscoped().Gauge(Opts{Name: "dynamo_frontend_x", Help: "X."})
		if !errors.Is(err, ErrConflict) {
			t.Fatalf("got %v, want ErrConflict", err)
		}
	})
	t.Run("inconsistent with outside family is an error", func(t *testing.T) {
		reg := prometheus.NewRegistry()
		reg.MustRegister(prometheus.NewGauge(prometheus.GaugeOpts{Name: "dynamo_frontend_x", Help: "X.", ConstLabels: prometheus.Labels{"a": "1"}}))
		_, err := NewRegistry(reg).Unscoped().Gauge(Opts{Name: "dynamo_frontend_x", Help: "Other help."})
		if err == nil || !strings.Contains(err.Error(), "dynamo_frontend_x") {
			t.Fatalf("got %v, want an error naming the metric", err)
		}
	})
}

// Many goroutines asking for one metric all get the same collector.
func TestCreateConcurrently(t *testing.T) {
	r := NewRegistry(prometheus.NewRegistry())
	s := r.Namespace("dynamo").Component("router")
	const n = 16
	got := make([]*prometheus.CounterVec, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			got[i], errs[i] = s.CounterVec(Opts{Name: "x_total", Help: "X.", Labels: []string{"a"}})
		})
	}
	wg.Wait()
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("goroutine %d: %v", i, errs[i])
		}
		if got[i] != got[0] {
			t.Fatalf("goroutine %d got another collector", i)
		}
	}
}
