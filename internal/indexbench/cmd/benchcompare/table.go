package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"slices"
	"text/tabwriter"
)

// figure is one number of the JSON result of `router bench index --json`
// that the table compares.
type figure struct {
	name   string
	key    string // the JSON name, as in indexbench.Result
	format func(float64) string
}

// figures are the table's rows, in order. The JSON names are spelled here
// rather than read from indexbench.Result so that this command builds even
// while the index does not; a test checks them against Result.
var figures = [...]figure{
	{"mixed block-ops/s", "mixed_block_ops_per_sec", millions},
	{"load block-ops/s", "load_block_ops_per_sec", millions},
	{"query block-ops/s", "query_block_ops_per_sec", millions},
	{"find_matches p50", "find_matches_p50_ns", nanoseconds},
	{"find_matches p99", "find_matches_p99_ns", nanoseconds},
	{"bytes per entry", "bytes_per_entry", tenths},
}

func millions(v float64) string    { return fmt.Sprintf("%.2fM", v/1e6) }
func nanoseconds(v float64) string { return fmt.Sprintf("%.0f ns", v) }
func tenths(v float64) string      { return fmt.Sprintf("%.1f", v) }

// sample is one run's figures, in the order of figures.
type sample [len(figures)]float64

// side is one of the two binaries and its runs.
type side struct {
	name    string // the table's column header
	bin     string
	samples []sample
}

// parseResult reads the figures from what `router bench index --json`
// printed.
func parseResult(data []byte) (sample, error) {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(data, &fields); err != nil {
		return sample{}, fmt.Errorf("read the JSON result (do the arguments include --json?): %w", err)
	}
	var s sample
	for i, f := range figures {
		raw, ok := fields[f.key]
		if !ok {
			return sample{}, fmt.Errorf("the JSON result lacks %s", f.key)
		}
		if err := json.Unmarshal(raw, &s[i]); err != nil {
			return sample{}, fmt.Errorf("read %s: %w", f.key, err)
		}
	}
	return s, nil
}

// median returns the middle of vs, the mean of the two middle values if
// their number is even, and NaN if vs is empty. It leaves vs as it was.
func median(vs []float64) float64 {
	if len(vs) == 0 {
		return math.NaN()
	}
	s := slices.Sorted(slices.Values(vs))
	m := len(s) / 2
	if len(s)%2 == 0 {
		return (s[m-1] + s[m]) / 2
	}
	return s[m]
}

// writeTable writes title and a row per figure: the medians of before's
// and after's samples and after/before.
func writeTable(w io.Writer, title string, before, after *side) error {
	if _, err := fmt.Fprintln(w, title); err != nil {
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "figure\t%s\t%s\tafter/before\n", before.name, after.name)
	for i, f := range figures {
		b, a := median(column(before.samples, i)), median(column(after.samples, i))
		ratio := "-"
		if b != 0 {
			ratio = fmt.Sprintf("%.2f", a/b)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", f.name, f.format(b), f.format(a), ratio)
	}
	return tw.Flush()
}

// column returns figure i of every sample.
func column(samples []sample, i int) []float64 {
	vs := make([]float64, len(samples))
	for k, s := range samples {
		vs[k] = s[i]
	}
	return vs
}
