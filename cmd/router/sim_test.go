package main

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/xml"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/urfave/cli/v2"

	"github.com/kvrouter/router/internal/testutil"
	"github.com/kvrouter/router/replay"
	"github.com/kvrouter/router/sim"
)

// runSimCmd runs the router with the simulation commands in-process.
func runSimCmd(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var out, errw bytes.Buffer
	app := newApp(&out, &errw)
	have := map[string]bool{}
	for _, c := range app.Commands {
		have[c.Name] = true
	}
	for _, c := range []*cli.Command{simCommand(), replayCommand(), compareCommand()} {
		if !have[c.Name] {
			app.Commands = append(app.Commands, c)
		}
	}
	code = 0
	if err := app.RunContext(context.Background(), append([]string{"router"}, args...)); err != nil {
		var exit cli.ExitCoder
		if ok := asExit(err, &exit); ok {
			code = exit.ExitCode()
		} else {
			code = 1
		}
		errw.WriteString(err.Error())
	}
	return out.String(), errw.String(), code
}

func asExit(err error, target *cli.ExitCoder) bool {
	e, ok := err.(cli.ExitCoder)
	if ok {
		*target = e
	}
	return ok
}

// summaries reads the summaries of a compare report.
func summaries(t *testing.T, dir string) []replay.Summary {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, replay.FileJSON))
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Runs []struct {
			Summary replay.Summary `json:"summary"`
		} `json:"runs"`
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	var out []replay.Summary
	for _, r := range doc.Runs {
		out = append(out, r.Summary)
	}
	return out
}

// TestCompareIsDeterministic runs `router compare` twice on an excerpt of
// the trace, with the real router in every mode: the same decisions, hit
// rates and latencies both times, and every report file written.
func TestCompareIsDeterministic(t *testing.T) {
	args := func(out string) []string {
		return []string{"compare", "--trace", "../../testdata/mooncake_excerpt.jsonl", "--max-requests", "80",
			"--workers", "4", "--num-gpu-blocks", "4096", "--modes", "kv,round-robin,random", "--out", out}
	}
	var runs [][]replay.Summary
	for range 2 {
		dir := t.TempDir()
		stdout, stderr, code := runSimCmd(t, args(dir)...)
		if code != 0 {
			t.Fatalf("compare exited %d:\n%s", code, stderr)
		}
		if !strings.Contains(stdout, "decisions digest") || !strings.Contains(stderr, "replay kv: 80/80 sent") {
			t.Fatalf("no table or progress:\nstdout:\n%s\nstderr:\n%s", stdout, stderr)
		}
		for _, f := range []string{replay.FileMarkdown, replay.FileText, replay.FileJSON, replay.FileTTFTCDF, replay.FileHitRate} {
			if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
				t.Fatal(err)
			}
		}
		runs = append(runs, summaries(t, dir))
	}
	for i, a := range runs[0] {
		b := runs[1][i]
		if a.Completed != 80 || a.Digest != b.Digest || a.HitRate != b.HitRate || a.TTFT != b.TTFT || a.ITL != b.ITL {
			t.Fatalf("%s differs between two runs:\n%+v\n%+v", a.Mode, a, b)
		}
	}
	if runs[0][0].Digest == runs[0][1].Digest {
		t.Fatal("kv and round-robin made the same decisions")
	}
}

// TestCompareRealTime runs a short comparison on the wall clock.
func TestCompareRealTime(t *testing.T) {
	dir := t.TempDir()
	_, stderr, code := runSimCmd(t, "compare", "--synthetic", "--requests", "30", "--rate", "20", "--output-tokens", "16",
		"--workers", "2", "--modes", "kv", "--clock", "real", "--speedup", "20", "--out", dir)
	if code != 0 {
		t.Fatalf("compare exited %d:\n%s", code, stderr)
	}
	s := summaries(t, dir)
	if len(s) != 1 || s[0].Completed != 30 || s[0].HitRate <= 0 {
		t.Fatalf("summaries %+v", s)
	}
}

func TestParseRateScales(t *testing.T) {
	tests := []struct {
		name, in string
		want     []float64
		err      string
	}{
		{"one", "2", []float64{2}, ""},
		{"sweep in order", "1, 1.5,3,2.5", []float64{1, 1.5, 3, 2.5}, ""},
		{"small", "0.25", []float64{0.25}, ""},
		{"empty", " ", nil, "--rate-scales: empty: give comma-separated rate scales, such as 1,1.5,2"},
		{"not a number", "1,x", nil, `--rate-scales: item 1: "x" is not a number`},
		{"empty item", "1,,2", nil, `--rate-scales: item 1: "" is not a number`},
		{"zero", "0,1", nil, `--rate-scales: item 0: "0" is outside (0, 1e6]`},
		{"negative", "1,-2", nil, `--rate-scales: item 1: "-2" is outside (0, 1e6]`},
		{"infinite", "inf", nil, `--rate-scales: item 0: "inf" is outside (0, 1e6]`},
		{"not a number at all", "NaN", nil, `--rate-scales: item 0: "NaN" is outside (0, 1e6]`},
		{"too large", "2e6", nil, `--rate-scales: item 0: "2e6" is outside (0, 1e6]`},
		{"repeated", "1,2,1.0", nil, `--rate-scales: item 2: "1.0" repeats item 0`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseRateScales(tt.in)
			if tt.err != "" {
				if err == nil || err.Error() != tt.err {
					t.Fatalf("parseRateScales(%q) = %v, %v; want error %q", tt.in, got, err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Fatalf("(-want +got):\n%s", diff)
			}
		})
	}
}

// sweepDigests reads each scale's decision digests from a sweep.json, by
// scale and mode.
func sweepDigests(t *testing.T, dir string) map[string]string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, replay.FileSweepJSON))
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Points []struct {
			Dir  string `json:"dir"`
			Runs []struct {
				Summary replay.Summary `json:"summary"`
			} `json:"runs"`
		} `json:"points"`
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, p := range doc.Points {
		for _, r := range p.Runs {
			if r.Summary.Completed != r.Summary.Requests || r.Summary.Requests == 0 {
				t.Fatalf("%s %s: %d of %d requests completed", p.Dir, r.Summary.Mode, r.Summary.Completed, r.Summary.Requests)
			}
			out[p.Dir+" "+r.Summary.Mode] = r.Summary.Digest
		}
	}
	return out
}

// TestCompareSweep runs `router compare --rate-scales` on a tiny synthetic
// workload at two scales, twice, and each scale on its own with the
// command its report prints: the same decisions every time, every file
// written, the plots with one line per mode.
func TestCompareSweep(t *testing.T) {
	workload := []string{"--synthetic", "--requests", "30", "--users", "4", "--output-tokens", "16", "--workers", "2", "--modes", "kv,round-robin"}
	var sweeps []map[string]string
	for range 2 {
		dir := t.TempDir()
		stdout, stderr, code := runSimCmd(t, append([]string{"compare", "--rate", "4", "--rate-scales", "1,2.5", "--out", dir}, workload...)...)
		if code != 0 {
			t.Fatalf("compare exited %d:\n%s", code, stderr)
		}
		for _, want := range []string{"TTFT p90 rr/kv", "sweep report: " + filepath.Join(dir, replay.FileSweepMarkdown), "report: " + filepath.Join(dir, "x2.5", replay.FileMarkdown)} {
			if !strings.Contains(stdout, want) {
				t.Fatalf("no %q in stdout:\n%s", want, stdout)
			}
		}
		for _, f := range []string{replay.FileSweepMarkdown, replay.FileSweepText, replay.FileSweepJSON, replay.FileSweepTTFT, replay.FileSweepHitRate,
			"x1/" + replay.FileMarkdown, "x2.5/" + replay.FileJSON, "x2.5/" + replay.FileTTFTCDF} {
			if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
				t.Fatal(err)
			}
		}
		for _, f := range []string{replay.FileSweepTTFT, replay.FileSweepHitRate} {
			if n := polylines(t, filepath.Join(dir, f)); n != 2 {
				t.Errorf("%s has %d polylines, want one per mode (2)", f, n)
			}
		}
		// Each scale's report says how to make it alone.
		md, err := os.ReadFile(filepath.Join(dir, "x2.5", replay.FileMarkdown))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(md), "router compare --synthetic --requests 30 --rate 10 ") || strings.Contains(string(md), "--rate-scales") {
			t.Fatalf("the report of ×2.5 does not give its own command:\n%s", md)
		}
		sweeps = append(sweeps, sweepDigests(t, dir))
	}
	if diff := cmp.Diff(sweeps[0], sweeps[1]); diff != "" {
		t.Fatalf("two sweeps decided differently (-first +second):\n%s", diff)
	}
	if len(sweeps[0]) != 4 || sweeps[0]["x1 kv"] == sweeps[0]["x2.5 kv"] {
		t.Fatalf("digests %v: want 4, and kv deciding differently at two loads", sweeps[0])
	}
	// A synthetic workload at scale s is the one at s × --rate.
	for _, tt := range []struct{ dir, rate string }{{"x1", "4"}, {"x2.5", "10"}} {
		dir := t.TempDir()
		_, stderr, code := runSimCmd(t, append([]string{"compare", "--rate", tt.rate, "--out", dir}, workload...)...)
		if code != 0 {
			t.Fatalf("compare exited %d:\n%s", code, stderr)
		}
		for _, s := range summaries(t, dir) {
			if want := sweeps[0][tt.dir+" "+s.Mode]; s.Digest != want {
				t.Errorf("%s alone: %s decided %s, in the sweep %s", tt.dir, s.Mode, s.Digest, want)
			}
		}
	}
}

// polylines counts the polylines of an SVG file, which must be well-formed
// XML.
func polylines(t *testing.T, path string) int {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	d := xml.NewDecoder(f)
	n := 0
	for {
		tok, err := d.Token()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return n
			}
			t.Fatalf("%s is not well-formed XML: %v", path, err)
		}
		if el, ok := tok.(xml.StartElement); ok && el.Name.Local == "polyline" {
			n++
		}
	}
}

func TestSimCommandsRejectBadFlags(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"sim workers", []string{"sim", "--workers", "0"}, "--workers"},
		{"sim batch", []string{"sim", "--max-num-batched-tokens", "8", "--max-num-seqs", "16"}, "--max-num-batched-tokens"},
		{"replay speedup", []string{"replay", "--synthetic", "--speedup", "0"}, "--speedup"},
		{"compare mode", []string{"compare", "--modes", "kv,fastest"}, "--modes"},
		{"compare clock", []string{"compare", "--clock", "sundial"}, "--clock"},
		{"compare prefill load scale", []string{"compare", "--router-prefill-load-scale", "0"}, "--router-prefill-load-scale"},
		{"compare saturated scale", []string{"compare", "--router-prefill-load-scale-saturated", "0"}, "--router-prefill-load-scale-saturated: 0 is outside (0, 1000]"},
		{"compare saturation threshold", []string{"compare", "--router-saturation-prefill-tokens", "-1"}, "--router-saturation-prefill-tokens: -1 is outside 0..1000000"},
		{"compare saturation blocks", []string{"compare", "--router-saturation-decode-blocks", "1000001"}, "--router-saturation-decode-blocks: 1000001 is outside 0..1000000"},
		{"compare cache affinity", []string{"compare", "--router-cache-affinity", "-2"}, "--router-cache-affinity: -2 is outside 0..1000"},
		{"compare rate", []string{"compare", "--rate-scale", "0"}, "--rate-scale"},
		{"compare synthetic", []string{"compare", "--synthetic", "--users", "0"}, "--users"},
		{"compare rate scales", []string{"compare", "--rate-scales", "1,x"}, `--rate-scales: item 1: "x" is not a number`},
		{"compare both rate flags", []string{"compare", "--rate-scale", "2", "--rate-scales", "1,2"},
			"--rate-scales and --rate-scale are mutually exclusive"},
		{"generate without a prompt", []string{"sim", "generate"}, "--token-ids: missing"},
		{"generate bad token", []string{"sim", "generate", "--token-ids", "1,x"}, `--token-ids: item 1: "x" is not a token id`},
		{"generate max tokens", []string{"sim", "generate", "--token-ids", "1", "--max-tokens", "0"}, "--max-tokens: 0 is outside"},
		{"sim stray argument", []string{"sim", "generat"}, `unexpected argument "generat"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, stderr, code := runSimCmd(t, tt.args...)
			if code != 2 || !strings.Contains(stderr, tt.want) {
				t.Fatalf("exit %d, stderr %q: want 2 and a message naming %s", code, stderr, tt.want)
			}
		})
	}
}

// TestSimGenerateWithoutRouter: with NATS up and no router, `router sim
// generate` fails at once, saying what to check.
func TestSimGenerateWithoutRouter(t *testing.T) {
	ns := testutil.NATS(t)
	_, stderr, code := runSimCmd(t, "sim", "generate", "--nats-url", ns.URL(), "--token-ids", "1,2,3")
	if code != 1 || !strings.Contains(stderr, "route: no router answers on namespace.dynamo.component.router.route: is `router serve` running") {
		t.Fatalf("exit %d, stderr %q: want 1 and a hint", code, stderr)
	}
}

// TestSimReadyLine: the ids as route replies print them, at most four.
func TestSimReadyLine(t *testing.T) {
	cfg := sim.DefaultFleetConfig()
	var ws []sim.WorkerInfo
	for i := range 6 {
		ws = append(ws, sim.WorkerInfo{Index: i, ID: uint64(0xa0 + i)})
	}
	tests := []struct {
		name string
		n    int
		want string
	}{
		{"one", 1, "1 simulated worker ready (block size 64) in namespace dynamo, component backend: ids 160"},
		{"six", 6, "6 simulated workers ready (block size 64) in namespace dynamo, component backend: ids 160, 161, 162, 163, and 2 more"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := readyLine(cfg, ws[:tt.n]); got != tt.want {
				t.Fatalf("readyLine = %q, want %q", got, tt.want)
			}
		})
	}
}
