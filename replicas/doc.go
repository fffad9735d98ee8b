// Package replicas makes a router replica known to the others and keeps
// its view of them. Routers that serve one component run in one NATS queue
// group; this package is how they find each other.
//
// A Presence owns the router's etcd lease: it keeps it alive, grants a new
// one if etcd lost it during an outage (the router keeps the id it started
// with), and holds on it the key
//
//	v1/instances/{ns}/{router component}/route/{router id, lower-case hex}
//
// whose value is an Endpoint record of the same shape as a worker's
// (docs/api.md §4). It watches the same prefix for the other replicas: they
// are counted in dynamo_component_router_replicas (this one included), a
// replica that comes or goes is logged, and a replica that finds others
// while replica sync is off warns once per such stretch, since each replica
// then predicts worker load from its own bookings only.
//
// A key under the prefix whose last segment is not a hexadecimal id is
// skipped, counted in
// dynamo_component_router_discovery_malformed_total{kind="replica"} and
// logged. While etcd is unreachable the last known replicas are kept.
package replicas
