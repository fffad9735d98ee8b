package service

import (
	"encoding/json"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/kvrouter/router/client"
	"github.com/kvrouter/router/indexer"
	"github.com/kvrouter/router/scheduler"
)

// overlap_scores gives a worker with blocks below the device their split
// by tier, zero tiers left out, overlap_blocks staying the total; a worker
// with every block on the device has no "tiers", as Dynamo's reply has
// none.
func TestOverlapScoresTiers(t *testing.T) {
	w := func(id uint64) indexer.Worker { return indexer.Worker{ID: indexer.WorkerID(id)} }
	tests := []struct {
		name    string
		overlap scheduler.Overlap
		want    string
	}{
		{name: "device only", overlap: scheduler.Overlap{Worker: w(1), OverlapBlocks: 8},
			want: `{"worker_id":1,"dp_rank":0,"overlap_blocks":8,"worker_type":"aggregated"}`},
		{name: "every tier", overlap: scheduler.Overlap{Worker: w(2), OverlapBlocks: 10, Host: 3, Disk: 2, External: 1},
			want: `{"worker_id":2,"dp_rank":0,"overlap_blocks":10,"tiers":{"device":4,"host":3,"disk":2,"external":1},"worker_type":"aggregated"}`},
		{name: "host only, no device", overlap: scheduler.Overlap{Worker: w(3), OverlapBlocks: 10, Host: 10},
			want: `{"worker_id":3,"dp_rank":0,"overlap_blocks":10,"tiers":{"host":10},"worker_type":"aggregated"}`},
		{name: "device and external", overlap: scheduler.Overlap{Worker: w(4), OverlapBlocks: 5, External: 2},
			want: `{"worker_id":4,"dp_rank":0,"overlap_blocks":5,"tiers":{"device":3,"external":2},"worker_type":"aggregated"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := string(appendOverlaps(nil, 16, 10, []scheduler.Overlap{tt.overlap}, false))
			want := `{"block_size":16,"num_blocks":10,"workers":[` + tt.want + `]}`
			if got != want {
				t.Errorf("reply\n got %s\nwant %s", got, want)
			}
			// The client reads the split back, and the device's blocks.
			var o client.Overlaps
			if err := json.Unmarshal([]byte(got), &o); err != nil {
				t.Fatal(err)
			}
			wo := o.Workers[0]
			if wo.OverlapBlocks != tt.overlap.OverlapBlocks || wo.DeviceBlocks() != tt.overlap.DeviceBlocks() {
				t.Errorf("client reads %+v: %d blocks, %d on the device; want %d, %d",
					wo, wo.OverlapBlocks, wo.DeviceBlocks(), tt.overlap.OverlapBlocks, tt.overlap.DeviceBlocks())
			}
			if wo.Tiers != nil {
				if diff := cmp.Diff(client.Tiers{Device: tt.overlap.DeviceBlocks(), Host: tt.overlap.Host, Disk: tt.overlap.Disk, External: tt.overlap.External}, *wo.Tiers); diff != "" {
					t.Errorf("tiers (-want +got):\n%s", diff)
				}
			}
		})
	}
}
