package service

import (
	"strconv"
	"unicode/utf8"

	"github.com/kvrouter/router/indexer"
	"github.com/kvrouter/router/scheduler"
)

// This file writes the router's replies (docs/api.md §3) by appending
// to a buffer: a route reply costs no reflection and, with a pooled
// buffer, no allocation.

// appendDecision appends a route reply of replica routerID (its router_id,
// left out when 0). Its worker_type is the decision's serving mode
// (aggregated, disaggregated, prefill or decode), not the type of the
// worker named, which logs and metrics give (docs/api.md §3). urls, when
// not nil, gives the workers' URLs: worker_url is the top-level worker's,
// and a disaggregated reply also has prefill_worker_url and
// decode_worker_url; each is left out when unknown.
func appendDecision(b []byte, d scheduler.Decision, routerID uint64, urls WorkerURLs) []byte {
	b = append(b, '{')
	if d.RequestID != "" {
		b = append(b, `"request_id":`...)
		b = appendString(b, d.RequestID)
		b = append(b, ',')
	}
	b = appendWorker(b, d.Worker)
	b = append(b, `,"overlap_blocks":`...)
	b = strconv.AppendInt(b, int64(d.OverlapBlocks), 10)
	b = append(b, `,"num_blocks":`...)
	b = strconv.AppendInt(b, int64(d.NumBlocks), 10)
	b = append(b, `,"worker_type":`...)
	b = appendString(b, d.Type.String())
	disaggregated := d.Type == scheduler.WorkerTypeDisaggregated
	if disaggregated {
		b = append(b, `,"prefill":{`...)
		b = appendWorker(b, d.Prefill.Worker)
		b = append(b, `,"overlap_blocks":`...)
		b = strconv.AppendInt(b, int64(d.Prefill.OverlapBlocks), 10)
		b = append(b, `},"decode":{`...)
		b = appendWorker(b, d.Decode.Worker)
		b = append(b, '}')
	}
	if urls != nil {
		b = appendURL(b, `,"worker_url":`, urls.WorkerURL(d.Worker.ID))
		if disaggregated {
			b = appendURL(b, `,"prefill_worker_url":`, urls.WorkerURL(d.Prefill.Worker.ID))
			b = appendURL(b, `,"decode_worker_url":`, urls.WorkerURL(d.Decode.Worker.ID))
		}
	}
	if routerID != 0 {
		b = append(b, `,"router_id":`...)
		b = strconv.AppendUint(b, routerID, 10)
	}
	return append(b, '}')
}

// appendURL appends key (`,"name":`) and url, unless url is empty.
func appendURL(b []byte, key, url string) []byte {
	if url == "" {
		return b
	}
	b = append(b, key...)
	return appendString(b, url)
}

// appendWorker appends "worker_id":..,"dp_rank":.. .
func appendWorker(b []byte, w indexer.Worker) []byte {
	b = append(b, `"worker_id":`...)
	b = strconv.AppendUint(b, uint64(w.ID), 10)
	b = append(b, `,"dp_rank":`...)
	return strconv.AppendUint(b, uint64(w.DPRank), 10)
}

// appendSuccess appends a mark reply.
func appendSuccess(b []byte, ok bool) []byte {
	if ok {
		return append(b, `{"success":true}`...)
	}
	return append(b, `{"success":false}`...)
}

// appendOverlaps appends an overlap_scores reply. Decode workers are
// "aggregated" when no prefill worker is registered, "decode" otherwise. A
// worker with blocks below the device has "tiers", its overlap_blocks by
// the tier of their fastest copy, zero tiers left out; one with every block
// on the device has none, so that a device-only fleet's reply is Dynamo's
// to the byte (docs/api.md §3).
func appendOverlaps(b []byte, blockSize, numBlocks int, scores []scheduler.Overlap, disaggregated bool) []byte {
	b = append(b, `{"block_size":`...)
	b = strconv.AppendInt(b, int64(blockSize), 10)
	b = append(b, `,"num_blocks":`...)
	b = strconv.AppendInt(b, int64(numBlocks), 10)
	b = append(b, `,"workers":[`...)
	for i, o := range scores {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, '{')
		b = appendWorker(b, o.Worker)
		b = append(b, `,"overlap_blocks":`...)
		b = strconv.AppendInt(b, int64(o.OverlapBlocks), 10)
		if o.Host|o.Disk|o.External != 0 {
			b = appendTiers(b, o)
		}
		b = append(b, `,"worker_type":`...)
		b = appendString(b, workerType(o.Kind, disaggregated))
		b = append(b, '}')
	}
	return append(b, "]}"...)
}

// appendTiers appends an overlap's "tiers" object, each tier with
// blocks named as indexer.Tier names it.
func appendTiers(b []byte, o scheduler.Overlap) []byte {
	b = append(b, `,"tiers":{`...)
	first := true
	for _, t := range []struct {
		tier indexer.Tier
		n    int
	}{{indexer.TierDevice, o.DeviceBlocks()}, {indexer.TierHost, o.Host}, {indexer.TierDisk, o.Disk}, {indexer.TierExternal, o.External}} {
		if t.n == 0 {
			continue
		}
		if !first {
			b = append(b, ',')
		}
		first = false
		b = append(b, '"')
		b = append(b, t.tier.String()...)
		b = append(b, `":`...)
		b = strconv.AppendInt(b, int64(t.n), 10)
	}
	return append(b, '}')
}

// workerType names the role a worker plays in decisions, in the words of
// a route reply's worker_type: aggregated while no prefill worker is
// registered, else prefill or decode (docs/api.md §3).
func workerType(k scheduler.Kind, disaggregated bool) string {
	switch {
	case k == scheduler.KindPrefill:
		return "prefill"
	case disaggregated:
		return "decode"
	}
	return "aggregated"
}

// appendLoads appends a potential_loads reply.
func appendLoads(b []byte, loads []scheduler.Load, p scheduler.Pending) []byte {
	b = append(b, `{"loads":[`...)
	for i, l := range loads {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, '{')
		b = appendWorker(b, l.Worker)
		b = append(b, `,"potential_prefill_tokens":`...)
		b = strconv.AppendInt(b, int64(l.PotentialPrefillTokens), 10)
		b = append(b, `,"potential_decode_blocks":`...)
		b = strconv.AppendInt(b, int64(l.PotentialDecodeBlocks), 10)
		b = append(b, `,"active_requests":`...)
		b = strconv.AppendInt(b, int64(l.ActiveRequests), 10)
		b = append(b, '}')
	}
	b = append(b, `],"pending_count":`...)
	b = strconv.AppendInt(b, int64(p.Requests), 10)
	b = append(b, `,"pending_isl_tokens":`...)
	b = strconv.AppendInt(b, int64(p.ISLTokens), 10)
	return append(b, '}')
}

// AppendError appends the error reply of every endpoint,
// {"error":{"code","message"}}, for another transport's refusals (the
// HTTP API's).
func AppendError(b []byte, code, message string) []byte {
	b = append(b, `{"error":{"code":`...)
	b = appendString(b, code)
	b = append(b, `,"message":`...)
	b = appendString(b, message)
	return append(b, "}}"...)
}

// appendString appends s as a JSON string. Invalid UTF-8 becomes U+FFFD,
// as encoding/json does.
func appendString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '"' || c == '\\':
				b = append(b, '\\', c)
			case c < 0x20:
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			default:
				b = append(b, c)
			}
			i++
			continue
		}
		r, n := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && n == 1 {
			b = append(b, `\ufffd`...)
		} else {
			b = append(b, s[i:i+n]...)
		}
		i += n
	}
	return append(b, '"')
}
