package service

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	promtest "github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/kvrouter/router/metrics"
)

func TestMetricsEndpoints(t *testing.T) {
	root, err := metrics.New(prometheus.NewPedanticRegistry(), metrics.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	m, err := NewMetrics(root)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{metrics.EndpointRoute, metrics.EndpointMarkPrefill, metrics.EndpointMarkFree, metrics.EndpointOverlapScores, metrics.EndpointPotentialLoads} {
		e, ok := m.Endpoint(name)
		if !ok || e.Name != name {
			t.Errorf("Endpoint(%q) = %v, %v", name, e, ok)
		}
	}
	if _, ok := m.Endpoint("generate"); ok {
		t.Errorf("Endpoint(generate) found an endpoint the router does not serve")
	}

	// Observe counts the request, its bytes (never negative) and its error.
	e := m.MarkFree
	e.Observe(3*time.Millisecond, 100, -1, "")
	e.Observe(time.Millisecond, 20, 30, metrics.ErrorTypeInternal)
	for name, tt := range map[string]struct {
		c    prometheus.Collector
		want float64
	}{
		metrics.NameRequestsTotal:      {e.Requests, 2},
		metrics.NameRequestBytesTotal:  {e.RequestBytes, 120},
		metrics.NameResponseBytesTotal: {e.ResponseBytes, 30},
		metrics.NameErrorsTotal:        {e.Errors.WithLabelValues(metrics.ErrorTypeInternal), 1},
	} {
		if got := promtest.ToFloat64(tt.c); got != tt.want {
			t.Errorf("%s = %v, want %v", name, got, tt.want)
		}
	}
	if got := promtest.ToFloat64(m.Route.Requests); got != 0 {
		t.Errorf("route requests = %v: another endpoint's observations leaked", got)
	}
}
