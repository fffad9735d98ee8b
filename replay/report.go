package replay

import (
	"encoding/json"
	"fmt"
	"html"
	"io"
	"maps"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
	"unicode/utf8"

	"github.com/kvrouter/router/scheduler"
)

// Report compares replays of one workload under several router modes.
type Report struct {
	// Title names the workload and the setup; Command is the command line
	// that made the report.
	Title, Command string
	Results        []*Result
	// Bounds, when set, are the workload's reference hit rates on the
	// fleet (ComputeBounds); every report form shows them and each mode's
	// hit rate as a fraction of the pooled one.
	Bounds *Bounds
}

// Files written by Report.Write.
const (
	FileMarkdown = "report.md"
	FileText     = "report.txt"
	FileJSON     = "results.json"
	FileTTFTCDF  = "ttft_cdf.svg"
	FileHitRate  = "hit_rate.svg"
)

// Write writes the report into dir: the table as Markdown (with the plots)
// and plain text, the summaries and per-request records as JSON, and the
// two plots as SVG.
func (rp *Report) Write(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("report: %w", err)
	}
	var text strings.Builder
	rp.WriteWideText(&text)
	files := map[string]string{
		FileMarkdown: rp.Markdown(),
		FileText:     text.String(),
		FileTTFTCDF:  rp.TTFTPlot(),
		FileHitRate:  rp.HitRatePlot(),
	}
	js, err := rp.JSON()
	if err != nil {
		return err
	}
	files[FileJSON] = string(js)
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			return fmt.Errorf("report: %w", err)
		}
	}
	return nil
}

// summaries returns the summary of every result, in order.
func (rp *Report) summaries() []Summary {
	out := make([]Summary, len(rp.Results))
	for i, r := range rp.Results {
		out[i] = r.Summarize()
	}
	return out
}

type column struct {
	head string
	cell func(Summary) string
}

func secs(d time.Duration) string { return fmt.Sprintf("%.3f", d.Seconds()) }

func ms(d time.Duration) string { return fmt.Sprintf("%.2f", float64(d)/float64(time.Millisecond)) }

var columns = []column{
	{"mode", func(s Summary) string { return s.Mode }},
	{"requests", func(s Summary) string { return fmt.Sprint(s.Requests) }},
	{"failed", func(s Summary) string { return fmt.Sprint(s.Failed) }},
	{"offered req/s", func(s Summary) string { return fmt.Sprintf("%.2f", s.OfferedRate) }},
	{"achieved req/s", func(s Summary) string { return fmt.Sprintf("%.2f", s.AchievedRate) }},
	{"prefix hit rate", func(s Summary) string { return fmt.Sprintf("%.1f%%", 100*s.HitRate) }},
	{"TTFT p50 s", func(s Summary) string { return secs(s.TTFT.P50) }},
	{"TTFT p90 s", func(s Summary) string { return secs(s.TTFT.P90) }},
	{"TTFT p99 s", func(s Summary) string { return secs(s.TTFT.P99) }},
	{"ITL p50 ms", func(s Summary) string { return ms(s.ITL.P50) }},
	{"ITL p90 ms", func(s Summary) string { return ms(s.ITL.P90) }},
	{"output tok/s", func(s Summary) string { return fmt.Sprintf("%.0f", s.OutputThroughput) }},
	{"route p50 ms", func(s Summary) string { return ms(s.RouteRTT.P50) }},
	{"route p99 ms", func(s Summary) string { return ms(s.RouteRTT.P99) }},
	{"router decision ms", func(s Summary) string {
		if math.IsNaN(s.RouterOverheadMs) {
			return "-"
		}
		return fmt.Sprintf("%.3f", s.RouterOverheadMs)
	}},
	{"decisions digest", func(s Summary) string { return s.Digest }},
}

// TextWidth is the width, in terminal columns, that WriteText keeps to.
const TextWidth = 100

// narrowColumns are the columns of WriteText, by name: what a reader
// compares first, in at most TextWidth columns for the mode names there
// are (kv, round-robin, random). The rest is in report.md and report.txt.
var narrowColumns = []string{
	"mode", "requests", "failed", "prefix hit rate", "TTFT p50 s", "TTFT p90 s", "TTFT p99 s", "output tok/s",
}

// columnsNamed returns the columns of the given heads, in that order.
func columnsNamed(heads []string) []column {
	out := make([]column, 0, len(heads))
	for _, h := range heads {
		for _, c := range columns {
			if c.head == h {
				out = append(out, c)
			}
		}
	}
	return out
}

// writeHeading writes a Markdown report's title and the command that made
// it, if known.
func writeHeading(b *strings.Builder, title, command string) {
	fmt.Fprintf(b, "# %s\n\n", title)
	if command != "" {
		fmt.Fprintf(b, "Made with:\n\n```sh\n%s\n```\n\n", command)
	}
}

// Markdown renders the report as Markdown: the table, the comparison with
// round-robin, the plots and the command.
func (rp *Report) Markdown() string {
	var b strings.Builder
	sums := rp.summaries()
	writeHeading(&b, rp.Title, rp.Command)
	heads, rows := cells(columns, sums)
	writeMarkdownTable(&b, heads, rows)
	for _, n := range rp.notes(sums) {
		fmt.Fprintf(&b, "\n%s\n", n)
	}
	b.WriteString("\nTTFT, ITL and rates are simulated time; route and router decision times are wall time on the machine " +
		"that ran the replay. The hit rate is measured by the workers: prompt blocks found in their prefix cache over prompt blocks.\n")
	fmt.Fprintf(&b, "\n![TTFT distribution per mode](%s)\n\n![Prefix cache hit rate per mode](%s)\n", FileTTFTCDF, FileHitRate)
	return b.String()
}

// WriteText writes the short table for a terminal, within TextWidth
// columns: the main figures, the comparison with round-robin and the
// decision digests. report.txt and report.md have every column.
func (rp *Report) WriteText(w io.Writer) {
	sums := rp.summaries()
	writeTable(w, columnsNamed(narrowColumns), sums)
	for _, n := range rp.notes(sums) {
		fmt.Fprintln(w, wrap(n, TextWidth))
	}
	digests := make([]string, len(sums))
	for i, s := range sums {
		digests[i] = s.Mode + " " + s.Digest
	}
	if len(digests) > 0 {
		fmt.Fprintln(w, wrap("decisions digest: "+strings.Join(digests, ", "), TextWidth))
	}
}

// WriteWideText writes the whole table as aligned plain text, and the
// comparison (report.txt).
func (rp *Report) WriteWideText(w io.Writer) {
	sums := rp.summaries()
	writeTable(w, columns, sums)
	for _, n := range rp.notes(sums) {
		fmt.Fprintln(w, n)
	}
}

// notes are the sentences every form of the report prints under its table:
// the kv against round-robin comparison, the failures by reason and the
// hit-rate references, each when there is something to say.
func (rp *Report) notes(sums []Summary) []string {
	var out []string
	for _, n := range []string{comparison(sums), failures(sums), rp.boundsLine(sums)} {
		if n != "" {
			out = append(out, n)
		}
	}
	return out
}

// boundsLine states the reference hit rates and each mode's hit rate as a
// fraction of the pooled one, or returns "" without bounds.
func (rp *Report) boundsLine(sums []Summary) string {
	bd := rp.Bounds
	if bd == nil {
		return ""
	}
	line := fmt.Sprintf("Hit-rate references (cache simulation alone, no timing or routing): one LRU cache of the fleet's %d blocks of %d tokens %.1f%%, a cache that never evicts %.1f%%.",
		bd.Capacity, bd.BlockSize, 100*bd.PooledLRU, 100*bd.Infinite)
	if bd.PooledLRU <= 0 || len(sums) == 0 {
		return line
	}
	parts := make([]string, len(sums))
	for i, s := range sums {
		parts[i] = fmt.Sprintf("%s %.0f%%", s.Mode, 100*s.HitRate/bd.PooledLRU)
	}
	return line + " Of the pooled figure: " + strings.Join(parts, ", ") + "."
}

// failures lists each mode's failed requests by reason, most frequent
// first, or returns "" when none failed.
func failures(sums []Summary) string {
	var parts []string
	for _, s := range sums {
		if len(s.FailedBy) == 0 {
			continue
		}
		reasons := slices.Collect(maps.Keys(s.FailedBy))
		slices.SortFunc(reasons, func(a, b string) int {
			if d := s.FailedBy[b] - s.FailedBy[a]; d != 0 {
				return d
			}
			return strings.Compare(a, b)
		})
		for i, r := range reasons {
			reasons[i] = fmt.Sprintf("%s %d", r, s.FailedBy[r])
		}
		parts = append(parts, s.Mode+": "+strings.Join(reasons, ", "))
	}
	if len(parts) == 0 {
		return ""
	}
	return "failed requests by reason: " + strings.Join(parts, "; ") + "."
}

// writeTable writes the columns of sums, aligned right.
func writeTable(w io.Writer, cols []column, sums []Summary) {
	heads, rows := cells(cols, sums)
	writeAlignedTable(w, heads, rows)
}

// cells returns the heads of cols and, for each summary, its row.
func cells(cols []column, sums []Summary) (heads []string, rows [][]string) {
	heads = make([]string, len(cols))
	for i, c := range cols {
		heads[i] = c.head
	}
	for _, s := range sums {
		row := make([]string, len(cols))
		for i, c := range cols {
			row[i] = c.cell(s)
		}
		rows = append(rows, row)
	}
	return heads, rows
}

// writeAlignedTable writes a table as plain text, each column aligned
// right: the one way the text reports lay out a table.
func writeAlignedTable(w io.Writer, heads []string, rows [][]string) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	for _, row := range append([][]string{heads}, rows...) {
		for _, cell := range row {
			fmt.Fprintf(tw, "%s\t", cell)
		}
		fmt.Fprintln(tw)
	}
	_ = tw.Flush()
}

// writeMarkdownTable writes a table as Markdown: the one way the Markdown
// reports lay out a table.
func writeMarkdownTable(b *strings.Builder, heads []string, rows [][]string) {
	seps := make([]string, len(heads))
	for i := range seps {
		seps[i] = "---"
	}
	fmt.Fprintf(b, "| %s |\n| %s |\n", strings.Join(heads, " | "), strings.Join(seps, " | "))
	for _, row := range rows {
		fmt.Fprintf(b, "| %s |\n", strings.Join(row, " | "))
	}
}

// wrap breaks s at spaces into lines of at most width runes (a word longer
// than width stays whole), indenting the lines after the first by two.
func wrap(s string, width int) string {
	var b strings.Builder
	line := 0
	for i, word := range strings.Fields(s) {
		n := utf8.RuneCountInString(word)
		switch {
		case i == 0:
		case line+1+n > width:
			b.WriteString("\n  ")
			line = 2
		default:
			b.WriteByte(' ')
			line++
		}
		b.WriteString(word)
		line += n
	}
	return b.String()
}

// comparison states the kv mode's TTFT p90 and hit rate against
// round-robin's, when both ran.
func comparison(sums []Summary) string {
	kv, rr := kvAndRoundRobin(sums)
	if kv == nil || rr == nil || kv.TTFT.P90 <= 0 || rr.HitRate <= 0 {
		return ""
	}
	return fmt.Sprintf("kv vs round-robin: TTFT p90 %.2f× lower (%.3f s vs %.3f s), prefix hit rate %.2f× (%.1f%% vs %.1f%%).",
		rr.TTFT.P90.Seconds()/kv.TTFT.P90.Seconds(), kv.TTFT.P90.Seconds(), rr.TTFT.P90.Seconds(),
		kv.HitRate/rr.HitRate, 100*kv.HitRate, 100*rr.HitRate)
}

// kvAndRoundRobin returns the summaries of the kv and round-robin modes,
// nil for one that did not run.
func kvAndRoundRobin(sums []Summary) (kv, rr *Summary) {
	for i := range sums {
		switch sums[i].Mode {
		case scheduler.ModeKV.String():
			kv = &sums[i]
		case scheduler.ModeRoundRobin.String():
			rr = &sums[i]
		}
	}
	return kv, rr
}

// JSON returns the summaries and the per-request records.
func (rp *Report) JSON() ([]byte, error) {
	type run struct {
		Summary Summary  `json:"summary"`
		Records []Record `json:"records"`
	}
	out := struct {
		Title   string  `json:"title"`
		Command string  `json:"command"`
		Bounds  *Bounds `json:"bounds,omitempty"`
		Runs    []run   `json:"runs"`
	}{Title: rp.Title, Command: rp.Command, Bounds: rp.Bounds}
	for _, r := range rp.Results {
		s := r.Summarize()
		if math.IsNaN(s.RouterOverheadMs) {
			s.RouterOverheadMs = -1
		}
		out.Runs = append(out.Runs, run{Summary: s, Records: r.Records})
	}
	return json.MarshalIndent(out, "", " ")
}

// TTFTPlot draws the TTFT distribution of each mode as a CDF on a log time
// axis, as SVG.
func (rp *Report) TTFTPlot() string {
	const W, H, left, right, top, bottom = 780, 440, 70, 210, 40, 60
	lo, hi := math.Inf(1), math.Inf(-1)
	for _, r := range rp.Results {
		for _, d := range r.TTFTs() {
			if s := d.Seconds(); s > 0 {
				lo, hi = math.Min(lo, s), math.Max(hi, s)
			}
		}
	}
	x := logAxis(lo, hi, []float64{1}, fmtSeconds).along(left, W-left-right, false)
	y := axis{lo: 0, hi: 1, ticks: []float64{0, 0.25, 0.5, 0.75, 0.9, 1}, label: func(p float64) string { return fmt.Sprintf("%.2f", p) }}.
		along(top, H-top-bottom, true)
	var b strings.Builder
	plotArea(&b, W, H, "Time to first token, cumulative distribution", x, y, "TTFT (simulated seconds, log scale)", "fraction of requests")
	for i, r := range rp.Results {
		ts := r.TTFTs()
		if len(ts) == 0 {
			continue
		}
		col := colour(i)
		// Step curve, thinned to at most ~600 points.
		stride := max(1, len(ts)/600)
		pts := [][2]float64{{x.pos(ts[0].Seconds()), y.pos(0)}}
		for j := 0; j < len(ts); j += stride {
			pts = append(pts, [2]float64{x.pos(ts[j].Seconds()), y.pos(float64(j+1) / float64(len(ts)))})
		}
		pts = append(pts, [2]float64{x.pos(ts[len(ts)-1].Seconds()), y.pos(1)})
		polyline(&b, pts, col, false)
		p90 := quantile(ts, 0.9).Seconds()
		fmt.Fprintf(&b, `<circle cx="%.1f" cy="%.1f" r="4" fill="%s"/>`+"\n", x.pos(p90), y.pos(0.9), col)
		legendEntry(&b, W-right+12, top, i, col, fmt.Sprintf("%s (p90 %s)", r.Mode, fmtSeconds(p90)))
	}
	b.WriteString("</svg>\n")
	return b.String()
}

// HitRatePlot draws each mode's prefix cache hit rate as a bar, as SVG.
func (rp *Report) HitRatePlot() string {
	const W, H, left, top, bottom = 520, 360, 70, 40, 60
	sums := rp.summaries()
	maxRate := 0.0
	for _, s := range sums {
		maxRate = math.Max(maxRate, s.HitRate)
	}
	if rp.Bounds != nil {
		maxRate = math.Max(maxRate, math.Max(rp.Bounds.PooledLRU, rp.Bounds.Infinite))
	}
	y := percentAxis(maxRate).along(top, H-top-bottom, true)
	var b strings.Builder
	svgOpen(&b, W, H, "Prefix cache hit rate measured by the workers")
	y.draw(&b, left, W-20)
	n := max(len(sums), 1)
	slot := float64(W-left-20) / float64(n)
	for i, s := range sums {
		bx := float64(left) + slot*float64(i) + slot*0.2
		fmt.Fprintf(&b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s"/>`+"\n", bx, y.pos(s.HitRate), slot*0.6, y.pos(0)-y.pos(s.HitRate), colour(i))
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" text-anchor="middle">%.1f%%</text>`+"\n", bx+slot*0.3, y.pos(s.HitRate)-6, 100*s.HitRate)
		fmt.Fprintf(&b, `<text x="%.1f" y="%d" text-anchor="middle">%s</text>`+"\n", bx+slot*0.3, H-bottom+20, html.EscapeString(s.Mode))
	}
	boundLines(&b, rp.Bounds, y, left, W-20, true)
	fmt.Fprintf(&b, `<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#444"/>`+"\n", left, y.pos(0), W-20, y.pos(0))
	b.WriteString("</svg>\n")
	return b.String()
}
