package main

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/kvrouter/router/blockhash"
	"github.com/kvrouter/router/workers"
)

// `router hash`: what it hashes, what it says on stderr about what it does
// not, and its exit status.
func TestHash(t *testing.T) {
	hashes := func(blockSize int, tokens ...uint32) string {
		h, err := blockhash.NewHasher(blockSize, blockhash.Options{})
		if err != nil {
			t.Fatal(err)
		}
		out := hashOutput{LocalHashes: h.LocalHashes([]uint64{}, tokens)}
		out.SequenceHashes = h.SequenceHashes([]uint64{}, out.LocalHashes)
		b, err := json.Marshal(out)
		if err != nil {
			t.Fatal(err)
		}
		return string(b) + "\n"
	}
	many := make([]string, workers.DefaultBlockSize+1)
	manyTokens := make([]uint32, len(many))
	for i := range many {
		many[i] = "7"
		manyTokens[i] = 7
	}
	tests := []struct {
		name   string
		args   []string
		code   int
		stdout string
		stderr string // the whole of stderr
	}{
		{name: "whole blocks", args: []string{"--block-size", "4", "1", "2", "3", "4", "5", "6", "7", "8"},
			stdout: hashes(4, 1, 2, 3, 4, 5, 6, 7, 8)},
		{name: "a partial last block", args: []string{"--block-size", "4", "1", "2", "3", "4", "5", "6"},
			stdout: hashes(4, 1, 2, 3, 4),
			stderr: "router: hash: the last 2 of 6 tokens do not fill a block of 4 (--block-size) and are not hashed\n"},
		{name: "serve's block size by default", args: many,
			stdout: hashes(workers.DefaultBlockSize, manyTokens...),
			stderr: "router: hash: the last 1 of 129 tokens do not fill a block of 128 (--block-size) and are not hashed\n"},
		{name: "no tokens", code: 2,
			stderr: "router: hash: no tokens given: name the token ids to hash, as in: router hash --block-size 16 1 2 3 ...\n"},
		{name: "no whole block", args: []string{"1", "2", "3"}, code: 2,
			stderr: "router: hash: 3 tokens do not fill one block of 128 (--block-size): nothing to hash\n"},
		{name: "every problem", args: []string{"--block-size", "0", "1", "x", "-1"}, code: 2,
			stderr: "router: hash: 3 problems:\n" +
				"  token 2: \"x\" is not a token id (0..4294967295)\n" +
				"  token 3: \"-1\" looks like a flag: flags go before the tokens\n" +
				"  --block-size: 0 is out of range (allowed 1..65536)\n"},
		{name: "block size not a number", args: []string{"--block-size", "x", "1"}, code: 2,
			stderr: "router: hash: --block-size: \"x\" is not an integer\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := run(context.Background(), append([]string{"router", "hash"}, tt.args...), &stdout, &stderr)
			if code != tt.code {
				t.Errorf("exit %d, want %d", code, tt.code)
			}
			if diff := cmp.Diff(tt.stdout, stdout.String()); diff != "" {
				t.Errorf("stdout (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.stderr, stderr.String()); diff != "" {
				t.Errorf("stderr (-want +got):\n%s", diff)
			}
		})
	}
}

// Like serve, hash reads its block size from DYN_ROUTER_BLOCK_SIZE.
func TestHashBlockSizeFromEnvironment(t *testing.T) {
	t.Setenv("DYN_ROUTER_BLOCK_SIZE", "4")
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), strings.Fields("router hash 1 2 3 4 5 6 7 8"), &stdout, &stderr)
	want := `{"local_hashes":[14643705804678351452,16777012769546811212],"sequence_hashes":[14643705804678351452,4945711292740353085]}` + "\n"
	if code != 0 || stdout.String() != want || stderr.Len() != 0 {
		t.Errorf("exit %d, stdout %q, stderr %q; want 0 and %q", code, stdout.String(), stderr.String(), want)
	}
}

// The README's example hash stays true.
func TestHashReadmeExample(t *testing.T) {
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), strings.Fields("router hash --block-size 4 1 2 3 4 5 6 7 8"), &stdout, &stderr)
	want := `{"local_hashes":[14643705804678351452,16777012769546811212],"sequence_hashes":[14643705804678351452,4945711292740353085]}` + "\n"
	if code != 0 || stdout.String() != want || stderr.Len() != 0 {
		t.Errorf("exit %d, stdout %q, stderr %q; want 0 and %q", code, stdout.String(), stderr.String(), want)
	}
}
