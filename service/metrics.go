package service

import (
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kvrouter/router/metrics"
)

// Metrics are the families this package owns: for each endpoint the
// router serves (docs/api.md), Dynamo's work-handler families
// (dynamo_component_requests_total, ..._inflight_requests,
// ..._request_bytes_total, ..._response_bytes_total, ..._errors_total,
// ..._request_duration_seconds) and our bad-request counter, each with the
// dynamo_endpoint label (names in metrics/names.go; docs/metrics.md).
// Safe for concurrent use; building it twice from one metrics.Router
// returns the same collectors.
//
// Ours besides: dynamo_router_marks_unknown_total{endpoint}, the marks
// answered {"success":false} (Endpoint.UnknownMarks of the two mark
// endpoints), unscoped with the router_id label like the router's other
// families of its own, both series created with the family.
type Metrics struct {
	Route          *Endpoint
	MarkPrefill    *Endpoint
	MarkFree       *Endpoint
	OverlapScores  *Endpoint
	PotentialLoads *Endpoint
}

// Endpoint holds the families of one endpoint (dynamo_endpoint label).
type Endpoint struct {
	// Name is the endpoint's name, the value of dynamo_endpoint.
	Name          string
	Requests      prometheus.Counter
	Inflight      prometheus.Gauge
	RequestBytes  prometheus.Counter
	ResponseBytes prometheus.Counter
	Errors        *prometheus.CounterVec // error_type
	Duration      prometheus.Histogram   // seconds
	BadRequests   *prometheus.CounterVec // reason (ours)
	// UnknownMarks counts the endpoint's marks of request ids nobody knew
	// (ours; dynamo_router_marks_unknown_total); nil for the endpoints that
	// are not marks.
	UnknownMarks prometheus.Counter
}

// NewMetrics creates the endpoints' families below m's component scope, or
// returns those created before on the same registry.
func NewMetrics(m *metrics.Router) (*Metrics, error) {
	var b metrics.Builder
	ep := func(name string) *Endpoint { return newEndpoint(&b, m.Component(), name) }
	s := &Metrics{
		Route:          ep(metrics.EndpointRoute),
		MarkPrefill:    ep(metrics.EndpointMarkPrefill),
		MarkFree:       ep(metrics.EndpointMarkFree),
		OverlapScores:  ep(metrics.EndpointOverlapScores),
		PotentialLoads: ep(metrics.EndpointPotentialLoads),
	}
	unknown := b.CounterVec(m.Unscoped(), metrics.Opts{
		Name: metrics.NameMarksUnknownTotal, Help: "Total number of marks of request ids that neither the replica that took them nor the replica they named knew",
		ConstLabels: m.RouterID(), Labels: []string{metrics.LabelMarkEndpoint},
	})
	if err := b.Err(); err != nil {
		return nil, fmt.Errorf("router service metrics: %w", err)
	}
	s.MarkPrefill.UnknownMarks = unknown.WithLabelValues(metrics.EndpointMarkPrefill)
	s.MarkFree.UnknownMarks = unknown.WithLabelValues(metrics.EndpointMarkFree)
	return s, nil
}

func newEndpoint(b *metrics.Builder, comp *metrics.Scope, name string) *Endpoint {
	s := comp.Endpoint(name)
	opts := func(name, help string, labels ...string) metrics.Opts {
		return metrics.Opts{Name: metrics.Suffix(name), Help: help, Labels: labels}
	}
	duration := opts(metrics.NameRequestDurationSeconds, "Time spent processing requests by work handler")
	duration.Buckets = metrics.BucketsRequestDuration()
	return &Endpoint{
		Name:          name,
		Requests:      b.Counter(s, opts(metrics.NameRequestsTotal, "Total number of requests processed by work handler")),
		Inflight:      b.Gauge(s, opts(metrics.NameInflightRequests, "Number of requests currently being processed by work handler")),
		RequestBytes:  b.Counter(s, opts(metrics.NameRequestBytesTotal, "Total number of bytes received in requests by work handler")),
		ResponseBytes: b.Counter(s, opts(metrics.NameResponseBytesTotal, "Total number of bytes sent in responses by work handler")),
		Errors:        b.CounterVec(s, opts(metrics.NameErrorsTotal, "Total number of errors in work handler processing", metrics.LabelErrorType)),
		Duration:      b.Histogram(s, duration),
		BadRequests:   b.CounterVec(s, opts(metrics.NameBadRequestsTotal, "Total number of malformed requests rejected by the router", metrics.LabelReason)),
	}
}

// Endpoint returns the metrics of the endpoint named name (an
// metrics.Endpoint* constant), or false for a name the router does not
// serve.
func (s *Metrics) Endpoint(name string) (*Endpoint, bool) {
	for _, e := range []*Endpoint{s.Route, s.MarkPrefill, s.MarkFree, s.OverlapScores, s.PotentialLoads} {
		if e.Name == name {
			return e, true
		}
	}
	return nil, false
}

// Observe records one handled request: its duration, the bytes in and out,
// and, when errorType is not empty, an error of that type (a
// metrics.ErrorType* constant). Inflight is the caller's: Inc on arrival,
// Dec when done.
func (e *Endpoint) Observe(d time.Duration, requestBytes, responseBytes int, errorType string) {
	e.Requests.Inc()
	e.RequestBytes.Add(float64(max(requestBytes, 0)))
	e.ResponseBytes.Add(float64(max(responseBytes, 0)))
	e.Duration.Observe(d.Seconds())
	if errorType != "" {
		e.Errors.WithLabelValues(errorType).Inc()
	}
}
