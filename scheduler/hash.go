package scheduler

import "github.com/kvrouter/router/blockhash"

// localHashes appends the LocalBlockHash of every full block of tokens to
// dst, salted for loraName (blockhash's fast path; no allocation with room in
// dst).
func localHashes(dst []uint64, tokens []uint32, blockSize int, loraName string) []uint64 {
	return blockhash.LocalHashesSeed(dst, tokens, blockSize, blockhash.Seed(loraName, ""))
}

// sequenceHashes appends the chained sequence hash of every prefix of
// locals to dst (blockhash.ChainHashes with Dynamo's chain seed).
func sequenceHashes(dst []uint64, locals []uint64) []uint64 {
	return blockhash.ChainHashes(dst, locals, blockhash.DefaultSeed)
}
