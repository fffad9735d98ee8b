package replay

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/kvrouter/router/metrics"
)

// Barrier waits until the router has taken in a number of KV events. A
// lockstep replay calls it before every routing decision, so that the
// router decides on exactly the cache contents the fleet's events describe,
// however the router's goroutines happen to be scheduled.
//
// Wait is called from one goroutine at a time.
type Barrier interface {
	Wait(ctx context.Context, events uint64) error
}

// ErrBarrierTimeout means the router did not take in the events in time:
// it lost some, or is not subscribed to the fleet's subject.
var ErrBarrierTimeout = errors.New("router did not take in the published kv events")

// MetricsBarrier is a Barrier that reads the router's /metrics: the events
// it has taken in are those applied (dynamo_component_kv_cache_events_applied,
// any status), rejected by its decoders, or dropped
// (dynamo_component_kv_event_decode_errors_total,
// dynamo_component_kv_events_dropped_total).
type MetricsBarrier struct {
	// URL is the router's metrics URL, e.g. http://127.0.0.1:8081/metrics.
	URL string
	// Client does the requests; nil means a client with a 5 s timeout.
	Client *http.Client
	// Timeout bounds one Wait; 0 means 30 s.
	Timeout time.Duration

	taken uint64 // the last count seen: a Wait for no more returns at once
}

var _ Barrier = (*MetricsBarrier)(nil)

// Wait polls the router's metrics until it has taken in events events.
func (b *MetricsBarrier) Wait(ctx context.Context, events uint64) error {
	if events <= b.taken {
		return nil
	}
	timeout := b.Timeout
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	delay := 50 * time.Microsecond
	for {
		sums, err := Scrape(ctx, b.client(), b.URL)
		if err != nil {
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return fmt.Errorf("%w: %d of %d after %v (%s)", ErrBarrierTimeout, b.taken, events, timeout, b.URL)
			}
			return err
		}
		b.taken = uint64(sums[metrics.NameKVCacheEventsApplied] + sums[metrics.NameKVEventDecodeErrorsTotal] +
			sums[metrics.NameKVEventsDroppedTotal])
		if b.taken >= events {
			return nil
		}
		select {
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return fmt.Errorf("%w: %d of %d after %v (%s)", ErrBarrierTimeout, b.taken, events, timeout, b.URL)
			}
			return ctx.Err()
		case <-time.After(delay):
		}
		delay = min(2*delay, 5*time.Millisecond)
	}
}

func (b *MetricsBarrier) client() *http.Client {
	if b.Client != nil {
		return b.Client
	}
	return &http.Client{Timeout: 5 * time.Second}
}

// Scrape reads a Prometheus text exposition at url and returns, for every
// sample name, the sum of its values over all label sets (histograms give
// name_sum, name_count and name_bucket sums).
func Scrape(ctx context.Context, c *http.Client, url string) (map[string]float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, fmt.Errorf("scrape %s: %w", url, err)
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, fmt.Errorf("scrape %s: %w", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, resp.Body)
		return nil, fmt.Errorf("scrape %s: %s", url, resp.Status)
	}
	return parseExposition(resp.Body)
}

// parseExposition sums the samples of a text exposition by name.
func parseExposition(r io.Reader) (map[string]float64, error) {
	sums := make(map[string]float64)
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		end := strings.IndexAny(line, "{ ")
		if end <= 0 {
			continue
		}
		name := line[:end]
		rest := line[end:]
		if rest[0] == '{' {
			// Label values may hold spaces: skip to the closing brace.
			close := strings.LastIndexByte(rest, '}')
			if close < 0 {
				continue
			}
			rest = rest[close+1:]
		}
		fields := strings.Fields(rest)
		if len(fields) == 0 {
			continue
		}
		v, err := strconv.ParseFloat(fields[0], 64)
		if err != nil {
			continue
		}
		sums[name] += v
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read exposition: %w", err)
	}
	return sums, nil
}

// CountBarrier is a Barrier over a count the caller can read in-process,
// such as an in-process router's events.Subscriber statistics (applied +
// decode errors + dropped). It polls with a growing pause, for at most 30 s.
type CountBarrier func() uint64

var _ Barrier = CountBarrier(nil)

// Wait polls the count until it reaches events.
func (f CountBarrier) Wait(ctx context.Context, events uint64) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	delay := 20 * time.Microsecond
	for {
		n := f()
		if n >= events {
			return nil
		}
		select {
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return fmt.Errorf("%w: %d of %d after 30s", ErrBarrierTimeout, n, events)
			}
			return ctx.Err()
		case <-time.After(delay):
		}
		delay = min(2*delay, 2*time.Millisecond)
	}
}
