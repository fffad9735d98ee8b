package sim

import (
	"fmt"
	"time"
)

// Timing is the engine's cost model: how long one step (one forward pass
// over a batch) takes on the simulated GPU. A step costs a fixed overhead,
// plus for prompt tokens computed in it a linear term and an attention term
// that grows with the context each token attends to (cached tokens are not
// computed, but new tokens still attend to them), plus for sequences
// decoding one token each a per-sequence term and a term for reading their
// KV (proportional to their context).
//
// The defaults are rounded figures for a dense ~8B model on one H100-class
// GPU; docs/replay.md explains them. Every figure is simulated time: the
// speed-up of a real-time run (WallClock) only changes how fast simulated
// time passes on the wall clock.
type Timing struct {
	// StepOverhead is the fixed cost of a step.
	StepOverhead time.Duration
	// PrefillPerToken is the cost of each prompt token computed.
	PrefillPerToken time.Duration
	// AttentionPerKToken is the cost of each prompt token computed, per
	// 1,000 tokens of context it attends to (the tokens before it).
	AttentionPerKToken time.Duration
	// DecodePerSeq is the cost of each sequence decoding a token.
	DecodePerSeq time.Duration
	// DecodePerKToken is the cost of each 1,000 tokens of context of the
	// decoding sequences (reading their KV).
	DecodePerKToken time.Duration
}

// DefaultTiming returns the default cost model.
func DefaultTiming() Timing {
	return Timing{
		StepOverhead:       6 * time.Millisecond,
		PrefillPerToken:    40 * time.Microsecond,
		AttentionPerKToken: time.Microsecond,
		DecodePerSeq:       100 * time.Microsecond,
		DecodePerKToken:    40 * time.Microsecond,
	}
}

// Validate checks that no cost is negative and a step costs something.
func (t Timing) Validate() error {
	for _, f := range []struct {
		name string
		v    time.Duration
	}{
		{"step-overhead", t.StepOverhead},
		{"prefill-per-token", t.PrefillPerToken},
		{"attention-per-ktoken", t.AttentionPerKToken},
		{"decode-per-seq", t.DecodePerSeq},
		{"decode-per-ktoken", t.DecodePerKToken},
	} {
		if f.v < 0 || f.v > time.Minute {
			return fmt.Errorf("--%s: %v is outside 0..1m", f.name, f.v)
		}
	}
	if t.StepOverhead <= 0 {
		return fmt.Errorf("--step-overhead: %v must be positive", t.StepOverhead)
	}
	return nil
}

// chunk is the prefill work of one sequence in a step: tokens computed and
// the context before them.
type chunk struct {
	tokens, context int
}

// step returns the duration of a step that computes the prefill chunks and
// decodes decodeSeqs sequences whose contexts add up to decodeContext
// tokens.
func (t Timing) step(chunks []chunk, decodeSeqs, decodeContext int) time.Duration {
	ns := float64(t.StepOverhead)
	for _, c := range chunks {
		n := float64(c.tokens)
		// Token i of the chunk attends to context+i tokens: on average
		// context + n/2.
		ns += n*float64(t.PrefillPerToken) + n*(float64(c.context)+n/2)/1000*float64(t.AttentionPerKToken)
	}
	ns += float64(decodeSeqs)*float64(t.DecodePerSeq) + float64(decodeContext)/1000*float64(t.DecodePerKToken)
	return time.Duration(ns)
}
