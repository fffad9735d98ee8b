package metrics

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Defaults of Config.
const (
	// DefaultNamespace is Dynamo's default namespace.
	DefaultNamespace = "dynamo"
	// DefaultComponent is the router's component in Dynamo.
	DefaultComponent = "router"
)

// Config says where the router's metrics sit in the hierarchy.
type Config struct {
	// Namespace is the dynamo_namespace label (flag --namespace).
	Namespace string
	// Component is the router's own component, the dynamo_component label
	// (flag --router-component).
	Component string
	// RouterID is the router's instance id, the router_id label.
	RouterID uint64
	// Now is the clock of the gauges computed at every scrape (uptime,
	// workers staleness); nil means time.Now.
	Now func() time.Time
}

// DefaultConfig returns Dynamo's defaults. RouterID is left 0: the daemon
// sets it once it has its instance id.
func DefaultConfig() Config {
	return Config{Namespace: DefaultNamespace, Component: DefaultComponent}
}

// Validate reports the first field that cannot become a label value.
func (c Config) Validate() error {
	if _, err := SanitizeLabelName(c.Namespace); err != nil {
		return fmt.Errorf("namespace %q: must contain a letter, digit or underscore: %w", c.Namespace, err)
	}
	if _, err := SanitizeLabelName(c.Component); err != nil {
		return fmt.Errorf("router component %q: must contain a letter, digit or underscore: %w", c.Component, err)
	}
	return nil
}

// Router is where one router instance's families live: the Registry, the
// router's component scope, its router_id and its clock. It holds no family
// of its own but the runtime's uptime gauge; each package that produces
// measurements builds its families from it (events.NewMetrics,
// workers.NewMetrics, scheduler.NewMetrics, service.NewMetrics, the
// overhead constructors), with the names of names.go. Building a package's
// families twice from one Router returns the same collectors, so a test can
// read what a component it built counts.
//
// A Router is safe for concurrent use.
type Router struct {
	reg      *Registry
	comp     *Scope
	routerID string
	now      func() time.Time

	// Uptime is dynamo_component_uptime_seconds, computed at every scrape
	// from Config.Now.
	Uptime prometheus.GaugeFunc
}

// New checks cfg and returns the Router of reg, with the uptime gauge
// registered. It fails if cfg is invalid or reg already holds the uptime
// gauge with another shape; called twice on one reg with the same cfg, it
// returns a Router sharing the first one's collectors.
func New(reg prometheus.Registerer, cfg Config) (*Router, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("router metrics: %w", err)
	}
	now := cfg.Now
	if now == nil {
		now = time.Now
	}
	r := NewRegistry(reg)
	m := &Router{
		reg:      r,
		comp:     r.Namespace(cfg.Namespace).Component(cfg.Component),
		routerID: strconv.FormatUint(cfg.RouterID, 10),
		now:      now,
	}
	start := now()
	up, err := r.Runtime().GaugeFunc(Opts{Name: Suffix(NameUptimeSeconds), Help: "Total uptime of the DistributedRuntime in seconds"},
		func() float64 { return now().Sub(start).Seconds() })
	if err != nil {
		return nil, fmt.Errorf("router metrics: %w", err)
	}
	m.Uptime = up
	return m, nil
}

// Registry returns the hierarchy the router's metrics are created in.
func (m *Router) Registry() *Registry { return m.reg }

// Component returns the router's component scope: metrics created there
// carry dynamo_namespace and dynamo_component.
func (m *Router) Component() *Scope { return m.comp }

// Unscoped returns the scope of the families Dynamo registers outside its
// hierarchy (dynamo_frontend_*, dynamo_router_*).
func (m *Router) Unscoped() *Scope { return m.reg.Unscoped() }

// RouterID returns the router_id constant label, a new map at each call
// so that a caller may add to it.
func (m *Router) RouterID() prometheus.Labels {
	return prometheus.Labels{LabelRouterID: m.routerID}
}

// DiscoveryMalformed returns dynamo_component_router_discovery_malformed_total
// (label kind), which the worker registry, the replicas' presence and the
// event plane's discovery share: each builds it, and building it again
// returns it.
func (m *Router) DiscoveryMalformed() (*prometheus.CounterVec, error) {
	return m.comp.CounterVec(Opts{Name: Suffix(NameDiscoveryMalformedTotal),
		Help: "Total number of discovery values that could not be parsed", Labels: []string{LabelKind}})
}

// Now reads the clock of Config.Now, for gauges computed at scrape time.
func (m *Router) Now() time.Time { return m.now() }

// Worker names the series of one worker rank in the per-worker families
// (labels worker_id, dp_rank, worker_type, or router_worker_id for the
// first on dynamo_component_router_worker_registered).
type Worker struct {
	ID     uint64
	DPRank uint32
	// Type is WorkerTypePrefill or WorkerTypeDecode (aggregated workers are
	// decode, as in Dynamo).
	Type string
}

// Values returns the label values of w in the order worker id, dp_rank,
// worker_type.
func (w Worker) Values() []string {
	return []string{strconv.FormatUint(w.ID, 10), strconv.FormatUint(uint64(w.DPRank), 10), w.Type}
}

// Suffix strips from a full name of names.go the dynamo_component_ prefix
// that a hierarchy scope adds, so names.go can hold full names only.
func Suffix(name string) string {
	s, _ := strings.CutPrefix(name, PrefixComponent+"_")
	return s
}
