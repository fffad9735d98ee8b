package metrics

import (
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// Errors returned when a metric cannot be created. They are wrapped with the
// metric's name; test for them with errors.Is.
var (
	// ErrInvalidName means a metric or label name is empty, cannot be
	// sanitised, or is reserved.
	ErrInvalidName = errors.New("invalid name")
	// ErrInvalidOpts means the options do not fit the kind of metric (labels
	// on a scalar, buckets on a counter, buckets not increasing, no help
	// text).
	ErrInvalidOpts = errors.New("invalid metric options")
	// ErrConflict means a metric of that name and those constant labels, or a
	// family of that name, already exists with another kind, help text, label
	// names or buckets.
	ErrConflict = errors.New("conflicts with an existing metric")
	// ErrNoRegisterer means the Registry was built without a
	// prometheus.Registerer.
	ErrNoRegisterer = errors.New("no prometheus registerer")
	// ErrScope means a hierarchy level was asked of the wrong parent (an
	// endpoint of a namespace, say).
	ErrScope = errors.New("invalid scope")
)

// Registry creates metrics in Dynamo's hierarchy (runtime → namespace →
// component → endpoint) and registers them on one injected
// prometheus.Registerer. It remembers what it created, so asking twice for
// the same metric returns the first one instead of failing, and asking for a
// different metric under a taken name fails with ErrConflict instead of
// panicking.
//
// A Registry is safe for concurrent use.
type Registry struct {
	reg prometheus.Registerer

	// mu guards the entries; a leaf lock (docs/locks.md).
	mu sync.Mutex
	// metrics is keyed by fully-qualified name and constant labels: one entry
	// per collector created.
	metrics map[string]*entry
	// families is keyed by fully-qualified name: what every collector of that
	// name must agree on for the exposition to be valid.
	families map[string]shape
}

// NewRegistry returns a Registry that registers on reg. The caller owns reg
// (usually a *prometheus.Registry built in main); nothing is ever registered
// on the global default registry.
func NewRegistry(reg prometheus.Registerer) *Registry {
	return &Registry{reg: reg, metrics: map[string]*entry{}, families: map[string]shape{}}
}

// Runtime returns the top of the hierarchy: metrics get the dynamo_component_
// prefix and no hierarchy labels (Dynamo's DistributedRuntime level, where
// dynamo_component_uptime_seconds lives).
func (r *Registry) Runtime() *Scope { return &Scope{r: r, level: levelRuntime} }

// Namespace is Runtime().Namespace(name).
func (r *Registry) Namespace(name string) *Scope { return r.Runtime().Namespace(name) }

// Unscoped returns a scope that takes names as given (after sanitising) and
// adds no labels: for the families Dynamo registers outside its hierarchy,
// dynamo_frontend_* and dynamo_router_*.
func (r *Registry) Unscoped() *Scope { return &Scope{r: r, level: levelUnscoped} }

// Names returns the fully-qualified names of the families created so far,
// sorted.
func (r *Registry) Names() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Sorted(maps.Keys(r.families))
}

// level is a level of the hierarchy.
type level uint8

const (
	levelUnscoped level = iota
	levelRuntime
	levelNamespace
	levelComponent
	levelEndpoint
)

// String names the level for error messages.
func (l level) String() string {
	switch l {
	case levelUnscoped:
		return "unscoped"
	case levelRuntime:
		return "runtime"
	case levelNamespace:
		return "namespace"
	case levelComponent:
		return "component"
	case levelEndpoint:
		return "endpoint"
	}
	return fmt.Sprintf("level(%d)", uint8(l))
}

// Scope is one level of the hierarchy. Metrics created in it carry its
// labels: dynamo_namespace from the namespace level down, dynamo_component
// from the component level down, dynamo_endpoint at the endpoint level. A
// Scope is a value to pass around; it is safe for concurrent use.
//
// A Scope built from an invalid name or at the wrong level keeps the error
// and returns it from every constructor, so a chain such as
// r.Namespace(ns).Component(c).Endpoint(e) needs one error check, at the end.
type Scope struct {
	r      *Registry
	level  level
	labels []labelPair // hierarchy labels, in hierarchy order
	err    error
}

type labelPair struct{ name, value string }

// Namespace returns the namespace name below the runtime level.
func (s *Scope) Namespace(name string) *Scope {
	return s.child(levelRuntime, levelNamespace, LabelNamespace, name)
}

// Component returns the component name below a namespace.
func (s *Scope) Component(name string) *Scope {
	return s.child(levelNamespace, levelComponent, LabelComponent, name)
}

// Endpoint returns the endpoint name below a component.
func (s *Scope) Endpoint(name string) *Scope {
	return s.child(levelComponent, levelEndpoint, LabelEndpoint, name)
}

// Labels returns the hierarchy labels that metrics of this scope carry.
func (s *Scope) Labels() prometheus.Labels {
	l := make(prometheus.Labels, len(s.labels))
	for _, p := range s.labels {
		l[p.name] = p.value
	}
	return l
}

// Err returns the error this scope was built with, if any.
func (s *Scope) Err() error { return s.err }

// child builds the scope one level down. Like Dynamo, it sanitises the name
// with the label-name rules to make the label value: namespace "my-ns" is
// dynamo_namespace="my_ns".
func (s *Scope) child(parent, lvl level, label, name string) *Scope {
	c := &Scope{r: s.r, level: lvl, err: s.err}
	if c.err != nil {
		return c
	}
	if s.level != parent {
		c.err = fmt.Errorf("%s %q under a %s scope: %w", lvl, name, s.level, ErrScope)
		return c
	}
	v, err := SanitizeLabelName(name)
	if err != nil {
		c.err = fmt.Errorf("%s %q: %w", lvl, name, err)
		return c
	}
	c.labels = append(slices.Clip(s.labels), labelPair{label, v})
	return c
}

// Opts describes a metric to create.
type Opts struct {
	// Name is the metric's name. In a hierarchy scope it is the part after
	// the dynamo_component_ prefix, which is always added ("requests_total"
	// gives dynamo_component_requests_total); in the unscoped scope it is the
	// whole name. It is sanitised with SanitizeMetricName.
	Name string
	// Help is the help text; required.
	Help string
	// ConstLabels are constant labels added to the hierarchy labels. They may
	// not repeat a hierarchy label.
	ConstLabels prometheus.Labels
	// Labels are the variable label names of a vector; vectors only.
	Labels []string
	// Buckets are the upper bounds of a histogram, strictly increasing;
	// histograms only. Nil means prometheus.DefBuckets.
	Buckets []float64
}

// kind is the kind of collector, vectors apart from scalars because they are
// different Go types.
type kind uint8

const (
	kindCounter kind = iota + 1
	kindCounterVec
	kindGauge
	kindGaugeVec
	kindGaugeFunc
	kindHistogram
	kindHistogramVec
)

// String names the kind for error messages.
func (k kind) String() string {
	return [...]string{"", "counter", "counter vector", "gauge", "gauge vector", "gauge func", "histogram", "histogram vector"}[k]
}

func (k kind) vector() bool { return k == kindCounterVec || k == kindGaugeVec || k == kindHistogramVec }

func (k kind) histogram() bool { return k == kindHistogram || k == kindHistogramVec }

// shape is what every collector of one family must share.
type shape struct {
	kind   kind
	help   string
	labels string // label names, constant and variable, sorted and joined
}

// String describes the shape for error messages.
func (s shape) String() string {
	return fmt.Sprintf("%s with labels [%s] and help %q", s.kind, s.labels, s.help)
}

// entry is one collector created by the Registry.
type entry struct {
	shape
	varLabels string // variable label names in order
	buckets   []float64
	collector prometheus.Collector
}

// Counter creates a counter, or returns the one created before with the same
// options.
func (s *Scope) Counter(o Opts) (prometheus.Counter, error) {
	return create(s, kindCounter, o, func(fq string, o Opts) prometheus.Counter {
		return prometheus.NewCounter(prometheus.CounterOpts{Name: fq, Help: o.Help, ConstLabels: o.ConstLabels})
	})
}

// CounterVec creates a counter vector with the variable labels o.Labels, or
// returns the one created before with the same options.
func (s *Scope) CounterVec(o Opts) (*prometheus.CounterVec, error) {
	return create(s, kindCounterVec, o, func(fq string, o Opts) *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts{Name: fq, Help: o.Help, ConstLabels: o.ConstLabels}, o.Labels)
	})
}

// Gauge creates a gauge, or returns the one created before with the same
// options.
func (s *Scope) Gauge(o Opts) (prometheus.Gauge, error) {
	return create(s, kindGauge, o, func(fq string, o Opts) prometheus.Gauge {
		return prometheus.NewGauge(prometheus.GaugeOpts{Name: fq, Help: o.Help, ConstLabels: o.ConstLabels})
	})
}

// GaugeVec creates a gauge vector with the variable labels o.Labels, or
// returns the one created before with the same options.
func (s *Scope) GaugeVec(o Opts) (*prometheus.GaugeVec, error) {
	return create(s, kindGaugeVec, o, func(fq string, o Opts) *prometheus.GaugeVec {
		return prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: fq, Help: o.Help, ConstLabels: o.ConstLabels}, o.Labels)
	})
}

// GaugeFunc creates a gauge whose value is f(), called at every scrape (from
// the scraping goroutine, so f must be safe for concurrent use). Asking again
// with the same options returns the first gauge, which keeps its first f.
func (s *Scope) GaugeFunc(o Opts, f func() float64) (prometheus.GaugeFunc, error) {
	return create(s, kindGaugeFunc, o, func(fq string, o Opts) prometheus.GaugeFunc {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: fq, Help: o.Help, ConstLabels: o.ConstLabels}, f)
	})
}

// Histogram creates a histogram with buckets o.Buckets, or returns the one
// created before with the same options.
func (s *Scope) Histogram(o Opts) (prometheus.Histogram, error) {
	return create(s, kindHistogram, o, func(fq string, o Opts) prometheus.Histogram {
		return prometheus.NewHistogram(prometheus.HistogramOpts{Name: fq, Help: o.Help, ConstLabels: o.ConstLabels, Buckets: o.Buckets})
	})
}

// HistogramVec creates a histogram vector with buckets o.Buckets and the
// variable labels o.Labels, or returns the one created before with the same
// options.
func (s *Scope) HistogramVec(o Opts) (*prometheus.HistogramVec, error) {
	return create(s, kindHistogramVec, o, func(fq string, o Opts) *prometheus.HistogramVec {
		return prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: fq, Help: o.Help, ConstLabels: o.ConstLabels, Buckets: o.Buckets}, o.Labels)
	})
}

// FullName returns the fully-qualified name a metric named name gets in this
// scope.
func (s *Scope) FullName(name string) (string, error) {
	n, err := SanitizeMetricName(name)
	if err != nil {
		return "", err
	}
	if s.level == levelUnscoped {
		return n, nil
	}
	return PrefixComponent + "_" + n, nil
}

// create validates o, then returns the collector already created under the
// same name and constant labels if it has the same shape, or builds and
// registers a new one. Validation happens before build because client_golang
// panics on some invalid options (unsorted buckets, an "le" label).
func create[T prometheus.Collector](s *Scope, k kind, o Opts, build func(fq string, o Opts) T) (T, error) {
	var zero T
	if s.err != nil {
		return zero, s.err
	}
	if s.r == nil || s.r.reg == nil {
		return zero, fmt.Errorf("create %s %s: %w", k, o.Name, ErrNoRegisterer)
	}
	fq, err := s.FullName(o.Name)
	if err != nil {
		return zero, fmt.Errorf("create %s: %w", k, err)
	}
	o, err = s.normalise(k, o)
	if err != nil {
		return zero, fmt.Errorf("create %s %s: %w", k, fq, err)
	}
	constLabels := s.Labels()
	maps.Copy(constLabels, o.ConstLabels)
	o.ConstLabels = constLabels

	e := &entry{
		shape:     shape{kind: k, help: o.Help, labels: labelSet(constLabels, o.Labels)},
		varLabels: strings.Join(o.Labels, ","),
		buckets:   o.Buckets,
	}
	key := metricKey(fq, constLabels)

	s.r.mu.Lock()
	defer s.r.mu.Unlock()
	if old, ok := s.r.metrics[key]; ok {
		if old.shape != e.shape || old.varLabels != e.varLabels || !slices.Equal(old.buckets, e.buckets) {
			return zero, fmt.Errorf("create %s %s: %w: have %s, asked for %s", k, key, ErrConflict, old.describe(), e.describe())
		}
		c, ok := old.collector.(T)
		if !ok { // cannot happen: same kind means same Go type
			return zero, fmt.Errorf("create %s %s: %w: have %T", k, key, ErrConflict, old.collector)
		}
		return c, nil
	}
	if fam, ok := s.r.families[fq]; ok && fam != e.shape {
		return zero, fmt.Errorf("create %s %s: %w: family is a %s, asked for a %s", k, fq, ErrConflict, fam, e.shape)
	}

	c := build(fq, o)
	if err := s.r.reg.Register(c); err != nil {
		// Registered by someone else on the same Registerer: use theirs if
		// it is of the right type, as client_golang's documentation advises.
		var are prometheus.AlreadyRegisteredError
		if !errors.As(err, &are) {
			return zero, fmt.Errorf("register %s %s: %w", k, key, err)
		}
		existing, ok := are.ExistingCollector.(T)
		if !ok {
			return zero, fmt.Errorf("register %s %s: %w: registered elsewhere as %T", k, key, ErrConflict, are.ExistingCollector)
		}
		c = existing
	}
	e.collector = c
	s.r.metrics[key] = e
	s.r.families[fq] = e.shape
	return c, nil
}

// normalise checks o against the kind and this scope and fills defaults.
func (s *Scope) normalise(k kind, o Opts) (Opts, error) {
	if strings.TrimSpace(o.Help) == "" {
		return o, fmt.Errorf("%w: no help text", ErrInvalidOpts)
	}
	if !k.vector() && len(o.Labels) > 0 {
		return o, fmt.Errorf("%w: variable labels %v on a %s", ErrInvalidOpts, o.Labels, k)
	}
	if !k.histogram() && o.Buckets != nil {
		return o, fmt.Errorf("%w: buckets on a %s", ErrInvalidOpts, k)
	}
	seen := map[string]bool{}
	for _, p := range s.labels {
		seen[p.name] = true
	}
	check := func(name string) error {
		switch {
		case !ValidLabelName(name):
			return fmt.Errorf("label %q: %w", name, ErrInvalidName)
		case seen[name]:
			return fmt.Errorf("label %q: %w: repeated or set by the hierarchy", name, ErrInvalidOpts)
		case k.histogram() && name == "le":
			return fmt.Errorf("label %q: %w: reserved in histograms", name, ErrInvalidOpts)
		}
		seen[name] = true
		return nil
	}
	for _, name := range slices.Sorted(maps.Keys(o.ConstLabels)) {
		if err := check(name); err != nil {
			return o, err
		}
	}
	for _, name := range o.Labels {
		if err := check(name); err != nil {
			return o, err
		}
	}
	if k.histogram() {
		if o.Buckets == nil {
			o.Buckets = prometheus.DefBuckets
		}
		o.Buckets = slices.Clone(o.Buckets)
		if n := len(o.Buckets); n > 0 && math.IsInf(o.Buckets[n-1], +1) {
			o.Buckets = o.Buckets[:n-1] // client_golang adds +Inf itself
		}
		for i, b := range o.Buckets {
			if math.IsNaN(b) || (i > 0 && b <= o.Buckets[i-1]) {
				return o, fmt.Errorf("%w: buckets %v not strictly increasing", ErrInvalidOpts, o.Buckets)
			}
		}
	}
	return o, nil
}

func (e *entry) describe() string {
	if e.kind.histogram() {
		return fmt.Sprintf("%s, buckets %v", e.shape, e.buckets)
	}
	return e.shape.String()
}

// metricKey is the identity of one collector: its name and constant labels,
// as client_golang identifies a descriptor.
func metricKey(fq string, constLabels prometheus.Labels) string {
	var b strings.Builder
	b.WriteString(fq)
	b.WriteByte('{')
	for i, name := range slices.Sorted(maps.Keys(constLabels)) {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, "%s=%q", name, constLabels[name])
	}
	b.WriteByte('}')
	return b.String()
}

func labelSet(constLabels prometheus.Labels, varLabels []string) string {
	names := slices.Collect(maps.Keys(constLabels))
	names = append(names, varLabels...)
	slices.Sort(names)
	return strings.Join(names, ",")
}
