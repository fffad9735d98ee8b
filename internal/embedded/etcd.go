package embedded

import (
	"fmt"
	"net/url"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

// EtcdConfig says where an embedded etcd listens and keeps its data.
type EtcdConfig struct {
	// ClientURL and PeerURL, e.g. http://127.0.0.1:2379; port 0 picks a
	// free port.
	ClientURL string
	PeerURL   string
	// Dir holds the data; it must exist or be creatable.
	Dir string
	// SnapshotCount, when not 0, is how many writes trigger a snapshot,
	// after which etcd keeps only that many raft entries in memory (etcd's
	// default keeps thousands): for tests that measure memory in the
	// process etcd shares.
	SnapshotCount uint64
}

// Etcd is a running embedded etcd member.
type Etcd struct {
	e *embed.Etcd
}

// StartEtcd starts a single-member etcd and waits until it serves.
func StartEtcd(cfg EtcdConfig) (*Etcd, error) {
	curl, err := url.Parse(cfg.ClientURL)
	if err != nil {
		return nil, fmt.Errorf("start etcd: client url %q: %w", cfg.ClientURL, err)
	}
	purl, err := url.Parse(cfg.PeerURL)
	if err != nil {
		return nil, fmt.Errorf("start etcd: peer url %q: %w", cfg.PeerURL, err)
	}
	ec := embed.NewConfig()
	ec.Name = "router-embedded"
	ec.Dir = cfg.Dir
	if cfg.SnapshotCount > 0 {
		ec.SnapshotCount = cfg.SnapshotCount
		ec.SnapshotCatchUpEntries = cfg.SnapshotCount
	}
	// etcd logs through zap; the router reports etcd's failures itself.
	ec.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	ec.ListenClientUrls = []url.URL{*curl}
	ec.AdvertiseClientUrls = []url.URL{*curl}
	ec.ListenPeerUrls = []url.URL{*purl}
	ec.AdvertisePeerUrls = []url.URL{*purl}
	ec.InitialCluster = ec.Name + "=" + purl.String()
	e, err := embed.StartEtcd(ec)
	if err != nil {
		return nil, fmt.Errorf("start etcd on %s: %w", cfg.ClientURL, err)
	}
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		e.Close()
		return nil, fmt.Errorf("start etcd on %s: %w", cfg.ClientURL, err)
	case <-time.After(30 * time.Second):
		e.Close()
		return nil, fmt.Errorf("start etcd on %s: not ready within 30s", cfg.ClientURL)
	}
	return &Etcd{e: e}, nil
}

// Endpoint returns the client endpoint actually listened on, e.g.
// http://127.0.0.1:2379.
func (e *Etcd) Endpoint() string {
	return "http://" + e.e.Clients[0].Addr().String()
}

// Close stops etcd and waits for it.
func (e *Etcd) Close() { e.e.Close() }
