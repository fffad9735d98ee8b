package main

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/kvrouter/router/blockhash"
	"github.com/kvrouter/router/workers"
)

// hashOutput is what `router hash` prints.
type hashOutput struct {
	LocalHashes    []uint64 `json:"local_hashes"`
	SequenceHashes []uint64 `json:"sequence_hashes"`
}

// hashCommand prints the hashes of the whole blocks of a token sequence. Its
// block size defaults to serve's, from the same environment variable, so
// that without flags it hashes as a router started alike would; what it
// cannot hash (no tokens, fewer than one block) is an error, and a last
// partial block, which the router does not hash either, is said on stderr.
func hashCommand() *cli.Command {
	return &cli.Command{
		Name:      "hash",
		Usage:     "print the block hashes of a token sequence, to check that engine and router hash alike",
		ArgsUsage: "TOKEN...",
		Description: "Hashes every whole block of the tokens, as the engine and the router do; tokens past the last " +
			"whole block are not hashed (said on stderr). Exits 2 when nothing can be hashed.",
		Flags: []cli.Flag{
			&cli.IntFlag{Name: "block-size", Value: workers.DefaultBlockSize, EnvVars: []string{"DYN_ROUTER_BLOCK_SIZE"},
				Usage: fmt.Sprintf("tokens per KV block (1..%d); must equal the engine's; the default is serve's --router-block-size", blockhash.MaxBlockSize)},
			&cli.StringFlag{Name: "lora-name", Usage: "LoRA adapter name; salts the hashes"},
			&cli.StringFlag{Name: "cache-namespace", Usage: "engine cache salt; salts the hashes"},
			&cli.Uint64Flag{Name: "chain-seed", Value: blockhash.DefaultSeed, Usage: "seed of the sequence-hash chain (one Dynamo version used 0)"},
		},
		Action: func(c *cli.Context) error {
			var problems []string
			tokens := make([]uint32, 0, c.NArg())
			for i, arg := range c.Args().Slice() {
				v, err := strconv.ParseUint(arg, 10, 32)
				if err != nil && strings.HasPrefix(arg, "-") && len(arg) > 1 {
					problems = append(problems, fmt.Sprintf("token %d: %q looks like a flag: flags go before the tokens", i+1, arg))
					continue
				}
				if err != nil {
					problems = append(problems, fmt.Sprintf("token %d: %q is not a token id (0..4294967295)", i+1, arg))
					continue
				}
				tokens = append(tokens, uint32(v))
			}
			seed := c.Uint64("chain-seed")
			blockSize := c.Int("block-size")
			h, err := blockhash.NewHasher(blockSize, blockhash.Options{
				LoRAName:       c.String("lora-name"),
				CacheNamespace: c.String("cache-namespace"),
				ChainSeed:      &seed,
			})
			if err != nil {
				problems = append(problems, fmt.Sprintf("--block-size: %d is out of range (allowed 1..%d)", blockSize, blockhash.MaxBlockSize))
			}
			switch {
			case c.NArg() == 0:
				problems = append(problems, "no tokens given: name the token ids to hash, as in: router hash --block-size 16 1 2 3 ...")
			case len(problems) == 0 && len(tokens) < blockSize:
				problems = append(problems, fmt.Sprintf("%d tokens do not fill one block of %d (--block-size): nothing to hash", len(tokens), blockSize))
			}
			if len(problems) > 0 {
				return listProblems("hash", problems)
			}
			if rest := len(tokens) % blockSize; rest > 0 {
				fmt.Fprintf(c.App.ErrWriter, "router: hash: the last %d of %d tokens do not fill a block of %d (--block-size) and are not hashed\n",
					rest, len(tokens), blockSize)
			}
			out := hashOutput{LocalHashes: h.LocalHashes([]uint64{}, tokens)}
			out.SequenceHashes = h.SequenceHashes([]uint64{}, out.LocalHashes)
			return json.NewEncoder(c.App.Writer).Encode(out)
		},
	}
}
