package stack

import (
	"strings"
	"testing"
	"time"

	"github.com/kvrouter/router/status"
	"github.com/kvrouter/router/workers"
)

// An etcd outage is degraded, never failed: past the staleness limit the
// workers check fails instead.
func TestEtcdHealth(t *testing.T) {
	for _, tc := range []struct {
		name       string
		st         workers.Status
		want       status.State
		wantDetail []string // substrings of the detail
	}{
		{"reachable", workers.Status{EtcdReachable: true, Listed: true}, status.OK, nil},
		{"outage", workers.Status{Listed: true, Workers: 3, Staleness: 12*time.Second + 300*time.Millisecond, MaxStaleness: 5 * time.Minute, EtcdError: "etcd unreachable: probe: context deadline exceeded"},
			status.Degraded, []string{"unreachable for 12s", "3 last known workers", "--router-workers-max-staleness 5m0s", "context deadline exceeded"}},
		{"outage, no limit", workers.Status{Listed: true, Workers: 1, Staleness: time.Hour, EtcdError: "x"},
			status.Degraded, []string{"unreachable for 1h0m0s", "never notready for etcd alone"}},
		{"stale", workers.Status{Listed: true, Workers: 1, Staleness: 6 * time.Minute, Stale: true, MaxStaleness: 5 * time.Minute, EtcdError: "x"},
			status.Degraded, []string{"unreachable for 6m0s"}},
		{"never listed", workers.Status{EtcdError: "connection refused"}, status.Degraded, []string{"no workers listed yet", "connection refused"}},
		{"etcd off", workers.Status{EtcdOff: true}, status.OK, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, detail := etcdHealth(tc.st)
			if got != tc.want {
				t.Errorf("state = %v, want %v", got, tc.want)
			}
			for _, w := range tc.wantDetail {
				if !strings.Contains(detail, w) {
					t.Errorf("detail %q lacks %q", detail, w)
				}
			}
			if tc.want == status.OK && detail != "" {
				t.Errorf("detail %q for an OK check", detail)
			}
		})
	}
}

// The workers check fails until the registry is ready; a refused reading
// of the workers file degrades it.
func TestWorkersHealth(t *testing.T) {
	for _, tc := range []struct {
		name       string
		st         workers.Status
		want       status.State
		wantDetail string
	}{
		{"ready", workers.Status{Ready: true}, status.OK, ""},
		{"not ready", workers.Status{Reason: "workers file not read yet"}, status.Failed, "workers file not read yet"},
		{"not ready, file refused", workers.Status{Reason: "workers file not read yet", FileError: "workers file: x"}, status.Failed, "workers file not read yet"},
		{"file refused", workers.Status{Ready: true, FileError: "workers file: x"}, status.Degraded, "serving the workers file's last good set: workers file: x"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got, detail := workersHealth(tc.st); got != tc.want || detail != tc.wantDetail {
				t.Errorf("workersHealth = %v %q, want %v %q", got, detail, tc.want, tc.wantDetail)
			}
		})
	}
}
