package stack

import (
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/kvrouter/router/events"
	"github.com/kvrouter/router/status"
	"github.com/kvrouter/router/workers"
	"github.com/kvrouter/router/zmqevents"
)

// addChecks registers the router's readiness checks (docs/api.md §5):
// notready while NATS is down, the workers are not listed or too stale, or
// the KV events are not live (warm start included); an etcd outage alone,
// block-size mismatches and a diverging index are degraded, /health stays
// 200 and says so.
func (s *Stack) addChecks(srv *status.Server, nc *nats.Conn, blockSize int) {
	srv.AddCheck("nats", func() (status.State, string) { return natsHealth(nc.Status()) })
	srv.AddCheck("etcd", func() (status.State, string) { return etcdHealth(s.reg.Status()) })
	srv.AddCheck("workers", func() (status.State, string) { return workersHealth(s.reg.Status()) })
	srv.AddCheck("block_size", func() (status.State, string) {
		mm := s.reg.Status().BlockSizeMismatches
		if len(mm) == 0 {
			return status.OK, ""
		}
		parts := make([]string, len(mm))
		for i, m := range mm {
			parts[i] = m.String()
		}
		return status.Degraded, fmt.Sprintf("%d worker(s) with a KV block size other than the router's %d: %s", len(mm), blockSize, strings.Join(parts, "; "))
	})
	srv.AddCheck("kv_events", func() (status.State, string) {
		switch {
		case s.EventsReady():
			return status.OK, ""
		case s.sub.Ready() && s.WarmStarting():
			return status.Failed, "warm start: loading the index from a peer"
		}
		return status.Failed, "KV event subscriptions not live yet (durable mode: replaying)"
	})
	srv.AddCheck("index", func() (status.State, string) { return indexHealth(s.Divergence()) })
	if s.zmq != nil {
		srv.AddCheck("kv_publishers", func() (status.State, string) { return publishersHealth(s.zmq.Status(), blockSize) })
	}
}

// indexHealth reports a diverging index as degraded, not failed: routing
// still works, every decision just predicts fewer hits than the workers
// have, and taking the router out of its load balancer would not make its
// index any warmer (it warms as the workers store again); the operator sees
// it and the figures.
func indexHealth(d events.Divergence) (status.State, string) {
	if !d.Diverging {
		return status.OK, ""
	}
	return status.Degraded, "diverging: " + d.String() +
		"; routing predicts fewer cache hits than the workers have (a start without a warm start, or lost events)"
}

// natsHealth fails unless the connection is up: without NATS the router
// neither hears events nor answers routes.
func natsHealth(st nats.Status) (status.State, string) {
	switch st {
	case nats.CONNECTED:
		return status.OK, ""
	case nats.RECONNECTING, nats.DISCONNECTED, nats.CONNECTING:
		return status.Failed, "disconnected from NATS, reconnecting"
	}
	return status.Failed, fmt.Sprintf("NATS connection %v", st)
}

// workersHealth fails until the registry is ready; a workers file whose
// last reading was refused is degraded: its last good set is served.
func workersHealth(rs workers.Status) (status.State, string) {
	switch {
	case !rs.Ready:
		return status.Failed, rs.Reason
	case rs.FileError != "":
		return status.Degraded, "serving the workers file's last good set: " + rs.FileError
	}
	return status.OK, ""
}

// etcdHealth reports an etcd outage as degraded: routing goes on from the
// last known workers. Past --router-workers-max-staleness the "workers"
// check fails instead (the registry is no longer ready). With etcd off
// (an empty --etcd-endpoints) there is nothing to be down.
func etcdHealth(rs workers.Status) (status.State, string) {
	if rs.EtcdReachable || rs.EtcdOff {
		return status.OK, ""
	}
	if !rs.Listed {
		return status.Degraded, "unreachable, no workers listed yet: " + rs.EtcdError
	}
	limit := "never notready for etcd alone (--router-workers-max-staleness 0)"
	if rs.MaxStaleness > 0 {
		limit = fmt.Sprintf("notready after --router-workers-max-staleness %v", rs.MaxStaleness)
	}
	return status.Degraded, fmt.Sprintf("unreachable for %v; serving the %d last known workers, %s: %s",
		rs.Staleness.Round(time.Second), rs.Workers, limit, rs.EtcdError)
}

// publishersHealth reports ZMQ publishers that are not connected, or whose
// blocks are of another size than the router's, as degraded: the router
// routes on, with less of those workers' cache in its index (nothing of a
// mismatched engine's), and dials the lost ones again.
func publishersHealth(st []zmqevents.PublisherStatus, blockSize int) (status.State, string) {
	down, mismatched := zmqevents.Health(st, blockSize)
	switch {
	case down != "" && mismatched != "":
		return status.Degraded, down + "; " + mismatched
	case down != "":
		return status.Degraded, down
	case mismatched != "":
		return status.Degraded, mismatched
	}
	return status.OK, ""
}
