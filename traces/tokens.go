package traces

// tokenSeed separates synthetic token ids from other uses of the mixer.
const tokenSeed = 0x6d6f6f6e63616b65 // "mooncake"

// Tokens appends to dst blockTokens synthetic token ids for each hash id, in
// order, and returns the extended slice. Token j of a block depends only on
// the block's hash id and j, so requests that share leading hash ids share
// leading tokens, exactly as the trace says they share a prefix, and real
// block hashing (package blockhash) can run on them. It allocates only when
// dst lacks capacity; blockTokens <= 0 appends nothing.
//
// The ids span the whole uint32 range, not a real vocabulary: nothing
// downstream interprets them.
func Tokens(hashIDs []uint64, blockTokens int, dst []uint32) []uint32 {
	if blockTokens <= 0 {
		return dst
	}
	for _, id := range hashIDs {
		base := Mix64(id ^ tokenSeed)
		for j := range blockTokens {
			dst = append(dst, uint32(Mix64(base+uint64(j))>>32))
		}
	}
	return dst
}

// mix64 is the SplitMix64 finaliser: a bijection of uint64 whose output
// bits each depend on every input bit.
func Mix64(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}
