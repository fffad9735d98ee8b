package workers

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Reasons a watch ends, other than the context.
var (
	// errUnreachable: etcd did not answer a request within the timeout.
	errUnreachable = errors.New("etcd unreachable")
	// errCompacted: the watch asked for revisions etcd has compacted away.
	errCompacted = errors.New("watch revision compacted")
	// errWatchClosed: the client closed the watch channel.
	errWatchClosed = errors.New("watch channel closed")
)

// Discovery keeps a Registry in step with Dynamo's discovery entries in
// etcd: it lists v1/instances/{ns}/ and v1/mdc/{ns}/ at one revision, then
// watches from the next, and lists again whenever the watch breaks. Run owns
// its goroutines (the watch loop and a probe).
type Discovery struct {
	cfg Config
	cli *clientv3.Client
	reg *Registry
	log *slog.Logger

	backoffMin, backoffMax time.Duration
	// afterList, when set by a test, runs after each successful listing and
	// before the watch starts, with the listing's revision.
	afterList func(rev int64)
}

// NewDiscovery returns a discovery of cfg's namespace through cli, feeding
// reg. The caller owns cli. It starts nothing.
func NewDiscovery(cfg Config, cli *clientv3.Client, reg *Registry, log *slog.Logger) (*Discovery, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cli == nil || reg == nil {
		return nil, errors.New("discovery: nil etcd client or registry")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Discovery{
		cfg: cfg, cli: cli, reg: reg, log: log,
		backoffMin: 100 * time.Millisecond,
		backoffMax: 5 * time.Second,
	}, nil
}

func (d *Discovery) instancesPrefix() string { return instancesRoot + d.cfg.Namespace + "/" }
func (d *Discovery) cardsPrefix() string     { return cardsRoot + d.cfg.Namespace + "/" }

// Run lists and watches until ctx is done, then returns nil once its
// goroutines have exited. It never gives up on etcd: while etcd cannot be
// reached the registry keeps its last workers (ready until the outage is
// older than Config.MaxStaleness), and Run retries with backoff.
func (d *Discovery) Run(ctx context.Context) error {
	delay := d.backoffMin
	for {
		rev, err := d.list(ctx)
		if err == nil {
			if d.afterList != nil {
				d.afterList(rev)
			}
			start := time.Now()
			err = d.watch(ctx, rev+1)
			if time.Since(start) > d.backoffMax {
				delay = d.backoffMin // a watch that lived a while was healthy
			}
		}
		if ctx.Err() != nil {
			return nil
		}
		switch {
		case errors.Is(err, errUnreachable):
			d.reg.etcdDown(err)
		case errors.Is(err, errCompacted):
			d.log.Info("discovery watch fell behind etcd's compaction; listing again", "error", err)
		default:
			d.log.Warn("discovery watch ended; listing again", "error", err)
		}
		// Jitter spreads the relists of many routers after an etcd outage.
		wait := delay/2 + rand.N(delay/2+1)
		delay = min(2*delay, d.backoffMax)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
	}
}

// list reads both prefixes at one revision (one transaction), replaces the
// registry's content with them, and returns the revision.
func (d *Discovery) list(ctx context.Context) (int64, error) {
	lctx, cancel := context.WithTimeout(ctx, d.cfg.EtcdTimeout)
	defer cancel()
	resp, err := d.cli.Txn(lctx).Then(
		clientv3.OpGet(d.instancesPrefix(), clientv3.WithPrefix()),
		clientv3.OpGet(d.cardsPrefix(), clientv3.WithPrefix()),
	).Commit()
	if err != nil {
		return 0, fmt.Errorf("%w: list %s and %s: %v", errUnreachable, d.instancesPrefix(), d.cardsPrefix(), err)
	}
	var kvs []change
	for _, op := range resp.Responses {
		for _, kv := range op.GetResponseRange().GetKvs() {
			kvs = append(kvs, change{key: string(kv.Key), value: kv.Value, modRev: kv.ModRevision})
		}
	}
	d.reg.replace(kvs)
	d.log.Debug("listed discovery entries", "keys", len(kvs), "revision", resp.Header.Revision)
	return resp.Header.Revision, nil
}

// watch applies changes from revision rev on until the watch breaks, etcd
// stops answering the probe, or ctx is done.
//
// One watch covers both prefixes: the range from v1/instances/{ns}/ to the
// end of v1/mdc/{ns}/. A single stream is ordered by revision and delivers
// the events of one revision together, so a lease expiry, which deletes a
// worker's instance and card in one revision, reaches the registry as one
// change. The range also holds keys the registry does not track (other
// namespaces between the two); it skips them.
func (d *Discovery) watch(ctx context.Context, rev int64) error {
	// WithRequireLeader makes a member that lost its leader end the watch
	// instead of keeping it open and silent.
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	var wg sync.WaitGroup
	defer func() {
		cancel()
		wg.Wait()
	}()

	// The probe starts first: Watch itself blocks until etcd confirms the
	// watch, and only cancelling its context ends that wait when etcd died
	// just after the listing. A failed probe reports, then cancels.
	probe := make(chan error, 1)
	wg.Add(1)
	go func() {
		defer wg.Done()
		err := d.probe(wctx)
		probe <- err
		if err != nil {
			cancel()
		}
	}()
	wch := d.cli.Watch(wctx, d.instancesPrefix(),
		clientv3.WithRange(clientv3.GetPrefixRangeEnd(d.cardsPrefix())),
		clientv3.WithRev(rev))

	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-probe:
			if err == nil {
				return ctx.Err()
			}
			return err
		case resp, ok := <-wch:
			if !ok {
				// Closed because the probe failed, or by the client.
				select {
				case err := <-probe:
					if err != nil {
						return err
					}
				default:
				}
				return errWatchClosed
			}
			if resp.CompactRevision != 0 {
				return fmt.Errorf("%w: from revision %d, compacted up to %d", errCompacted, rev, resp.CompactRevision)
			}
			if err := resp.Err(); errors.Is(err, rpctypes.ErrNoLeader) {
				return fmt.Errorf("%w: watch: %v", errUnreachable, err)
			} else if err != nil {
				return fmt.Errorf("watch %s: %w", d.instancesPrefix(), err)
			}
			if len(resp.Events) == 0 {
				continue // progress notification
			}
			cs := make([]change, len(resp.Events))
			for i, ev := range resp.Events {
				cs[i] = change{key: string(ev.Kv.Key), value: ev.Kv.Value, modRev: ev.Kv.ModRevision, deleted: ev.Type == clientv3.EventTypeDelete}
			}
			d.reg.apply(cs)
			rev = resp.Header.Revision + 1
		}
	}
}

// probe asks etcd for a linearizable read every EtcdProbeInterval and
// returns an error wrapping errUnreachable at the first that fails. etcd's
// client retries a broken watch stream forever and says nothing, so this is
// how a dead etcd is noticed. It returns nil when ctx is done.
func (d *Discovery) probe(ctx context.Context) error {
	tick := time.NewTicker(d.cfg.EtcdProbeInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		pctx, cancel := context.WithTimeout(ctx, d.cfg.EtcdTimeout)
		_, err := d.cli.Get(pctx, d.instancesPrefix(), clientv3.WithPrefix(), clientv3.WithCountOnly())
		cancel()
		if err != nil && ctx.Err() == nil {
			return fmt.Errorf("%w: probe: %v", errUnreachable, err)
		}
	}
}
