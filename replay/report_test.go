package replay

import (
	"context"
	"encoding/xml"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/google/go-cmp/cmp"
)

var update = flag.Bool("update", false, "rewrite the golden files")

func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("..", "testdata", "sim", name)
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(string(want), got); diff != "" {
		t.Fatalf("%s differs (-want +got); rerun with -update if intended:\n%s", name, diff)
	}
}

// fixedResult is a made-up replay: request i arrives at i s, waits
// (i+1)·k00 ms for its first token, and hits i of 10 blocks.
func fixedResult(mode string, k time.Duration) *Result {
	return fixedResultAt(mode, k, 1)
}

// fixedResultAt is fixedResult with the arrivals brought closer by scale:
// request i arrives at i/scale s.
func fixedResultAt(mode string, k time.Duration, scale float64) *Result {
	r := &Result{Mode: mode, Workload: "w", Lockstep: true, RouterOverheadMs: math.NaN()}
	for i := range 10 {
		r.Records = append(r.Records, Record{
			Index: i, Arrival: time.Duration(float64(i) * float64(time.Second) / scale), WorkerID: uint64(i % 2), WorkerIndex: i % 2,
			OverlapBlocks: i, RouterBlocks: 10, PromptBlocks: 10, CachedBlocks: i,
			TTFT: time.Duration(i+1) * k, E2E: time.Duration(i+1)*k + time.Second, ITL: 10 * time.Millisecond,
			OutputTokens: 101, RouteRTT: time.Millisecond, Done: true,
		})
	}
	return r
}

func TestSummarize(t *testing.T) {
	s := fixedResult("kv", 100*time.Millisecond).Summarize()
	if s.Completed != 10 || s.HitRate != 0.45 || s.TTFT.P50 != 500*time.Millisecond || s.TTFT.P90 != 900*time.Millisecond ||
		s.TTFT.P99 != time.Second || s.OutputThroughput != 1010.0/11 || len(s.PerWorker) != 2 || s.PerWorker[0] != 5 {
		t.Fatalf("summary %+v", s)
	}
}

func TestReportGolden(t *testing.T) {
	rp := &Report{Title: "Test", Command: "router compare --trace x",
		Results: []*Result{fixedResult("kv", 100*time.Millisecond), fixedResult("round-robin", 400*time.Millisecond)},
		Bounds:  &Bounds{BlockSize: 64, Capacity: 65536, PooledLRU: 0.6, Infinite: 0.75}}
	var text strings.Builder
	rp.WriteWideText(&text)
	golden(t, "report.golden.txt", text.String())
	golden(t, "report.golden.md", rp.Markdown())
	if !strings.Contains(text.String(), "kv vs round-robin: TTFT p90 4.00× lower") {
		t.Fatalf("no comparison line:\n%s", text.String())
	}
	// Both modes hit 45% (fixedResult): 75% of the pooled 60%.
	for _, form := range []string{text.String(), rp.Markdown()} {
		if !strings.Contains(form, "one LRU cache of the fleet's 65536 blocks of 64 tokens 60.0%, a cache that never evicts 75.0%. Of the pooled figure: kv 75%, round-robin 75%.") {
			t.Fatalf("no bounds line:\n%s", form)
		}
	}
	if !strings.Contains(rp.HitRatePlot(), "pooled LRU 60.0%") {
		t.Fatal("the hit-rate plot lacks the pooled reference")
	}
	for name, svg := range map[string]string{"ttft": rp.TTFTPlot(), "hit": rp.HitRatePlot()} {
		d := xml.NewDecoder(strings.NewReader(svg))
		for {
			_, err := d.Token()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("%s plot is not well-formed XML: %v", name, err)
			}
		}
	}
	dir := t.TempDir()
	if err := rp.Write(dir); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{FileMarkdown, FileText, FileJSON, FileTTFTCDF, FileHitRate} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Fatal(err)
		}
	}
}

// TestWriteTextFitsTheTerminal: the table `make demo` prints keeps to
// TextWidth columns with every router mode and large figures, and still
// names each mode's decision digest; report.txt keeps every column.
func TestWriteTextFitsTheTerminal(t *testing.T) {
	slow := fixedResult("random", 100*time.Second) // TTFTs up to 1,000 s
	rp := &Report{Results: []*Result{fixedResult("kv", 100*time.Millisecond), fixedResult("round-robin", 400*time.Millisecond), slow}}
	var short, wide strings.Builder
	rp.WriteText(&short)
	rp.WriteWideText(&wide)
	golden(t, "report.golden.short.txt", short.String())
	for i, line := range strings.Split(strings.TrimSuffix(short.String(), "\n"), "\n") {
		if n := utf8.RuneCountInString(line); n > TextWidth {
			t.Errorf("line %d is %d columns wide, over %d:\n%s", i+1, n, TextWidth, line)
		}
	}
	for _, s := range rp.summaries() {
		if !strings.Contains(short.String(), s.Mode+" "+s.Digest) {
			t.Errorf("the short table lacks the digest of %s:\n%s", s.Mode, short.String())
		}
	}
	if widest := maxLineWidth(wide.String()); widest <= TextWidth {
		t.Fatalf("the wide table is %d columns wide: the test no longer tells the two apart", widest)
	}
	if !strings.Contains(wide.String(), "route p99 ms") || strings.Contains(short.String(), "route p99 ms") {
		t.Fatalf("route p99 should be in the wide table only:\nshort:\n%s\nwide:\n%s", short.String(), wide.String())
	}
}

func maxLineWidth(s string) int {
	n := 0
	for _, line := range strings.Split(s, "\n") {
		n = max(n, utf8.RuneCountInString(line))
	}
	return n
}

func TestWrap(t *testing.T) {
	tests := []struct {
		name, in string
		width    int
		want     string
	}{
		{"fits", "a bb ccc", 8, "a bb ccc"},
		{"breaks", "a bb ccc", 7, "a bb\n  ccc"},
		{"long word", "abcdefgh ij", 4, "abcdefgh\n  ij"},
		{"runes", "× × ×", 3, "× ×\n  ×"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := wrap(tt.in, tt.width); got != tt.want {
				t.Fatalf("wrap(%q, %d) = %q, want %q", tt.in, tt.width, got, tt.want)
			}
		})
	}
}

func TestParseExposition(t *testing.T) {
	in := `# HELP x help
# TYPE dynamo_component_kv_cache_events_applied counter
dynamo_component_kv_cache_events_applied{event_type="stored",status="ok",note="a } b"} 12
dynamo_component_kv_cache_events_applied{event_type="removed",status="ok"} 3e+00
dynamo_router_overhead_total_ms_sum{router_id="1"} 1.5
dynamo_router_overhead_total_ms_count 3
garbage line
`
	got, err := parseExposition(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]float64{
		"dynamo_component_kv_cache_events_applied": 15,
		"dynamo_router_overhead_total_ms_sum":      1.5,
		"dynamo_router_overhead_total_ms_count":    3,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("(-want +got):\n%s", diff)
	}
}

func TestMetricsBarrier(t *testing.T) {
	var applied atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		n := applied.Add(1) // each scrape sees one more event
		fmt.Fprintf(w, "dynamo_component_kv_cache_events_applied{status=\"ok\"} %d\ndynamo_component_kv_events_dropped_total{reason=\"x\"} 1\n", n)
	}))
	defer srv.Close()
	b := &MetricsBarrier{URL: srv.URL, Timeout: 5 * time.Second}
	if err := b.Wait(context.Background(), 5); err != nil {
		t.Fatal(err)
	}
	if got := applied.Load(); got != 4 {
		t.Fatalf("%d scrapes, want 4 (applied 4 + dropped 1 = 5)", got)
	}
	if err := b.Wait(context.Background(), 3); err != nil || applied.Load() != 4 {
		t.Fatalf("a Wait for fewer events scraped again: %v", err)
	}
	short := &MetricsBarrier{URL: srv.URL, Timeout: 20 * time.Millisecond}
	if err := short.Wait(context.Background(), 1<<40); !errors.Is(err, ErrBarrierTimeout) {
		t.Fatalf("Wait for too many = %v, want ErrBarrierTimeout", err)
	}
}
