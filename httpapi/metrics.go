package httpapi

import (
	"fmt"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kvrouter/router/metrics"
)

// Metrics are the families this package owns (ours; names in
// metrics/names.go, docs/metrics.md): the HTTP share of the router's
// requests. Dynamo's endpoint families (package service) count every
// request an endpoint answers, over NATS or HTTP; these count the requests
// that came over HTTP, by endpoint and status, including those refused
// before they reached an endpoint (unknown path, wrong method or content
// type, body too large). Safe for concurrent use; building them twice from
// one metrics.Router returns the same collectors.
type Metrics struct {
	// Requests counts requests answered, by endpoint and code (the HTTP
	// status).
	Requests *prometheus.CounterVec
	// Duration is the time from a request's arrival at the handler to its
	// reply written, by endpoint, in seconds.
	Duration *prometheus.HistogramVec
}

// NewMetrics creates the HTTP families, unscoped with the router_id label
// like the router's other families of its own, or returns those created
// before on the same registry. Their series appear with their first
// request, so a router that serves no HTTP exposes none.
func NewMetrics(m *metrics.Router) (*Metrics, error) {
	var b metrics.Builder
	u := m.Unscoped()
	hm := &Metrics{
		Requests: b.CounterVec(u, metrics.Opts{
			Name: metrics.NameHTTPRequestsTotal, Help: "Total number of requests answered by the HTTP API, by endpoint and HTTP status code",
			ConstLabels: m.RouterID(), Labels: []string{metrics.LabelHTTPEndpoint, metrics.LabelCode},
		}),
		Duration: b.HistogramVec(u, metrics.Opts{
			Name: metrics.NameHTTPRequestDurationSeconds, Help: "Time from an HTTP API request's arrival to its reply written in seconds",
			ConstLabels: m.RouterID(), Labels: []string{metrics.LabelHTTPEndpoint}, Buckets: metrics.BucketsHTTPRequestDuration(),
		}),
	}
	if err := b.Err(); err != nil {
		return nil, fmt.Errorf("http api metrics: %w", err)
	}
	return hm, nil
}

// Observe records one answered request.
func (m *Metrics) Observe(endpoint string, status int, d time.Duration) {
	m.Requests.WithLabelValues(endpoint, codeLabel(status)).Inc()
	m.Duration.WithLabelValues(endpoint).Observe(max(d, 0).Seconds())
}

// codeLabel spells a status as the code label does, without allocating for
// the statuses the handler answers.
func codeLabel(status int) string {
	switch status {
	case 200:
		return "200"
	case 400:
		return "400"
	case 404:
		return "404"
	case 405:
		return "405"
	case 413:
		return "413"
	case 415:
		return "415"
	case 429:
		return "429"
	case 500:
		return "500"
	case 503:
		return "503"
	case 504:
		return "504"
	}
	return strconv.Itoa(status)
}
