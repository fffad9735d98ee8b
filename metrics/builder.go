package metrics

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// Builder creates a run of collectors and collects their errors, so that a
// package's constructor reads as a list of families and reports every
// broken one at once (Err). A collector that failed is nil. A Builder is
// for one goroutine.
type Builder struct {
	err error
}

// Err returns the errors of every constructor called so far, joined, or
// nil.
func (b *Builder) Err() error { return b.err }

func keep[T any](b *Builder, v T, err error) T {
	if err != nil {
		b.err = errors.Join(b.err, err)
	}
	return v
}

// Counter is Scope.Counter.
func (b *Builder) Counter(s *Scope, o Opts) prometheus.Counter {
	c, err := s.Counter(o)
	return keep(b, c, err)
}

// CounterVec is Scope.CounterVec.
func (b *Builder) CounterVec(s *Scope, o Opts) *prometheus.CounterVec {
	c, err := s.CounterVec(o)
	return keep(b, c, err)
}

// Gauge is Scope.Gauge.
func (b *Builder) Gauge(s *Scope, o Opts) prometheus.Gauge {
	g, err := s.Gauge(o)
	return keep(b, g, err)
}

// GaugeVec is Scope.GaugeVec.
func (b *Builder) GaugeVec(s *Scope, o Opts) *prometheus.GaugeVec {
	g, err := s.GaugeVec(o)
	return keep(b, g, err)
}

// GaugeFunc is Scope.GaugeFunc.
func (b *Builder) GaugeFunc(s *Scope, o Opts, f func() float64) prometheus.GaugeFunc {
	g, err := s.GaugeFunc(o, f)
	return keep(b, g, err)
}

// Histogram is Scope.Histogram.
func (b *Builder) Histogram(s *Scope, o Opts) prometheus.Histogram {
	h, err := s.Histogram(o)
	return keep(b, h, err)
}

// HistogramVec is Scope.HistogramVec.
func (b *Builder) HistogramVec(s *Scope, o Opts) *prometheus.HistogramVec {
	h, err := s.HistogramVec(o)
	return keep(b, h, err)
}
