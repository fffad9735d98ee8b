package replay

import (
	"cmp"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// Sweep compares router modes on one workload at several offered loads
// (`router compare --rate-scales`): at each rate scale the same requests,
// their arrivals brought closer by that factor, and a whole comparison
// (Compare) of the modes on them.
type Sweep struct {
	// Title names the workload and the setup; Command is the command line
	// that made the sweep.
	Title, Command string
	// Points are the comparisons, one per rate scale, in the order run.
	Points []SweepPoint
	// Bounds, when set, are the workload's reference hit rates
	// (ComputeBounds). They depend on which requests come in which order,
	// not on when they come, so they are the same at every scale: the
	// sweep computes them once.
	Bounds *Bounds
}

// SweepPoint is the comparison at one rate scale.
type SweepPoint struct {
	// Scale multiplies the workload's request rate.
	Scale float64
	// Dir is the directory of this scale's own report (Report.Write),
	// relative to the sweep's; "" for none.
	Dir string
	// Results are one per mode, in the same order at every scale.
	Results []*Result
}

// Files written by Sweep.Write.
const (
	FileSweepMarkdown = "sweep.md"
	FileSweepText     = "sweep.txt"
	FileSweepJSON     = "sweep.json"
	FileSweepTTFT     = "sweep_ttft_p90.svg"
	FileSweepHitRate  = "sweep_hit_rate.svg"
)

// ScaleDir names the directory of a sweep's report at rate scale s, such
// as "x1.5".
func ScaleDir(s float64) string { return "x" + strconv.FormatFloat(s, 'g', -1, 64) }

// scaleName is how the tables print rate scale s, such as "×1.5".
func scaleName(s float64) string { return "×" + strconv.FormatFloat(s, 'g', -1, 64) }

// Write writes the sweep into dir: the tables as Markdown (with the plots)
// and plain text, every figure as JSON, and the two plots as SVG. The
// reports of each scale are the caller's to write (Report.Write into
// SweepPoint.Dir).
func (sw *Sweep) Write(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("sweep report: %w", err)
	}
	var text strings.Builder
	sw.WriteWideText(&text)
	js, err := sw.JSON()
	if err != nil {
		return err
	}
	files := map[string]string{
		FileSweepMarkdown: sw.Markdown(),
		FileSweepText:     text.String(),
		FileSweepJSON:     string(js),
		FileSweepTTFT:     sw.TTFTPlot(),
		FileSweepHitRate:  sw.HitRatePlot(),
	}
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			return fmt.Errorf("sweep report: %w", err)
		}
	}
	return nil
}

// sweepPoint is a point's figures: each mode's summary, its hit rate over
// the pooled reference (NaN without one), and the workload's offered rate.
type sweepPoint struct {
	scale    float64
	offered  float64
	sums     []Summary
	ofPooled []float64
}

// figures summarises every point.
func (sw *Sweep) figures() []sweepPoint {
	out := make([]sweepPoint, len(sw.Points))
	for i, p := range sw.Points {
		f := sweepPoint{scale: p.Scale}
		for _, r := range p.Results {
			s := r.Summarize()
			f.sums = append(f.sums, s)
			f.ofPooled = append(f.ofPooled, sw.ofPooled(s.HitRate))
			// Every mode replays the same arrivals: the first that has
			// any says the offered rate.
			if f.offered == 0 {
				f.offered = s.OfferedRate
			}
		}
		out[i] = f
	}
	return out
}

// ofPooled is hit rate h over the pooled LRU reference, NaN without one.
func (sw *Sweep) ofPooled(h float64) float64 {
	if sw.Bounds == nil || sw.Bounds.PooledLRU <= 0 {
		return math.NaN()
	}
	return h / sw.Bounds.PooledLRU
}

// sweepRatios are the figures the router's targets are stated in, at one
// scale: round-robin's TTFT percentiles over kv's (above 1: kv is
// faster), and kv's hit rate over the pooled reference.
type sweepRatios struct {
	TTFTP50 float64 `json:"ttft_p50_round_robin_over_kv"`
	TTFTP90 float64 `json:"ttft_p90_round_robin_over_kv"`
	TTFTP99 float64 `json:"ttft_p99_round_robin_over_kv"`
	// KVOfPooled is absent without the pooled reference.
	KVOfPooled *float64 `json:"kv_hit_rate_of_pooled_lru,omitempty"`
}

// ratios returns the point's ratios, or nil unless both kv and
// round-robin ran and kv completed requests.
func (sw *Sweep) ratios(f sweepPoint) *sweepRatios {
	kv, rr := kvAndRoundRobin(f.sums)
	if kv == nil || rr == nil || kv.TTFT.P50 <= 0 || kv.TTFT.P90 <= 0 || kv.TTFT.P99 <= 0 {
		return nil
	}
	r := &sweepRatios{
		TTFTP50: rr.TTFT.P50.Seconds() / kv.TTFT.P50.Seconds(),
		TTFTP90: rr.TTFT.P90.Seconds() / kv.TTFT.P90.Seconds(),
		TTFTP99: rr.TTFT.P99.Seconds() / kv.TTFT.P99.Seconds(),
	}
	if v := sw.ofPooled(kv.HitRate); !math.IsNaN(v) {
		r.KVOfPooled = &v
	}
	return r
}

func percent(v float64) string {
	if math.IsNaN(v) {
		return "-"
	}
	return fmt.Sprintf("%.0f%%", 100*v)
}

func times(v float64) string { return fmt.Sprintf("%.2f×", v) }

// modesTable is every scale × mode: the loads, the latencies, the hit
// rates and the decision digests.
func (sw *Sweep) modesTable(figs []sweepPoint) (heads []string, rows [][]string) {
	cols := columnsNamed([]string{"mode", "failed", "offered req/s", "achieved req/s", "TTFT p50 s", "TTFT p90 s", "TTFT p99 s", "prefix hit rate"})
	heads, _ = cells(cols, nil)
	heads = append(append([]string{"rate scale"}, heads...), "of pooled LRU", "decisions digest")
	for _, f := range figs {
		_, rs := cells(cols, f.sums)
		for i, r := range rs {
			rows = append(rows, append(append([]string{scaleName(f.scale)}, r...), percent(f.ofPooled[i]), f.sums[i].Digest))
		}
	}
	return heads, rows
}

// ratiosTable is kv against round-robin at each scale where both ran; no
// rows otherwise.
func (sw *Sweep) ratiosTable(figs []sweepPoint) (heads []string, rows [][]string) {
	heads = []string{"rate scale", "offered req/s", "TTFT p50 rr/kv", "TTFT p90 rr/kv", "TTFT p99 rr/kv", "kv hit rate of pooled"}
	for _, f := range figs {
		r := sw.ratios(f)
		if r == nil {
			continue
		}
		kvOf := math.NaN()
		if r.KVOfPooled != nil {
			kvOf = *r.KVOfPooled
		}
		rows = append(rows, []string{scaleName(f.scale), fmt.Sprintf("%.2f", f.offered), times(r.TTFTP50), times(r.TTFTP90), times(r.TTFTP99), percent(kvOf)})
	}
	return heads, rows
}

// Sentences under the tables.
const (
	sweepRatiosNote = "rr/kv: round-robin's TTFT over kv's, at the same percentile and load (above 1: kv is faster)."
	sweepTimeNote   = "TTFT and rates are simulated time. Each rate scale replays the same requests, their arrival times divided by the scale; " +
		"every mode runs on a fresh fleet and a fresh router."
)

// boundsLine states the hit-rate references once for every scale, or
// returns "" without them.
func (sw *Sweep) boundsLine() string {
	bd := sw.Bounds
	if bd == nil {
		return ""
	}
	return fmt.Sprintf("Hit-rate references (cache simulation alone, no timing or routing), the same at every rate scale since they depend on "+
		"the requests and their order, not on when they arrive: one LRU cache of the fleet's %d blocks of %d tokens %.1f%%, "+
		"a cache that never evicts %.1f%%.", bd.Capacity, bd.BlockSize, 100*bd.PooledLRU, 100*bd.Infinite)
}

// Markdown renders the sweep as Markdown: both tables, the references,
// the plots, links to each scale's report, and the command.
func (sw *Sweep) Markdown() string {
	var b strings.Builder
	figs := sw.figures()
	writeHeading(&b, sw.Title, sw.Command)
	heads, rows := sw.modesTable(figs)
	writeMarkdownTable(&b, heads, rows)
	if line := sw.boundsLine(); line != "" {
		fmt.Fprintf(&b, "\n%s\n", line)
	}
	if heads, rows := sw.ratiosTable(figs); len(rows) > 0 {
		b.WriteString("\n## kv against round-robin\n\n")
		writeMarkdownTable(&b, heads, rows)
		fmt.Fprintf(&b, "\n%s\n", sweepRatiosNote)
	}
	fmt.Fprintf(&b, "\n%s\n", sweepTimeNote)
	fmt.Fprintf(&b, "\n![TTFT p90 against offered load, per mode](%s)\n\n![Prefix cache hit rate against offered load, per mode](%s)\n",
		FileSweepTTFT, FileSweepHitRate)
	var links []string
	for _, p := range sw.Points {
		if p.Dir != "" {
			links = append(links, fmt.Sprintf("[%s](%s)", scaleName(p.Scale), filepath.ToSlash(filepath.Join(p.Dir, FileMarkdown))))
		}
	}
	if len(links) > 0 {
		fmt.Fprintf(&b, "\nThe report of each rate scale, with every column and the TTFT distributions: %s.\n", strings.Join(links, ", "))
	}
	return b.String()
}

// WriteWideText writes both tables as aligned plain text, with the
// references (sweep.txt).
func (sw *Sweep) WriteWideText(w io.Writer) {
	figs := sw.figures()
	heads, rows := sw.modesTable(figs)
	writeAlignedTable(w, heads, rows)
	if line := sw.boundsLine(); line != "" {
		fmt.Fprintln(w, line)
	}
	if heads, rows := sw.ratiosTable(figs); len(rows) > 0 {
		fmt.Fprintln(w)
		writeAlignedTable(w, heads, rows)
		fmt.Fprintln(w, sweepRatiosNote)
	}
}

// WriteText writes what a terminal shows at the end of a sweep, within
// TextWidth columns: kv against round-robin at each scale and the
// references. Each scale's own table (Report.WriteText) comes before, as
// the scale ends; sweep.txt has every figure.
func (sw *Sweep) WriteText(w io.Writer) {
	figs := sw.figures()
	if heads, rows := sw.ratiosTable(figs); len(rows) > 0 {
		writeAlignedTable(w, heads, rows)
		fmt.Fprintln(w, wrap(sweepRatiosNote, TextWidth))
	}
	if line := sw.boundsLine(); line != "" {
		fmt.Fprintln(w, wrap(line, TextWidth))
	}
}

// JSON returns every figure of the sweep: per scale, each mode's summary
// and hit rate over the pooled reference, and the ratios.
func (sw *Sweep) JSON() ([]byte, error) {
	type run struct {
		Summary  Summary  `json:"summary"`
		OfPooled *float64 `json:"hit_rate_of_pooled_lru,omitempty"`
	}
	type point struct {
		Scale   float64      `json:"rate_scale"`
		Dir     string       `json:"dir,omitempty"`
		Offered float64      `json:"offered_rate"`
		Runs    []run        `json:"runs"`
		Ratios  *sweepRatios `json:"kv_vs_round_robin,omitempty"`
	}
	out := struct {
		Title   string  `json:"title"`
		Command string  `json:"command"`
		Bounds  *Bounds `json:"bounds,omitempty"`
		Points  []point `json:"points"`
	}{Title: sw.Title, Command: sw.Command, Bounds: sw.Bounds, Points: []point{}}
	for i, f := range sw.figures() {
		p := point{Scale: f.scale, Dir: sw.Points[i].Dir, Offered: f.offered, Ratios: sw.ratios(f), Runs: []run{}}
		for j, s := range f.sums {
			if math.IsNaN(s.RouterOverheadMs) {
				s.RouterOverheadMs = -1 // as in results.json
			}
			r := run{Summary: s}
			if v := f.ofPooled[j]; !math.IsNaN(v) {
				r.OfPooled = &v
			}
			p.Runs = append(p.Runs, r)
		}
		out.Points = append(out.Points, p)
	}
	js, err := json.MarshalIndent(out, "", " ")
	if err != nil {
		return nil, fmt.Errorf("sweep report: %w", err)
	}
	return js, nil
}

// Geometry of the sweep plots: the TTFT plot's, with the legend on the
// right.
const sweepW, sweepH, sweepLeft, sweepRight, sweepTop, sweepBottom = 780, 440, 70, 210, 40, 60

// offeredAxis is the horizontal axis of both sweep plots: offered load,
// with a tick at each scale's, a little room on either side.
func offeredAxis(figs []sweepPoint) axis {
	lo, hi := math.Inf(1), math.Inf(-1)
	for _, f := range figs {
		lo, hi = math.Min(lo, f.offered), math.Max(hi, f.offered)
	}
	if math.IsInf(lo, 0) {
		lo, hi = 0, 1
	}
	pad := 0.06 * (hi - lo)
	if pad <= 0 {
		pad = math.Max(0.5, 0.1*hi)
	}
	a := axis{lo: lo - pad, hi: hi + pad}
	labels := map[float64]string{}
	for _, f := range figs {
		if _, dup := labels[f.offered]; !dup {
			a.ticks = append(a.ticks, f.offered)
		}
		labels[f.offered] = fmt.Sprintf("%.2f (%s)", f.offered, scaleName(f.scale))
	}
	a.label = func(v float64) string { return labels[v] }
	return a.along(sweepLeft, sweepW-sweepLeft-sweepRight, false)
}

// modeLines returns, for each mode of the first point in order, its
// (offered rate, figure) at every point where it ran and fig says ok,
// by offered rate; and the modes' names.
func modeLines(figs []sweepPoint, fig func(Summary) (float64, bool)) (modes []string, lines [][][2]float64) {
	if len(figs) > 0 {
		for _, s := range figs[0].sums {
			modes = append(modes, s.Mode)
		}
	}
	lines = make([][][2]float64, len(modes))
	for i, m := range modes {
		for _, f := range figs {
			for _, s := range f.sums {
				if v, ok := fig(s); s.Mode == m && ok {
					lines[i] = append(lines[i], [2]float64{f.offered, v})
				}
			}
		}
		slices.SortStableFunc(lines[i], func(a, b [2]float64) int { return cmp.Compare(a[0], b[0]) })
	}
	return modes, lines
}

// plotLines draws each mode's line, in its colour, with a legend entry.
func plotLines(b *strings.Builder, modes []string, lines [][][2]float64, x, y axis) {
	for i, m := range modes {
		pts := make([][2]float64, len(lines[i]))
		for j, p := range lines[i] {
			pts[j] = [2]float64{x.pos(p[0]), y.pos(p[1])}
		}
		polyline(b, pts, colour(i), true)
		legendEntry(b, sweepW-sweepRight+12, sweepTop, i, colour(i), m)
	}
}

// TTFTPlot draws each mode's TTFT p90 against offered load, on a log time
// axis, as SVG: one line per mode.
func (sw *Sweep) TTFTPlot() string {
	figs := sw.figures()
	modes, lines := modeLines(figs, func(s Summary) (float64, bool) { return s.TTFT.P90.Seconds(), s.TTFT.P90 > 0 })
	lo, hi := math.Inf(1), math.Inf(-1)
	for _, l := range lines {
		for _, p := range l {
			lo, hi = math.Min(lo, p[1]), math.Max(hi, p[1])
		}
	}
	x := offeredAxis(figs)
	y := logAxis(lo, hi, []float64{1, 2, 5}, fmtSeconds).along(sweepTop, sweepH-sweepTop-sweepBottom, true)
	var b strings.Builder
	plotArea(&b, sweepW, sweepH, "Time to first token, p90, against offered load", x, y, offeredTitle, "TTFT p90 (simulated seconds, log scale)")
	plotLines(&b, modes, lines, x, y)
	b.WriteString("</svg>\n")
	return b.String()
}

// offeredTitle is the x axis title of the sweep's plots.
const offeredTitle = "offered load, requests per simulated second (rate scale)"

// HitRatePlot draws each mode's prefix cache hit rate against offered
// load, with the hit-rate references as dashed lines, as SVG: one line per
// mode.
func (sw *Sweep) HitRatePlot() string {
	figs := sw.figures()
	modes, lines := modeLines(figs, func(s Summary) (float64, bool) { return s.HitRate, s.Completed > 0 })
	maxRate := 0.0
	for _, l := range lines {
		for _, p := range l {
			maxRate = math.Max(maxRate, p[1])
		}
	}
	if bd := sw.Bounds; bd != nil {
		maxRate = math.Max(maxRate, math.Max(bd.PooledLRU, bd.Infinite))
	}
	x := offeredAxis(figs)
	y := percentAxis(maxRate).along(sweepTop, sweepH-sweepTop-sweepBottom, true)
	var b strings.Builder
	plotArea(&b, sweepW, sweepH, "Prefix cache hit rate against offered load", x, y, offeredTitle, "prefix hit rate, measured by the workers")
	boundLines(&b, sw.Bounds, y, sweepLeft, sweepW-sweepRight, false)
	plotLines(&b, modes, lines, x, y)
	refLegendEntries(&b, sw.Bounds, sweepW-sweepRight+12, sweepTop, len(modes))
	b.WriteString("</svg>\n")
	return b.String()
}
