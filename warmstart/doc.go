// Package warmstart gives a router that joins a running group of replicas
// the index its peers hold, instead of an empty one (docs/api.md §4,
// docs/architecture.md "Start-up order").
//
// Every replica subscribes to every worker's KV events, but a stored event
// is applied only under a parent the index holds: a replica started under
// load would reject, as parent_block_not_found, every new block hanging
// from a hot prefix stored before it started, and route blind for as long
// as the fleet keeps those prefixes. So a joiner first loads a peer's
// snapshot of the index.
//
// # Wire
//
// Every ready replica answers requests on Subject(ns, router component),
// namespace.{ns}.component.{router}.index_snapshot, in the queue group
// named after the router component, so that one replica answers each. The
// reply goes to the request's reply subject as a run of chunks: each
// message carries at most Config.ChunkSize bytes (the connection's maximum
// payload less ChunkMargin, by default) of the snapshot, a JSON list of
// RouterEvents (events.Subscriber.Snapshot), and the headers
// HeaderChunk (its index from 0), HeaderChunks (their number),
// HeaderBytes (the snapshot's length), HeaderEvents (its events) and
// HeaderRouter (the serving router's id). An error is one message with
// HeaderError and no body. Between chunks the server flushes every
// flushEvery bytes, so a snapshot of many MB holds other traffic of its
// connection back for no longer than that much takes to write.
//
// # Joining
//
// Joiner.Join, with the events.Writer holding the live events (Hold),
// requests a snapshot once the KV-event subscriptions are live, collects
// its chunks within Config.Timeout, checks them (collector: order, count,
// length; nothing is loaded from an incomplete snapshot), loads it
// (Writer.LoadSnapshot: decoded whole, then submitted with its event_id
// baselines) and releases the held events (Writer.Release), which skips
// those the snapshot holds. No responders means no peer: the router starts
// from the live events alone, as it does after any failure, which is
// logged once as a warning. Each start counts one result in
// dynamo_router_warm_start_total.
//
// # Concurrency
//
// A Server's Run owns its goroutine (the request loop) and returns when it
// has exited; it serves one request at a time. Join is called once, by the
// stack. NewServer, NewJoiner and NewMetrics start nothing.
package warmstart
