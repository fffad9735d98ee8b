package replay

import (
	"fmt"
	"html"
	"math"
	"strings"
)

// This file holds what every plot of the reports shares: the page, the
// colours, the axes, the legend and the reference lines. Each plot is a
// function of its figures alone, written as SVG text.

// Colours of the modes in the plots (colour-blind safe).
var palette = []string{"#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9"}

// colour is the colour of the i-th mode: the same in every plot.
func colour(i int) string { return palette[i%len(palette)] }

func svgOpen(b *strings.Builder, w, h int, title string) {
	fmt.Fprintf(b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`+"\n", w, h, w, h)
	fmt.Fprintf(b, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	fmt.Fprintf(b, `<text x="%d" y="22" text-anchor="middle" font-size="15" font-weight="bold">%s</text>`+"\n", w/2, html.EscapeString(title))
}

func fmtSeconds(s float64) string {
	switch {
	case s >= 1:
		return fmt.Sprintf("%gs", math.Round(s*100)/100)
	case s >= 0.001:
		return fmt.Sprintf("%gms", math.Round(s*1e5)/100)
	}
	return fmt.Sprintf("%gs", s)
}

// axis maps figures onto one side of a plot's area, linearly or on a log
// scale, and draws its grid lines and tick labels: the one way the plots
// draw an axis.
type axis struct {
	// lo and hi are the figures at the two ends of the axis.
	lo, hi float64
	log    bool
	// start and length place the plot's area along the axis, in pixels:
	// left and width for a horizontal axis, top and height for a vertical
	// one (whose figures grow upwards).
	start, length float64
	vertical      bool
	// ticks are the figures that get a grid line and label(tick).
	ticks []float64
	label func(float64) string
}

// linearAxis runs from lo to hi with a tick every step, from lo.
func linearAxis(lo, hi, step float64, label func(float64) string) axis {
	a := axis{lo: lo, hi: hi, label: label}
	// Repeated addition, not lo + i·step: the plots drew their ticks so
	// before this helper, and the figures are the same to the last bit.
	for v := lo; v <= hi+1e-9; v += step {
		a.ticks = append(a.ticks, v)
	}
	return a
}

// percentAxis runs from 0 to maxRate rounded up to a tenth (at least a
// tenth), with a tick at every fifth of it, labelled in percent.
func percentAxis(maxRate float64) axis {
	top := math.Max(0.1, math.Ceil(maxRate*10)/10)
	return linearAxis(0, top, top/5, func(v float64) string { return fmt.Sprintf("%.0f%%", 100*v) })
}

// logAxis runs over the decades around lo..hi (figures at or below 0 are
// ignored by the caller), with a tick at each multiple in steps of each
// decade (1 for the decades alone; 1, 2, 5 for more).
func logAxis(lo, hi float64, steps []float64, label func(float64) string) axis {
	if math.IsInf(lo, 0) || lo <= 0 {
		lo, hi = 0.01, 1
	}
	lo = math.Pow(10, math.Floor(math.Log10(lo)))
	hi = math.Pow(10, math.Ceil(math.Log10(hi)))
	if hi <= lo {
		hi = lo * 10
	}
	a := axis{lo: lo, hi: hi, log: true, label: label}
	for e := math.Log10(lo); e <= math.Log10(hi)+1e-9; e++ {
		for _, s := range steps {
			if v := s * math.Pow(10, e); v <= hi*(1+1e-9) {
				a.ticks = append(a.ticks, v)
			}
		}
	}
	return a
}

// along places the axis on the plot: a horizontal axis over left..left+
// width, or a vertical one over top..top+height.
func (a axis) along(start, length int, vertical bool) axis {
	a.start, a.length, a.vertical = float64(start), float64(length), vertical
	return a
}

// pos is the pixel of figure v (below lo on a log axis: lo's).
func (a axis) pos(v float64) float64 {
	var f float64
	if a.log {
		v = math.Max(v, a.lo)
		f = (math.Log10(v) - math.Log10(a.lo)) / (math.Log10(a.hi) - math.Log10(a.lo))
	} else {
		f = (v - a.lo) / (a.hi - a.lo)
	}
	if a.vertical {
		return a.start + a.length*(1-f)
	}
	return a.start + a.length*f
}

// draw writes a grid line across the plot's area, from..to on the other
// axis, and a label for each tick: below the area for a horizontal axis,
// left of it for a vertical one.
func (a axis) draw(b *strings.Builder, from, to int) {
	for _, v := range a.ticks {
		p, text := a.pos(v), html.EscapeString(a.label(v))
		if a.vertical {
			fmt.Fprintf(b, `<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#ddd"/>`+"\n", from, p, to, p)
			fmt.Fprintf(b, `<text x="%d" y="%.1f" text-anchor="end">%s</text>`+"\n", from-6, p+4, text)
			continue
		}
		fmt.Fprintf(b, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#ddd"/>`+"\n", p, from, p, to)
		fmt.Fprintf(b, `<text x="%.1f" y="%d" text-anchor="middle">%s</text>`+"\n", p, to+18, text)
	}
}

// plotArea opens an SVG plot of w × h titled title and draws its area,
// which x and y were placed over (along): both axes' grid lines and
// labels, their titles, and the frame.
func plotArea(b *strings.Builder, w, h int, title string, x, y axis, xTitle, yTitle string) {
	svgOpen(b, w, h, title)
	x.draw(b, int(y.start), int(y.start+y.length))
	y.draw(b, int(x.start), int(x.start+x.length))
	axisTitles(b, x, y, h, xTitle, yTitle)
	frame(b, x, y)
}

// axisTitles writes the title of the x axis under the area of a plot of
// height h and the title of the y axis, turned, left of it.
func axisTitles(b *strings.Builder, x, y axis, h int, xTitle, yTitle string) {
	fmt.Fprintf(b, `<text x="%.1f" y="%d" text-anchor="middle">%s</text>`+"\n", x.start+x.length/2, h-18, html.EscapeString(xTitle))
	mid := y.start + y.length/2
	fmt.Fprintf(b, `<text x="16" y="%.1f" text-anchor="middle" transform="rotate(-90 16 %.1f)">%s</text>`+"\n", mid, mid, html.EscapeString(yTitle))
}

// frame draws the border of the plot's area.
func frame(b *strings.Builder, x, y axis) {
	fmt.Fprintf(b, `<rect x="%.0f" y="%.0f" width="%.0f" height="%.0f" fill="none" stroke="#444"/>`+"\n", x.start, y.start, x.length, y.length)
}

// legendEntry writes the i-th line of a legend whose top left is at x, top:
// a stroke of the colour and the text.
func legendEntry(b *strings.Builder, x, top, i int, col, text string) {
	ly := top + 20 + 22*i
	fmt.Fprintf(b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="%s" stroke-width="3"/>`+"\n", x, ly, x+20, ly, col)
	fmt.Fprintf(b, `<text x="%d" y="%d">%s</text>`+"\n", x+26, ly+4, html.EscapeString(text))
}

// reference is a hit-rate reference line of the plots.
type reference struct {
	name string
	v    float64
	// dash tells the two apart where the legend names them.
	dash string
}

// references are the hit-rate references of bd, none without bounds.
func references(bd *Bounds) []reference {
	if bd == nil {
		return nil
	}
	return []reference{{"pooled LRU", bd.PooledLRU, "6 4"}, {"never evicts", bd.Infinite, "2 3"}}
}

// boundLines draws the hit-rate references as dashed lines across the
// plot, from left to right, at their height on the vertical axis y: each
// labelled at its right end when labelled, all with the same dashes;
// otherwise each with its own dashes, and the legend names them
// (refLegendEntries).
func boundLines(b *strings.Builder, bd *Bounds, y axis, left, right int, labelled bool) {
	for _, ref := range references(bd) {
		dash := ref.dash
		if labelled {
			dash = "6 4"
		}
		fmt.Fprintf(b, `<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#444" stroke-dasharray="%s"/>`+"\n", left, y.pos(ref.v), right, y.pos(ref.v), dash)
		if labelled {
			fmt.Fprintf(b, `<text x="%d" y="%.1f" text-anchor="end" fill="#444">%s %.1f%%</text>`+"\n", right-2, y.pos(ref.v)-4, ref.name, 100*ref.v)
		}
	}
}

// refLegendEntries writes the hit-rate references into a legend, from
// its i-th line on (legendEntry).
func refLegendEntries(b *strings.Builder, bd *Bounds, x, top, i int) {
	for j, ref := range references(bd) {
		ly := top + 20 + 22*(i+j)
		fmt.Fprintf(b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="#444" stroke-dasharray="%s"/>`+"\n", x, ly, x+20, ly, ref.dash)
		fmt.Fprintf(b, `<text x="%d" y="%d">%s %.1f%%</text>`+"\n", x+26, ly+4, ref.name, 100*ref.v)
	}
}

// polyline draws the points (x, y pairs in pixels) joined, in the colour,
// with a dot at each point when dots.
func polyline(b *strings.Builder, pts [][2]float64, col string, dots bool) {
	var s strings.Builder
	for i, p := range pts {
		if i > 0 {
			s.WriteByte(' ')
		}
		fmt.Fprintf(&s, "%.1f,%.1f", p[0], p[1])
	}
	fmt.Fprintf(b, `<polyline fill="none" stroke="%s" stroke-width="2" points="%s"/>`+"\n", col, s.String())
	if dots {
		for _, p := range pts {
			fmt.Fprintf(b, `<circle cx="%.1f" cy="%.1f" r="4" fill="%s"/>`+"\n", p[0], p[1], col)
		}
	}
}
