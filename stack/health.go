package stack

import (
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/kvrouter/router/status"
	"github.com/kvrouter/router/workers"
)

// addChecks registers the router's readiness checks (docs/api.md §5):
// notready while NATS is down, the workers are not listed or too stale, or
// the KV events are not live; an etcd outage alone and block-size
// mismatches are degraded, /health stays 200 and says so.
func (s *Stack) addChecks(srv *status.Server, nc *nats.Conn, blockSize int) {
	srv.AddCheck("nats", func() (status.State, string) { return natsHealth(nc.Status()) })
	srv.AddCheck("etcd", func() (status.State, string) { return etcdHealth(s.reg.Status()) })
	srv.AddCheck("workers", func() (status.State, string) {
		if rs := s.reg.Status(); !rs.Ready {
			return status.Failed, rs.Reason
		}
		return status.OK, ""
	})
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
		if s.EventsReady() {
			return status.OK, ""
		}
		return status.Failed, "KV event subscriptions not live yet (durable mode: replaying)"
	})
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

// etcdHealth reports an etcd outage as degraded: routing goes on from the
// last known workers. Past --router-workers-max-staleness the "workers"
// check fails instead (the registry is no longer ready).
func etcdHealth(rs workers.Status) (status.State, string) {
	if rs.EtcdReachable {
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
