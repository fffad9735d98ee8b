package main

import (
	"encoding/json"
	"strconv"

	"github.com/urfave/cli/v2"

	"github.com/kvrouter/router/blockhash"
)

// hashOutput is what `router hash` prints.
type hashOutput struct {
	LocalHashes    []uint64 `json:"local_hashes"`
	SequenceHashes []uint64 `json:"sequence_hashes"`
}

func hashCommand() *cli.Command {
	return &cli.Command{
		Name:      "hash",
		Usage:     "print the block hashes of a token sequence, to check that engine and router hash alike",
		ArgsUsage: "TOKEN...",
		Flags: []cli.Flag{
			&cli.IntFlag{Name: "block-size", Usage: "tokens per KV block (must equal the engine's)", Required: true},
			&cli.StringFlag{Name: "lora-name", Usage: "LoRA adapter name; salts the hashes"},
			&cli.StringFlag{Name: "cache-namespace", Usage: "engine cache salt; salts the hashes"},
			&cli.Uint64Flag{Name: "chain-seed", Value: blockhash.DefaultSeed, Usage: "seed of the sequence-hash chain (one Dynamo version used 0)"},
		},
		Action: func(c *cli.Context) error {
			tokens := make([]uint32, 0, c.NArg())
			for i, arg := range c.Args().Slice() {
				v, err := strconv.ParseUint(arg, 10, 32)
				if err != nil {
					return usageError("hash: token %d: %q is not a token id (0..4294967295)", i, arg)
				}
				tokens = append(tokens, uint32(v))
			}
			seed := c.Uint64("chain-seed")
			h, err := blockhash.NewHasher(c.Int("block-size"), blockhash.Options{
				LoRAName:       c.String("lora-name"),
				CacheNamespace: c.String("cache-namespace"),
				ChainSeed:      &seed,
			})
			if err != nil {
				return usageError("hash: --block-size: %v", err)
			}
			out := hashOutput{LocalHashes: h.LocalHashes([]uint64{}, tokens)}
			out.SequenceHashes = h.SequenceHashes([]uint64{}, out.LocalHashes)
			return json.NewEncoder(c.App.Writer).Encode(out)
		},
	}
}
