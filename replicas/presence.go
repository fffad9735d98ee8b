package replicas

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/kvrouter/router/metrics"
	"github.com/kvrouter/router/service"
	"github.com/kvrouter/router/workers"
)

// Endpoint is the endpoint a router replica registers under.
const Endpoint = "route"

// Timing of the presence loop.
const (
	// retryEvery is the wait before trying etcd again after a failure.
	retryEvery = time.Second
	// etcdTimeout bounds one etcd call.
	etcdTimeout = 5 * time.Second
)

// Config names the replica and its group.
type Config struct {
	// Namespace and Component are the router's (--namespace,
	// --router-component): the replicas of one component are one group.
	Namespace, Component string
	// RouterID is the replica's instance id, the id of the lease it
	// started with; it names the key for the replica's whole life.
	RouterID uint64
	// LeaseTTL is the TTL of a lease granted after etcd lost the first.
	LeaseTTL time.Duration
	// ReplicaSync says whether --router-replica-sync is on; without it,
	// finding other replicas is warned about.
	ReplicaSync bool
}

// Validate reports a setting out of range.
func (c Config) Validate() error {
	var errs []error
	if c.Namespace == "" || c.Component == "" {
		errs = append(errs, fmt.Errorf("replicas: namespace %q and component %q must not be empty", c.Namespace, c.Component))
	}
	if c.RouterID == 0 {
		errs = append(errs, errors.New("replicas: router id 0 (it is the router's etcd lease id, never 0)"))
	}
	if c.LeaseTTL < time.Second {
		errs = append(errs, fmt.Errorf("replicas: lease TTL %v is below 1s", c.LeaseTTL))
	}
	return errors.Join(errs...)
}

// Prefix returns the etcd prefix of the replicas of a router component.
func Prefix(namespace, component string) string {
	return workers.InstancePrefix(namespace, component, Endpoint)
}

// Key returns the etcd key of replica id.
func Key(namespace, component string, id uint64) string {
	return workers.InstanceKey(namespace, component, Endpoint, id)
}

// Presence is one replica's presence in etcd and its view of the others.
// Make one with New and call Run once; Peers and Lease are safe for
// concurrent use with it.
type Presence struct {
	cfg Config
	cli *clientv3.Client
	log *slog.Logger

	replicas  prometheus.Gauge
	malformed prometheus.Counter

	// mu guards the fields below; a leaf lock.
	mu    sync.Mutex
	lease clientv3.LeaseID
	peers map[uint64]struct{}
	// bad holds the malformed keys already counted, at their revision.
	bad map[string]int64
	// warned says peers were found with replica sync off and that was
	// warned about; it resets when the peers are gone.
	warned bool
}

// New returns the presence of replica cfg.RouterID holding lease (whose id
// is normally cfg.RouterID). Its families are built from m. It starts
// nothing.
func New(cfg Config, cli *clientv3.Client, lease clientv3.LeaseID, m *metrics.Router, log *slog.Logger) (*Presence, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cli == nil || m == nil {
		return nil, errors.New("replicas: nil etcd client or metrics")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	var b metrics.Builder
	comp := m.Component()
	p := &Presence{
		cfg: cfg, cli: cli, log: log, lease: lease,
		replicas: b.Gauge(comp, metrics.Opts{Name: metrics.Suffix(metrics.NameRouterReplicas),
			Help: "Number of router replicas registered in etcd under the router's component, this one included"}),
		peers: make(map[uint64]struct{}),
		bad:   make(map[string]int64),
	}
	vec, err := m.DiscoveryMalformed()
	if err = errors.Join(b.Err(), err); err != nil {
		return nil, fmt.Errorf("replicas: metrics: %w", err)
	}
	p.malformed = vec.WithLabelValues(metrics.DiscoveryReplica)
	p.replicas.Set(1)
	return p, nil
}

// Peers returns the ids of the other replicas known, sorted.
func (p *Presence) Peers() []uint64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	ids := make([]uint64, 0, len(p.peers))
	for id := range p.peers {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

// Lease returns the lease the replica holds now: the one it started with,
// or one granted after etcd lost it. The caller revokes it at the end.
func (p *Presence) Lease() clientv3.LeaseID {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.lease
}

// Run keeps the lease and the key alive and the view of the other replicas
// current until ctx ends. etcd failures are retried; Run returns nil when
// ctx ends.
func (p *Presence) Run(ctx context.Context) error {
	regrant := make(chan struct{}, 1)
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() { p.keepLease(ctx, regrant) })
	for ctx.Err() == nil {
		err := p.register(ctx)
		if err == nil {
			err = p.follow(ctx, regrant)
		}
		if ctx.Err() != nil {
			break
		}
		p.log.Warn("router replicas: etcd failed; retrying", "error", err, "retry_in", retryEvery)
		t := time.NewTimer(retryEvery)
		select {
		case <-ctx.Done():
			t.Stop()
		case <-t.C:
		}
	}
	return nil
}

// register puts the replica's key on its current lease.
func (p *Presence) register(ctx context.Context) error {
	c := p.cfg
	v := workers.InstanceValue(c.Namespace, c.Component, Endpoint, c.RouterID, service.Subject(c.Namespace, c.Component, Endpoint))
	rctx, cancel := context.WithTimeout(ctx, etcdTimeout)
	defer cancel()
	key := Key(c.Namespace, c.Component, c.RouterID)
	if _, err := p.cli.Put(rctx, key, string(v), clientv3.WithLease(p.Lease())); err != nil {
		return fmt.Errorf("put %s: %w", key, err)
	}
	return nil
}

// follow lists the replicas and applies the watch's changes until it
// breaks or ctx ends. A new lease (regrant) puts the key again.
func (p *Presence) follow(ctx context.Context, regrant <-chan struct{}) error {
	prefix := Prefix(p.cfg.Namespace, p.cfg.Component)
	lctx, cancel := context.WithTimeout(ctx, etcdTimeout)
	resp, err := p.cli.Get(lctx, prefix, clientv3.WithPrefix())
	cancel()
	if err != nil {
		return fmt.Errorf("list %s: %w", prefix, err)
	}
	ids := make(map[uint64]struct{})
	for _, kv := range resp.Kvs {
		if id, ok := p.parse(string(kv.Key), kv.ModRevision); ok {
			ids[id] = struct{}{}
		}
	}
	p.set(ids)
	wctx, stop := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer stop()
	wch := p.cli.Watch(wctx, prefix, clientv3.WithPrefix(), clientv3.WithRev(resp.Header.Revision+1))
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-regrant:
			if err := p.register(ctx); err != nil {
				return err
			}
		case wr, ok := <-wch:
			if !ok {
				return errors.New("watch closed")
			}
			if err := wr.Err(); err != nil {
				return fmt.Errorf("watch %s: %w", prefix, err)
			}
			if len(wr.Events) == 0 {
				continue
			}
			p.mu.Lock()
			next := maps.Clone(p.peers)
			p.mu.Unlock()
			for _, ev := range wr.Events {
				id, ok := p.parse(string(ev.Kv.Key), ev.Kv.ModRevision)
				if !ok {
					continue
				}
				if ev.Type == clientv3.EventTypeDelete {
					delete(next, id)
				} else {
					next[id] = struct{}{}
				}
			}
			p.set(next)
		}
	}
}

// parse returns the replica id a key names; a malformed key is counted
// and logged once per revision.
func (p *Presence) parse(key string, rev int64) (uint64, bool) {
	seg := key[strings.LastIndexByte(key, '/')+1:]
	id, err := strconv.ParseUint(seg, 16, 64)
	if err == nil && id != 0 {
		return id, true
	}
	p.mu.Lock()
	counted := p.bad[key] == rev
	p.bad[key] = rev
	p.mu.Unlock()
	if !counted {
		p.malformed.Inc()
		p.log.Warn("router replicas: skipping a key whose last segment is not a non-zero hexadecimal instance id",
			"key", key, "mod_revision", rev)
	}
	return 0, false
}

// set replaces the known replicas (this one excluded from ids or not),
// logging who came and went and warning when peers appear without sync.
func (p *Presence) set(ids map[uint64]struct{}) {
	delete(ids, p.cfg.RouterID)
	p.mu.Lock()
	old := p.peers
	p.peers = ids
	warn := len(ids) > 0 && !p.cfg.ReplicaSync && !p.warned
	p.warned = len(ids) > 0 && (p.warned || warn)
	p.mu.Unlock()
	p.replicas.Set(float64(len(ids) + 1))
	for id := range ids {
		if _, ok := old[id]; !ok {
			p.log.Info("router replica joined", "peer_router_id", id, "replicas", len(ids)+1)
		}
	}
	for id := range old {
		if _, ok := ids[id]; !ok {
			p.log.Info("router replica left", "peer_router_id", id, "replicas", len(ids)+1)
		}
	}
	if warn {
		p.log.Warn("other router replicas serve this component while --router-replica-sync is off: "+
			"each replica predicts worker load from its own bookings only; turn replica sync on for a shared view (docs: README, Running several routers)",
			"replicas", len(ids)+1)
	}
}

// keepLease keeps the lease alive until ctx ends. If etcd lost it during an
// outage longer than its TTL, a new one is granted and regrant told, so
// that the key is put again; the replica keeps its id.
func (p *Presence) keepLease(ctx context.Context, regrant chan<- struct{}) {
	for {
		if ch, err := p.cli.KeepAlive(ctx, p.Lease()); err == nil {
			for range ch {
			}
		}
		t := time.NewTimer(retryEvery)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		rctx, cancel := context.WithTimeout(ctx, etcdTimeout)
		ttl, err := p.cli.TimeToLive(rctx, p.Lease())
		if err == nil && ttl.TTL <= 0 {
			if g, gerr := p.cli.Grant(rctx, int64(p.cfg.LeaseTTL/time.Second)); gerr == nil {
				p.log.Info("router lease expired during an etcd outage; granted a new one", "lease_id", int64(g.ID))
				p.mu.Lock()
				p.lease = g.ID
				p.mu.Unlock()
				select {
				case regrant <- struct{}{}:
				default:
				}
			}
		}
		cancel()
	}
}
