package indexbench

import (
	"math/bits"

	"github.com/kvrouter/router/indexer"
	"github.com/kvrouter/router/traces"
)

// Seeds that keep the mixer's uses apart.
const (
	localSeed  = 0x9e3779b97f4a7c15
	workerSeed = 0xc2b2ae3d27d4eb4f
	assignSeed = 0x165667b19e3779f9
)

// localHash is the router key j of trace block id b in copy d. j and d fit
// in 32 bits each (see the Config limits), so (j, d) packs injectively and
// distinct triples collide only by chance, about 2^-64 a pair.
func localHash(b uint64, j, d int) indexer.LocalHash {
	return indexer.LocalHash(traces.Mix64(traces.Mix64(b^localSeed) ^ (uint64(j)<<32 | uint64(d))))
}

// engineSeed starts worker w's chain of engine hashes.
func engineSeed(w int) indexer.BlockHash {
	return indexer.BlockHash(traces.Mix64(uint64(w) ^ workerSeed))
}

// chain is the engine hash of a block given its parent's and its key.
func chain(parent indexer.BlockHash, key indexer.LocalHash) indexer.BlockHash {
	return indexer.BlockHash(traces.Mix64(bits.RotateLeft64(uint64(parent), 23) ^ uint64(key)))
}

// assign picks the worker of a request copy from its first two hash ids
// (see the package comment for why two).
func assign(hashIDs []uint64, d, workers int) int {
	h := traces.Mix64(uint64(d) ^ assignSeed)
	for _, id := range hashIDs[:min(len(hashIDs), 2)] {
		h = traces.Mix64(h ^ id)
	}
	return int(h % uint64(workers))
}

// workerOf is the index's name for simulated worker w.
func workerOf(w int) indexer.Worker {
	return indexer.Worker{ID: indexer.WorkerID(w + 1)}
}
