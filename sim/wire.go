package sim

import (
	"encoding/json"
	"strconv"
)

// This file writes what a worker publishes, in Dynamo's shapes
// (docs/compat.md §3, §6).

// EventsSubject returns the subject of a component's KV events.
func EventsSubject(namespace, component string) string {
	return "namespace." + namespace + ".component." + component + ".kv-events"
}

// LoadSubject returns the subject of the workers' load messages.
func LoadSubject(namespace string) string { return "namespace." + namespace + ".kv_metrics" }

// AppendRouterEvent appends the RouterEvent JSON of one cache event of a
// worker to dst:
//
//	{"worker_id":7,"storage_tier":"device","event":{"event_id":12,"dp_rank":0,
//	 "data":{"stored":{"parent_hash":null,"blocks":[{"block_hash":100,"tokens_hash":5,"mm_extra_info":null}]}}}}
//
// Hashes are written as unsigned decimal numbers.
//
// Why not events.AppendJSON: the simulator stands in for an engine, and its
// tests check that the router decodes what it publishes; writing the wire
// form independently keeps that check from being circular.
func AppendRouterEvent(dst []byte, workerID, eventID uint64, ev Event) []byte {
	dst = append(dst, `{"worker_id":`...)
	dst = strconv.AppendUint(dst, workerID, 10)
	dst = append(dst, `,"storage_tier":"device","event":{"event_id":`...)
	dst = strconv.AppendUint(dst, eventID, 10)
	dst = append(dst, `,"dp_rank":0,"data":`...)
	switch ev.Kind {
	case EventStored:
		dst = append(dst, `{"stored":{"parent_hash":`...)
		if ev.HasParent {
			dst = strconv.AppendUint(dst, ev.Parent, 10)
		} else {
			dst = append(dst, "null"...)
		}
		dst = append(dst, `,"blocks":[`...)
		for i, b := range ev.Blocks {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = append(dst, `{"block_hash":`...)
			dst = strconv.AppendUint(dst, b.Hash, 10)
			dst = append(dst, `,"tokens_hash":`...)
			dst = strconv.AppendUint(dst, b.TokensHash, 10)
			dst = append(dst, `,"mm_extra_info":null}`...)
		}
		dst = append(dst, "]}}"...)
	case EventRemoved:
		dst = append(dst, `{"removed":{"block_hashes":[`...)
		for i, h := range ev.Removed {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = strconv.AppendUint(dst, h, 10)
		}
		dst = append(dst, "]}}"...)
	default:
		dst = append(dst, `"cleared"`...)
	}
	return append(dst, "}}"...)
}

// loadMessage is Dynamo's classic worker load message (ForwardPassMetrics).
type loadMessage struct {
	WorkerID uint64 `json:"worker_id"`
	Data     struct {
		WorkerStats struct {
			DataParallelRank   uint32 `json:"data_parallel_rank"`
			RequestActiveSlots int    `json:"request_active_slots"`
			RequestTotalSlots  int    `json:"request_total_slots"`
			NumRequestsWaiting int    `json:"num_requests_waiting"`
		} `json:"worker_stats"`
		KVStats struct {
			KVActiveBlocks        int     `json:"kv_active_blocks"`
			KVTotalBlocks         int     `json:"kv_total_blocks"`
			GPUCacheUsagePerc     float64 `json:"gpu_cache_usage_perc"`
			GPUPrefixCacheHitRate float64 `json:"gpu_prefix_cache_hit_rate"`
		} `json:"kv_stats"`
	} `json:"data"`
}

// marshalLoad returns the load message of a worker.
func marshalLoad(workerID uint64, st EngineStats, maxNumSeqs int) []byte {
	var m loadMessage
	m.WorkerID = workerID
	m.Data.WorkerStats.RequestActiveSlots = st.Running
	m.Data.WorkerStats.RequestTotalSlots = maxNumSeqs
	m.Data.WorkerStats.NumRequestsWaiting = st.Waiting
	m.Data.KVStats.KVActiveBlocks = st.Cache.Active()
	m.Data.KVStats.KVTotalBlocks = st.Cache.Capacity
	if st.Cache.Capacity > 0 {
		m.Data.KVStats.GPUCacheUsagePerc = float64(st.Cache.Active()) / float64(st.Cache.Capacity)
	}
	if st.PromptBlocks > 0 {
		m.Data.KVStats.GPUPrefixCacheHitRate = float64(st.CachedBlocks) / float64(st.PromptBlocks)
	}
	b, _ := json.Marshal(m) // plain structs of numbers: cannot fail
	return b
}

// cardRecord is the value of a worker's v1/mdc key.
type cardRecord struct {
	Type       string   `json:"type"`
	Namespace  string   `json:"namespace"`
	Component  string   `json:"component"`
	Endpoint   string   `json:"endpoint"`
	InstanceID uint64   `json:"instance_id"`
	CardJSON   cardJSON `json:"card_json"`
}

type cardJSON struct {
	DisplayName      string        `json:"display_name"`
	KVCacheBlockSize int           `json:"kv_cache_block_size"`
	ContextLength    int           `json:"context_length"`
	RuntimeConfig    runtimeConfig `json:"runtime_config"`
}

type runtimeConfig struct {
	TotalKVBlocks         int  `json:"total_kv_blocks"`
	MaxNumSeqs            int  `json:"max_num_seqs"`
	MaxNumBatchedTokens   int  `json:"max_num_batched_tokens"`
	DataParallelStartRank int  `json:"data_parallel_start_rank"`
	DataParallelSize      int  `json:"data_parallel_size"`
	EnableLocalIndexer    bool `json:"enable_local_indexer"`
}
