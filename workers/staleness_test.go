package workers

import (
	"strings"
	"testing"
	"testing/synctest"
	"time"

	promtest "github.com/prometheus/client_golang/prometheus/testutil"
)

// An etcd outage leaves the registry ready, serving the last known workers,
// until it is older than MaxStaleness; 0 means it never stops vouching for
// them. The gauges follow. Time is synctest's: each Sleep advances it.
func TestRegistryStaleness(t *testing.T) {
	for _, tc := range []struct {
		name      string
		max       time.Duration
		wantStale bool // once the outage is one second past 5m
	}{
		{"limit 5m", 5 * time.Minute, true},
		{"no limit", 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				cfg := DefaultConfig()
				cfg.MaxStaleness = tc.max
				e := newEnv(t, cfg)
				check := func(wantReady, wantStale bool, wantStaleness time.Duration, wantReachable float64) {
					t.Helper()
					st := e.reg.Status()
					if st.Ready != wantReady || st.Stale != wantStale || st.Staleness != wantStaleness || e.reg.Ready() != wantReady {
						t.Fatalf("Status() = %+v; want ready %v, stale %v, staleness %v", st, wantReady, wantStale, wantStaleness)
					}
					if got := promtest.ToFloat64(e.reg.m.EtcdReachable); got != wantReachable {
						t.Errorf("etcd reachable gauge = %v, want %v", got, wantReachable)
					}
					if got := promtest.ToFloat64(e.reg.m.WorkersStaleness); got != wantStaleness.Seconds() {
						t.Errorf("workers staleness gauge = %v, want %v", got, wantStaleness.Seconds())
					}
				}
				one := puts(instanceKey("dynamo", "backend", 1), instanceValue("dynamo", "backend", 1))
				e.reg.replace(one)
				check(true, false, 0, 1)
				// A live watch keeps the workers current however long it lasts.
				time.Sleep(time.Hour)
				check(true, false, 0, 1)

				e.reg.etcdDown(errUnreachable)
				time.Sleep(5 * time.Minute)
				check(true, false, 5*time.Minute, 0)
				// Another failed listing during the same outage does not
				// restart the clock.
				e.reg.etcdDown(errUnreachable)
				time.Sleep(time.Second)
				check(!tc.wantStale, tc.wantStale, 5*time.Minute+time.Second, 0)
				st := e.reg.Status()
				if tc.wantStale && !strings.Contains(st.Reason, "--router-workers-max-staleness 5m0s") {
					t.Errorf("Reason = %q; want it to name the limit", st.Reason)
				}
				if got := ids(e.reg.Snapshot()); len(got) != 1 || got[0] != 1 {
					t.Errorf("workers during the outage = %v, want [1]", got)
				}

				// etcd answers again: current, ready.
				e.reg.replace(one)
				check(true, false, 0, 1)
			})
		})
	}
}

// Before the first listing an outage is no staleness: there are no
// workers to vouch for, and the registry is not ready for that reason.
func TestRegistryStalenessBeforeListing(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := DefaultConfig()
		cfg.MaxStaleness = time.Minute
		e := newEnv(t, cfg)
		e.reg.etcdDown(errUnreachable)
		time.Sleep(time.Hour)
		st := e.reg.Status()
		if st.Ready || st.Stale || !strings.Contains(st.Reason, "not listed from etcd yet: etcd unreachable") {
			t.Errorf("Status() = %+v; want not ready, not stale, not listed", st)
		}
	})
}
