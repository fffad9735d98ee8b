package metrics

import (
	"bufio"
	"bytes"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// scrape GETs /metrics from h and returns the sample lines by series.
func scrape(t *testing.T, h http.Handler) map[string]float64 {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	if rec.Code != http.StatusOK {
		t.Fatalf("status %d: %s", rec.Code, rec.Body)
	}
	if ct := rec.Header().Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Errorf("Content-Type %q, want the text format", ct)
	}
	samples := map[string]float64{}
	sc := bufio.NewScanner(rec.Body)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("sample %q: %v", line, err)
		}
		samples[line[:i]] = v
	}
	return samples
}

// The uptime gauge is computed at every scrape, from the injected clock.
func TestHandlerRefreshesUptime(t *testing.T) {
	_, reg, clock := newTestRouter(t)
	h := Handler(reg, nil)
	for _, step := range []struct {
		advance time.Duration
		want    float64
	}{
		{0, 0},
		{42500 * time.Millisecond, 42.5},
		{time.Hour, 3642.5},
	} {
		clock.Advance(step.advance)
		if got := scrape(t, h)[NameUptimeSeconds]; got != step.want {
			t.Errorf("after %v more: uptime %v, want %v", step.advance, got, step.want)
		}
	}
}

// brokenCollector yields one invalid metric, as a failing collector would.
type brokenCollector struct{ desc *prometheus.Desc }

func (c brokenCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }
func (c brokenCollector) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.NewInvalidMetric(c.desc, errors.New("backend unreachable"))
}

// A failing collector is logged and left out; the rest is still served.
func TestHandlerContinuesOnError(t *testing.T) {
	reg := prometheus.NewRegistry()
	g := prometheus.NewGauge(prometheus.GaugeOpts{Name: "dynamo_component_ok", Help: "Fine."})
	g.Set(3)
	reg.MustRegister(g, brokenCollector{prometheus.NewDesc("dynamo_component_broken", "Broken.", nil, nil)})
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))

	if got := scrape(t, Handler(reg, log))["dynamo_component_ok"]; got != 3 {
		t.Errorf("dynamo_component_ok = %v, want 3", got)
	}
	if !strings.Contains(logs.String(), "backend unreachable") || !strings.Contains(logs.String(), "level=WARN") {
		t.Errorf("collector error not logged as a warning; log:\n%s", logs.String())
	}
}
