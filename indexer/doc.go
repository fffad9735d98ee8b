// Package indexer keeps the router's KV index: which worker ranks hold which
// KV blocks, as a radix tree keyed by LocalBlockHash, with Dynamo's event
// semantics (store under a parent, remove, clear, remove a worker) and
// find_matches, the per-rank count of leading blocks of a prompt that a rank
// already holds.
//
// # Model
//
// Every worker rank holds a prefix-closed set of tree paths: if it holds a
// node it holds the node's parent. Stores keep this by construction (a block
// hangs under a parent the rank holds); removing a block from a rank also
// removes the rank's blocks below it, which could never be matched anyway,
// because a match counts contiguous blocks from the first. A node that no
// rank holds is deleted. Because of the invariant, a rank's score for a query
// is the depth of the deepest node on the query's path that it holds, and
// the ranks still matching at depth d are exactly the holders of the node at
// depth d.
//
// The engine's own hash of a block (BlockHash) is kept per rank in a reverse
// map to the node, so events can name parents and removals. A rank may hold
// one node under several engine hashes (aliases); it holds the block until
// the last of them is removed.
//
// # Storage tiers
//
// A rank may hold copies of a block on several storage tiers (Tier: the
// device, host memory, disk, external storage). It holds the block while any
// tier does: everything above is about that, and the tiers are a set per
// engine hash on the side (tiers.go). A stored event adds its tier, a stored
// event by hash (Event.ByHash) adds its tier to blocks the rank already
// holds, and a removed event drops its tier, the hash going (as above) once
// no tier is left; clears, worker removals and evictions drop every tier.
// FindMatches scores the prefix across tiers and counts each matched block
// on its fastest tier (Match.Host, Disk, External). The semantics, in the
// terms of the wire, are docs/compat.md §4.10.
//
// # Memory
//
// Nodes live in one slice and are addressed by 32-bit indices: 28 bytes a
// node, with the first holder inline; nodes held by several ranks keep a
// sorted slot list on the side, and children of nodes with several are
// found, and unlinked, through a map beside the tree. Each rank's engine
// hashes sit in a table of one-cache-line buckets, 70% to 90% full
// (blockmap.go): on the Mooncake replay the index takes about 45 bytes per
// (rank, block) entry, two thirds of it nodes.
//
// Tiers cost a rank nothing while it holds every block on the device alone:
// its tier record is a nil pointer. Once it holds a copy elsewhere, each of
// its blocks with such a copy takes an entry in a map from node to tier set,
// and each such block it names by several hashes a small record of their
// tiers; once any rank holds a block with no device copy, the tree counts
// such ranks per node (4 bytes and a bit per node), so that FindMatches
// looks tiers up only where one is. BenchmarkBytesPerEntryTiered, where
// every entry has a host copy, takes about 75 bytes per entry against 47.
//
// Config.MaxEntries caps the (rank, block) entries: past it, the least
// recently matched or stored subtrees are evicted, leaves before their
// parents, down to Config.EvictTo of the cap.
//
// # Concurrency
//
// A Tree is not locked. FindMatches may run concurrently with other
// FindMatches calls (it only reads, and refreshes recency stamps atomically);
// every other method needs exclusive access.
//
// Index makes a Tree safe for concurrent use, and applies the events of
// different worker ranks in parallel. An event is applied in three phases
// (phases.go): its rank's lookups in the rank's own table of engine hashes,
// under that rank's lock alone; the change of the tree, under the tree's
// write lock; the inserts into the rank's table, under the rank's lock
// again. The table's work, most of a write's cost (its cache misses), so
// runs beside other ranks' events and beside queries, which take the tree's
// read lock only. What needs every rank's table (eviction, RemoveWorker,
// Dump) waits until no event is in flight. Events of one rank must be
// applied from one goroutine at a time, as the router's event shards do,
// or their order is whatever the locks make it. Size accessors read
// atomics and never block.
package indexer
