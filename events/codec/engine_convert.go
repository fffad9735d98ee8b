package codec

import (
	"fmt"
	"slices"
	"strings"

	"github.com/kvrouter/router/blockhash"
	"github.com/kvrouter/router/indexer"
)

// Outcome says what became of one engine event: indexed whole, or why it
// (or the part of it from some block on) was not. Its String is the value of
// a reason label, for the transport to count.
//
//	ok                  indexed whole
//	unknown_tag         a tag the decoder does not know; nothing indexed
//	eagle_tokens        token_ids are EAGLE bigram pairs, which the router
//	                    does not hash; nothing indexed
//	empty               a store or removal without hashes; nothing to index
//	unknown_medium      a medium that names no known tier; nothing indexed
//	hma_group           a KV-cache group other than the main attention one
//	                    (hybrid models); nothing indexed
//	block_size_mismatch token ids cut into blocks of another size than the
//	                    router's; nothing indexed (never hashed wrong)
//	partial_block       token ids run out before the last hash: the full
//	                    blocks before are indexed, the rest not
//	extra_keys          from some block on the engine hashed keys besides
//	                    the tokens and the LoRA name (multimodal inputs, a
//	                    cache salt, prompt embeddings) that the router's
//	                    queries cannot reproduce: the blocks before are
//	                    indexed, the rest not
type Outcome uint8

// The outcomes, in the order of the table above.
const (
	OutcomeOK Outcome = iota
	OutcomeUnknownTag
	OutcomeEagle
	OutcomeEmpty
	OutcomeUnknownMedium
	OutcomeHMAGroup
	OutcomeBlockSize
	OutcomePartialBlock
	OutcomeExtraKeys
	// NumOutcomes counts the outcomes, for tables indexed by outcome.
	NumOutcomes
)

var outcomeNames = [NumOutcomes]string{
	OutcomeOK:            "ok",
	OutcomeUnknownTag:    "unknown_tag",
	OutcomeEagle:         "eagle_tokens",
	OutcomeEmpty:         "empty",
	OutcomeUnknownMedium: "unknown_medium",
	OutcomeHMAGroup:      "hma_group",
	OutcomeBlockSize:     "block_size_mismatch",
	OutcomePartialBlock:  "partial_block",
	OutcomeExtraKeys:     "extra_keys",
}

// String returns the outcome's label value.
func (o Outcome) String() string {
	if o < NumOutcomes {
		return outcomeNames[o]
	}
	return fmt.Sprintf("outcome(%d)", uint8(o))
}

// EngineConverter turns decoded engine events into index events the way
// Dynamo's relay does (docs/compat.md §11.5): the engine's block hash names
// a block, and the router's own LocalBlockHash of its tokens, salted by the
// event's LoRA name, places it in the tree. It is immutable and safe for
// concurrent use.
type EngineConverter struct {
	blockSize int
}

// NewEngineConverter returns a converter for the router's block size (the
// size its queries are cut and hashed in), 1..blockhash.MaxBlockSize.
//
// It takes the size, not a blockhash.Hasher: a Hasher's seed is fixed when
// it is built, and each event brings its own LoRA name; the converter salts
// per event with blockhash.Seed and hashes with blockhash.LocalHashesSeed,
// as the router's query side does.
func NewEngineConverter(blockSize int) (*EngineConverter, error) {
	if blockSize < 1 || blockSize > blockhash.MaxBlockSize {
		return nil, fmt.Errorf("engine event converter: %w: %d (allowed 1..%d)", blockhash.ErrBlockSize, blockSize, blockhash.MaxBlockSize)
	}
	return &EngineConverter{blockSize: blockSize}, nil
}

// BlockSize returns the router's block size the converter cuts tokens by.
func (c *EngineConverter) BlockSize() int { return c.blockSize }

// Convert turns ev, an event of rank, into dst. apply says dst holds an
// event to apply to the index; o says what of ev was left out and why
// (OutcomeOK: nothing). A partial outcome (partial_block, extra_keys) comes
// with apply when at least one block was kept.
//
// dst is overwritten whole; its Blocks and Removed are reused
// (dst.Blocks[:0]), so pass a zero Event when the result must outlive the
// next call (as when it is queued to another goroutine). dst never aliases
// ev. Rules:
//
//   - BlockStored with token ids: a block per hash, Hash the engine's hash,
//     Tokens the LocalBlockHash of its block_size tokens, the first under
//     parent_block_hash; it stops at the first block without its full
//     tokens (partial_block) or with opaque extra keys (extra_keys). Token
//     ids cut in another block size than the router's are not indexed
//     (block_size_mismatch).
//   - BlockStored without token ids (an offloading connector's copy of
//     blocks held on another tier): ByHash, the hashes alone.
//   - BlockRemoved: the hashes. AllBlocksCleared: cleared, every tier.
//   - medium names the tier (engineTier); a store or removal in a KV-cache
//     group other than the main attention one is skipped (hma_group).
func (c *EngineConverter) Convert(ev *EngineEvent, rank indexer.Worker, dst *indexer.Event) (apply bool, o Outcome) {
	*dst = indexer.Event{Worker: rank, Blocks: dst.Blocks[:0], Removed: dst.Removed[:0]}
	if ev.Skip != OutcomeOK {
		return false, ev.Skip
	}
	switch ev.Kind {
	case indexer.KindCleared:
		dst.Kind = indexer.KindCleared
		return true, OutcomeOK
	case indexer.KindStored, indexer.KindRemoved:
	default:
		return false, OutcomeUnknownTag
	}
	if !mainGroup(ev) {
		return false, OutcomeHMAGroup
	}
	tier, ok := engineTier(ev.Medium)
	if !ok {
		return false, OutcomeUnknownMedium
	}
	if len(ev.Hashes) == 0 {
		return false, OutcomeEmpty
	}
	dst.Kind, dst.Tier = ev.Kind, tier
	if ev.Kind == indexer.KindRemoved {
		dst.Removed = slices.Grow(dst.Removed, len(ev.Hashes))
		for _, h := range ev.Hashes {
			dst.Removed = append(dst.Removed, indexer.BlockHash(h))
		}
		return true, OutcomeOK
	}
	if len(ev.TokenIDs) == 0 {
		dst.ByHash = true
		dst.Blocks = slices.Grow(dst.Blocks, len(ev.Hashes))
		for _, h := range ev.Hashes {
			dst.Blocks = append(dst.Blocks, indexer.Block{Hash: indexer.BlockHash(h)})
		}
		return true, OutcomeOK
	}
	if ev.BlockSize != c.blockSize {
		dst.Kind = 0
		return false, OutcomeBlockSize
	}
	bs := c.blockSize
	n, o := len(ev.Hashes), OutcomeOK
	if full := len(ev.TokenIDs) / bs; full < n {
		n, o = full, OutcomePartialBlock
	}
	if ev.Opaque && ev.OpaqueFrom < n {
		n, o = ev.OpaqueFrom, OutcomeExtraKeys
	}
	if n == 0 {
		dst.Kind = 0
		return false, o
	}
	dst.HasParent, dst.Parent = ev.HasParent, indexer.BlockHash(ev.Parent)
	dst.Blocks = slices.Grow(dst.Blocks, n)
	seed := blockhash.Seed(ev.LoraName, "")
	var local [1]uint64
	for i, h := range ev.Hashes[:n] {
		t := blockhash.LocalHashesSeed(local[:0], ev.TokenIDs[i*bs:(i+1)*bs], bs, seed)
		dst.Blocks = append(dst.Blocks, indexer.Block{Hash: indexer.BlockHash(h), Tokens: indexer.LocalHash(t[0])})
	}
	return true, o
}

// mainKinds are the kv_cache_spec_kind values of the main attention group,
// the one whose blocks cover the whole prefix (docs/compat.md §11.5).
var mainKinds = []string{"full_attention", "mla_attention", "sink_full_attention", "full", "mla", "sink_full"}

// mainGroup reports whether ev is about the main KV-cache group: its
// kv_cache_spec_kind is one of mainKinds (any case), or, without one, its
// group_idx is absent or 0.
func mainGroup(ev *EngineEvent) bool {
	if ev.SpecKind != "" {
		for _, k := range mainKinds {
			if strings.EqualFold(ev.SpecKind, k) {
				return true
			}
		}
		return false
	}
	return !ev.HasGroup || ev.GroupIdx == 0
}

// engineTiers maps the media engines name (any case) to tiers.
var engineTiers = []struct {
	medium string
	tier   indexer.Tier
}{
	{"GPU", indexer.TierDevice}, {"DEVICE", indexer.TierDevice},
	{"CPU", indexer.TierHost}, {"CPU_PINNED", indexer.TierHost}, {"CPU_TIER1", indexer.TierHost}, {"HOST", indexer.TierHost},
	{"CPU_TIER2", indexer.TierDisk}, {"DISK", indexer.TierDisk}, {"NVME", indexer.TierDisk}, {"STORAGE", indexer.TierDisk},
	{"EXTERNAL", indexer.TierExternal}, {"NETWORK", indexer.TierExternal}, {"REMOTE", indexer.TierExternal}, {"SHARED", indexer.TierExternal},
}

// engineTier maps an event's medium to the tier it names: absent is the
// device; ok is false for a medium no engine is known to send.
func engineTier(medium string) (indexer.Tier, bool) {
	if medium == "" {
		return indexer.TierDevice, true
	}
	for _, t := range engineTiers {
		if strings.EqualFold(medium, t.medium) {
			return t.tier, true
		}
	}
	return 0, false
}
