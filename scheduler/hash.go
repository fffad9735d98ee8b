package scheduler

import (
	"encoding/binary"
	"unsafe"

	"github.com/zeebo/xxh3"

	"github.com/kvrouter/router/blockhash"
)

// littleEndian says the machine stores a uint32 as its little-endian bytes,
// which is the byte string Dynamo hashes for each token.
var littleEndian = binary.NativeEndian.Uint16([]byte{1, 0}) == 1

// localHashes appends the LocalBlockHash of every full block of tokens to
// dst, salted for loraName, exactly as blockhash.Hasher.LocalHashes does.
//
// Why not call blockhash: it copies each block through a 256-byte buffer and
// streams blocks larger than 64 tokens through an xxh3.Hasher it allocates,
// 1.3 µs and 2 allocations per 128-token block here. On a little-endian
// machine the tokens in memory already are the bytes to hash, so each block
// is one xxh3.HashSeed over the slice, 40 ns. TestLocalHashesMatchBlockhash
// and FuzzLocalHashes hold the two to the same output; once blockhash takes
// this fast path itself, this function should go.
func localHashes(dst []uint64, tokens []uint32, blockSize int, loraName string) []uint64 {
	seed := blockhash.Seed(loraName, "")
	if !littleEndian {
		h, err := blockhash.NewHasher(blockSize, blockhash.Options{LoRAName: loraName})
		if err != nil {
			return dst // the block size was validated at start
		}
		return h.LocalHashes(dst, tokens)
	}
	n := len(tokens) / blockSize
	if n == 0 {
		return dst
	}
	b := unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(tokens))), n*blockSize*4)
	size := blockSize * 4
	for i := 0; i < n; i++ {
		dst = append(dst, xxh3.HashSeed(b[i*size:(i+1)*size], seed))
	}
	return dst
}

// sequenceHashes appends the chained sequence hash of every prefix of
// locals to dst (blockhash.ChainHashes with Dynamo's chain seed).
func sequenceHashes(dst []uint64, locals []uint64) []uint64 {
	return blockhash.ChainHashes(dst, locals, blockhash.DefaultSeed)
}
