package blockhash

import (
	"encoding/binary"
	"errors"
	"fmt"
	"unsafe"

	"github.com/zeebo/xxh3"
)

// DefaultSeed is the seed of LocalBlockHash and of the sequence-hash chain in
// Dynamo.
const DefaultSeed uint64 = 1337

// MaxBlockSize bounds the block size accepted by NewHasher. Engines use 16 to
// 128; anything above this is a configuration error, not a block size.
const MaxBlockSize = 1 << 16

// ErrBlockSize reports a block size outside 1..MaxBlockSize.
var ErrBlockSize = errors.New("block size out of range")

// Hasher computes the local and sequence hashes of token blocks for one block
// size and one salt. The zero value is not usable; build one with NewHasher.
// A Hasher is immutable and safe for concurrent use.
type Hasher struct {
	blockSize int
	seed      uint64 // LocalBlockHash seed, salted
	chainSeed uint64
}

// Options salt the hashes. Empty strings count as absent, as in Dynamo.
type Options struct {
	// LoRAName is the adapter name; it adds XXH3-64(name, seed 0) to the seed.
	LoRAName string
	// CacheNamespace is the engine's cache salt; it adds
	// XXH3-64(namespace, seed 1) to the seed.
	CacheNamespace string
	// ChainSeed seeds the sequence-hash chain. Nil means DefaultSeed; one
	// Dynamo version used 0.
	ChainSeed *uint64
}

// NewHasher returns a Hasher for blocks of blockSize tokens.
func NewHasher(blockSize int, opts Options) (*Hasher, error) {
	if blockSize < 1 || blockSize > MaxBlockSize {
		return nil, fmt.Errorf("%w: %d (allowed 1..%d)", ErrBlockSize, blockSize, MaxBlockSize)
	}
	chain := DefaultSeed
	if opts.ChainSeed != nil {
		chain = *opts.ChainSeed
	}
	return &Hasher{
		blockSize: blockSize,
		seed:      Seed(opts.LoRAName, opts.CacheNamespace),
		chainSeed: chain,
	}, nil
}

// Seed returns the LocalBlockHash seed for an adapter and a cache namespace:
// 1337 + XXH3(lora, 0) + XXH3(namespace, 1), with wrapping adds and empty
// strings left out.
func Seed(loraName, cacheNamespace string) uint64 {
	seed := DefaultSeed
	if loraName != "" {
		seed += xxh3.HashStringSeed(loraName, 0)
	}
	if cacheNamespace != "" {
		seed += xxh3.HashStringSeed(cacheNamespace, 1)
	}
	return seed
}

// BlockSize returns the number of tokens in a block.
func (h *Hasher) BlockSize() int { return h.blockSize }

// NumBlocks returns how many full blocks n tokens make.
func (h *Hasher) NumBlocks(n int) int { return n / h.blockSize }

// LocalHashes appends the LocalBlockHash of every full block of tokens to dst
// and returns the extended slice. A partial last block is ignored. It
// allocates only when dst lacks capacity.
func (h *Hasher) LocalHashes(dst []uint64, tokens []uint32) []uint64 {
	return LocalHashesSeed(dst, tokens, h.blockSize, h.seed)
}

// littleEndian says the machine stores a uint32 as its little-endian bytes,
// which are exactly the bytes Dynamo hashes for a token.
var littleEndian = binary.NativeEndian.Uint16([]byte{1, 0}) == 1

// LocalHashesSeed is LocalHashes for a block size and an already salted seed
// (see Seed), for callers that salt per request. blockSize must be at least 1.
//
// On a little-endian machine the tokens in memory already are the bytes to
// hash, so each block is one XXH3 call over the caller's slice, with no copy;
// elsewhere each block is copied into little-endian order first.
func LocalHashesSeed(dst []uint64, tokens []uint32, blockSize int, seed uint64) []uint64 {
	n := len(tokens) / blockSize
	if n == 0 {
		return dst
	}
	if littleEndian {
		size := blockSize * 4
		b := unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(tokens))), n*size)
		for i := range n {
			dst = append(dst, xxh3.HashSeed(b[i*size:(i+1)*size], seed))
		}
		return dst
	}
	var buf [256]byte
	for i := range n {
		dst = append(dst, hashBlock(&buf, tokens[i*blockSize:(i+1)*blockSize], seed))
	}
	return dst
}

// hashBlock hashes one block, streaming it through buf in little-endian u32s.
func hashBlock(buf *[256]byte, block []uint32, seed uint64) uint64 {
	if len(block)*4 <= len(buf) {
		b := buf[:len(block)*4]
		for i, t := range block {
			binary.LittleEndian.PutUint32(b[i*4:], t)
		}
		return xxh3.HashSeed(b, seed)
	}
	d := xxh3.NewSeed(seed)
	for len(block) > 0 {
		n := min(len(block), len(buf)/4)
		for i, t := range block[:n] {
			binary.LittleEndian.PutUint32(buf[i*4:], t)
		}
		_, _ = d.Write(buf[:n*4]) // a hash's Write never fails
		block = block[n:]
	}
	return d.Sum64()
}

// SequenceHashes appends to dst the chained hash of every prefix of locals:
// seq[0] = local[0]; seq[i] = XXH3(LE u64 seq[i-1] ‖ LE u64 local[i],
// chain seed). It allocates only when dst lacks capacity.
func (h *Hasher) SequenceHashes(dst []uint64, locals []uint64) []uint64 {
	return ChainHashes(dst, locals, h.chainSeed)
}

// ChainHashes is SequenceHashes with an explicit chain seed.
func ChainHashes(dst []uint64, locals []uint64, chainSeed uint64) []uint64 {
	var buf [16]byte
	var prev uint64
	for i, l := range locals {
		if i == 0 {
			prev = l
		} else {
			binary.LittleEndian.PutUint64(buf[:8], prev)
			binary.LittleEndian.PutUint64(buf[8:], l)
			prev = xxh3.HashSeed(buf[:], chainSeed)
		}
		dst = append(dst, prev)
	}
	return dst
}
