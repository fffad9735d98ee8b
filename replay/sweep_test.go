package replay

import (
	"encoding/json"
	"encoding/xml"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

// fixedSweep is a made-up sweep at two rate scales: kv's TTFTs grow from
// 100 to 150 ms steps, round-robin's from 400 to 900 ms, random's from 1
// to 3 s; kv hits 45% of prompt blocks, round-robin and random 16%.
func fixedSweep() *Sweep {
	fewerHits := func(r *Result) *Result {
		for i := range r.Records {
			r.Records[i].CachedBlocks = r.Records[i].Index * 4 / 9
			r.Records[i].WorkerID = uint64(r.Records[i].Index % 3) // another digest
		}
		return r
	}
	point := func(scale float64, kv, rr, random time.Duration) SweepPoint {
		return SweepPoint{Scale: scale, Dir: ScaleDir(scale), Results: []*Result{
			fixedResultAt("kv", kv, scale), fewerHits(fixedResultAt("round-robin", rr, scale)), fewerHits(fixedResultAt("random", random, scale)),
		}}
	}
	return &Sweep{
		Title: "Test sweep", Command: "router compare --trace x --rate-scales 1,2",
		Points: []SweepPoint{
			point(1, 100*time.Millisecond, 400*time.Millisecond, time.Second),
			point(2, 150*time.Millisecond, 900*time.Millisecond, 3*time.Second),
		},
		Bounds: &Bounds{BlockSize: 64, Capacity: 65536, PooledLRU: 0.6, Infinite: 0.75},
	}
}

func TestSweepGolden(t *testing.T) {
	sw := fixedSweep()
	var wide, short strings.Builder
	sw.WriteWideText(&wide)
	sw.WriteText(&short)
	js, err := sw.JSON()
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "sweep.golden.txt", wide.String())
	golden(t, "sweep.golden.short.txt", short.String())
	golden(t, "sweep.golden.md", sw.Markdown())
	golden(t, "sweep.golden.json", string(js))

	// The figures the targets are stated in, read back from the JSON.
	var doc struct {
		Bounds *Bounds `json:"bounds"`
		Points []struct {
			Scale   float64 `json:"rate_scale"`
			Dir     string  `json:"dir"`
			Offered float64 `json:"offered_rate"`
			Runs    []struct {
				Summary  Summary  `json:"summary"`
				OfPooled *float64 `json:"hit_rate_of_pooled_lru"`
			} `json:"runs"`
			Ratios *sweepRatios `json:"kv_vs_round_robin"`
		} `json:"points"`
	}
	if err := json.Unmarshal(js, &doc); err != nil {
		t.Fatal(err)
	}
	if len(doc.Points) != 2 || doc.Bounds == nil || doc.Bounds.PooledLRU != 0.6 {
		t.Fatalf("sweep.json: %d points, bounds %+v", len(doc.Points), doc.Bounds)
	}
	tests := []struct {
		name                 string
		scale, offered       float64
		dir                  string
		p50, p90, p99, kvOfP float64
	}{
		{"×1", 1, 1, "x1", 4, 4, 4, 0.75},
		{"×2", 2, 2, "x2", 6, 6, 6, 0.75},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := doc.Points[i]
			if p.Scale != tt.scale || p.Dir != tt.dir || p.Offered != tt.offered || len(p.Runs) != 3 || p.Ratios == nil {
				t.Fatalf("point %+v", p)
			}
			r := p.Ratios
			if !near(r.TTFTP50, tt.p50) || !near(r.TTFTP90, tt.p90) || !near(r.TTFTP99, tt.p99) || r.KVOfPooled == nil || !near(*r.KVOfPooled, tt.kvOfP) {
				t.Fatalf("ratios %+v, want p50 %g p90 %g p99 %g kv/pooled %g", r, tt.p50, tt.p90, tt.p99, tt.kvOfP)
			}
			if rr := p.Runs[1]; rr.Summary.Mode != "round-robin" || rr.OfPooled == nil || !near(*rr.OfPooled, 0.16/0.6) {
				t.Fatalf("round-robin %+v", rr)
			}
		})
	}
	for i, line := range strings.Split(strings.TrimSuffix(short.String(), "\n"), "\n") {
		if n := utf8.RuneCountInString(line); n > TextWidth {
			t.Errorf("terminal line %d is %d columns wide, over %d:\n%s", i+1, n, TextWidth, line)
		}
	}
}

func near(a, b float64) bool { return a-b < 1e-9 && b-a < 1e-9 }

// TestSweepWithoutKVOrBounds: without round-robin there are no ratios, and
// without bounds no fraction of them; the tables still come out.
func TestSweepWithoutKVOrBounds(t *testing.T) {
	sw := &Sweep{Points: []SweepPoint{{Scale: 1, Results: []*Result{fixedResult("kv", time.Second)}}}}
	md := sw.Markdown()
	if strings.Contains(md, "kv against round-robin") || strings.Contains(md, "Hit-rate references") || !strings.Contains(md, "| ×1 | kv |") {
		t.Fatalf("markdown:\n%s", md)
	}
	js, err := sw.JSON()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(js), "kv_vs_round_robin") || strings.Contains(string(js), "hit_rate_of_pooled_lru") {
		t.Fatalf("json:\n%s", js)
	}
	var short strings.Builder
	sw.WriteText(&short)
	if short.Len() != 0 {
		t.Fatalf("terminal text without ratios or bounds: %q", short.String())
	}
}

// TestSweepPlots: both plots are well-formed SVG with one line per mode,
// through every scale; the hit-rate plot has both references.
func TestSweepPlots(t *testing.T) {
	sw := fixedSweep()
	for _, tt := range []struct {
		name, svg string
		refs      []string
	}{
		{"ttft", sw.TTFTPlot(), nil},
		{"hit rate", sw.HitRatePlot(), []string{"pooled LRU 60.0%", "never evicts 75.0%"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var lines [][]string
			d := xml.NewDecoder(strings.NewReader(tt.svg))
			for {
				tok, err := d.Token()
				if errors.Is(err, io.EOF) {
					break
				}
				if err != nil {
					t.Fatalf("not well-formed XML: %v", err)
				}
				if el, ok := tok.(xml.StartElement); ok && el.Name.Local == "polyline" {
					for _, a := range el.Attr {
						if a.Name.Local == "points" {
							lines = append(lines, strings.Fields(a.Value))
						}
					}
				}
			}
			if len(lines) != 3 {
				t.Fatalf("%d polylines, want one per mode (3)", len(lines))
			}
			for i, l := range lines {
				if len(l) != len(sw.Points) {
					t.Errorf("line %d has %d points, want one per scale (%d): %v", i, len(l), len(sw.Points), l)
				}
			}
			for _, want := range append(tt.refs, "kv", "round-robin", "random", "1.00 (×1)", "2.00 (×2)") {
				if !strings.Contains(tt.svg, want) {
					t.Errorf("no %q in the plot", want)
				}
			}
		})
	}
}

func TestSweepWrite(t *testing.T) {
	dir := t.TempDir()
	if err := fixedSweep().Write(dir); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{FileSweepMarkdown, FileSweepText, FileSweepJSON, FileSweepTTFT, FileSweepHitRate} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Fatal(err)
		}
	}
}

func TestScaleDir(t *testing.T) {
	for _, tt := range []struct {
		scale float64
		want  string
	}{{1, "x1"}, {1.5, "x1.5"}, {0.25, "x0.25"}, {10, "x10"}} {
		if got := ScaleDir(tt.scale); got != tt.want {
			t.Errorf("ScaleDir(%g) = %q, want %q", tt.scale, got, tt.want)
		}
	}
}
