// Package blockhash computes Dynamo's KV block hashes bit for bit.
//
// A prompt is cut into blocks of a fixed number of tokens; only full blocks
// count. Each block gets a LocalBlockHash: XXH3-64 over its tokens written as
// little-endian u32 values, seeded with 1337 (plus salts for a LoRA adapter
// and a cache namespace). Blocks are chained into sequence hashes so that a
// hash names a whole prefix, not just one block.
//
// Everything here is a pure function or an immutable value: safe for
// concurrent use without locks.
package blockhash
