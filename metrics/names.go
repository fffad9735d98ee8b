package metrics

// This file is the one place where metric names, label names and the bounded
// label values live. The names of Dynamo's families are Dynamo's, character
// for character (docs/compat.md §7); the families marked "ours" are this
// router's additions and use the same prefixes so that one dashboard selector
// (`{__name__=~"dynamo_.*"}`) finds everything.

// Prefixes of metric names.
const (
	// PrefixComponent is prepended to every metric created through the
	// hierarchy (runtime, namespace, component, endpoint), as Dynamo's
	// MetricsRegistry does.
	PrefixComponent = "dynamo_component"
	// PrefixFrontend is the prefix of Dynamo's frontend families (per-worker
	// load, router queue), which Dynamo registers outside the hierarchy.
	PrefixFrontend = "dynamo_frontend"
	// PrefixRouter is the prefix of Dynamo's routing-overhead histograms,
	// registered outside the hierarchy with a router_id constant label.
	PrefixRouter = "dynamo_router"
)

// Label names added automatically by the hierarchy.
const (
	// LabelNamespace carries the namespace of a metric created at namespace
	// level or below.
	LabelNamespace = "dynamo_namespace"
	// LabelComponent carries the component of a metric created at component
	// level or below.
	LabelComponent = "dynamo_component"
	// LabelEndpoint carries the endpoint of a metric created at endpoint level.
	LabelEndpoint = "dynamo_endpoint"
)

// Other label names.
const (
	// LabelRouterID is the router's instance id (decimal), a constant label.
	LabelRouterID = "router_id"
	// LabelWorkerID is a worker's instance id (decimal u64).
	LabelWorkerID = "worker_id"
	// LabelRouterWorkerID is the worker id on
	// dynamo_component_router_worker_registered. Dynamo reserves worker_id on
	// component metrics for the producing process, so the router names the
	// worker it discovered router_worker_id there.
	LabelRouterWorkerID = "router_worker_id"
	// LabelDPRank is a data-parallel rank inside a worker (decimal u32).
	LabelDPRank = "dp_rank"
	// LabelWorkerType is prefill or decode (WorkerTypePrefill, WorkerTypeDecode).
	LabelWorkerType = "worker_type"
	// LabelModel is the served model's name as its model card gives it.
	LabelModel = "model"
	// LabelEventType is the kind of a KV event: stored, removed or cleared.
	LabelEventType = "event_type"
	// LabelStatus is the outcome of applying a KV event.
	LabelStatus = "status"
	// LabelErrorType classifies a failed request of an endpoint.
	LabelErrorType = "error_type"
	// LabelReason says why something was rejected, dropped or evicted.
	LabelReason = "reason"
	// LabelKind says which kind of discovery value was malformed.
	LabelKind = "kind"
	// LabelMark says which mark a timing is of: mark_prefill or mark_free
	// (MarkPrefill, MarkFree).
	LabelMark = "mark"
	// LabelHTTPEndpoint is the endpoint of an HTTP request (an Endpoint*
	// name, or HTTPEndpointUnknown). Not dynamo_endpoint: that label
	// belongs to the hierarchy's endpoint scope.
	LabelHTTPEndpoint = "endpoint"
	// LabelCode is the HTTP status code of a reply, in decimal.
	LabelCode = "code"
	// LabelMarkEndpoint is the endpoint of a mark, mark_prefill or
	// mark_free, on our mark families. Not dynamo_endpoint, for the reason
	// LabelHTTPEndpoint gives; the same name.
	LabelMarkEndpoint = "endpoint"
	// LabelResult is how a warm start ended (WarmStartLoaded, ...), or a
	// ZMQ sequence gap (GapReplayed, GapCleared).
	LabelResult = "result"
	// LabelState is the state of a ZMQ publisher (ZMQConnected, ...).
	LabelState = "state"
	// LabelEngine is the wire format of a ZMQ publisher: vllm, sglang or
	// dynamo (Dynamo's event plane).
	LabelEngine = "engine"
)

// Routing overhead histograms (Dynamo; unscoped; constant label router_id;
// milliseconds, the one place where Dynamo does not use base units).
const (
	// NameOverheadBlockHashing is the time to hash the request's blocks.
	NameOverheadBlockHashing = "dynamo_router_overhead_block_hashing_ms"
	// NameOverheadSeqHashing is the time to chain the sequence hashes, after
	// block hashing ended.
	NameOverheadSeqHashing = "dynamo_router_overhead_seq_hashing_ms"
	// NameOverheadFindMatches is the time of the index lookup.
	NameOverheadFindMatches = "dynamo_router_overhead_indexer_find_matches_ms"
	// NameOverheadScheduling is the time from the end of the lookup to the
	// decision.
	NameOverheadScheduling = "dynamo_router_overhead_scheduling_ms"
	// NameOverheadTotal is the whole routing decision.
	NameOverheadTotal = "dynamo_router_overhead_total_ms"
)

// Timing of the router's other paths (ours; unscoped like the overhead
// histograms; constant label router_id; milliseconds, like them).
const (
	// NameEventApply is the time to apply one batch of KV events and
	// lifecycle commands to the index, lock included.
	NameEventApply = "dynamo_router_event_apply_seconds"
	// NameMark is the time to handle one mark_prefill or mark_free in the
	// scheduler (label mark).
	NameMark = "dynamo_router_mark_seconds"
)

// Booking expiry (ours; unscoped like the overhead histograms; constant
// label router_id; label reason).
const (
	// NameBookingsExpiredTotal counts bookings the router freed itself
	// because their caller never marked them prefilled or never freed them.
	NameBookingsExpiredTotal = "dynamo_router_bookings_expired_total"
)

// Marks of unknown requests (ours; unscoped like the overhead histograms;
// constant label router_id; label endpoint).
const (
	// NameMarksUnknownTotal counts mark_prefill and mark_free requests
	// answered {"success":false}: neither the replica that took the mark
	// nor, when the mark named another replica (router_id), that replica
	// knew the request id.
	NameMarksUnknownTotal = "dynamo_router_marks_unknown_total"
)

// The HTTP API (ours; unscoped like the overhead histograms; constant label
// router_id). Dynamo's endpoint families count every request an endpoint
// answers, whatever carried it; these count what came over HTTP, by the
// HTTP status of the reply. A label such as transport on Dynamo's families
// would change their label set, which Dynamo's dashboards rely on.
const (
	// NameHTTPRequestsTotal counts HTTP requests answered, by endpoint and
	// status code (labels endpoint, code).
	NameHTTPRequestsTotal = "dynamo_router_http_requests_total"
	// NameHTTPRequestDurationSeconds is the time from an HTTP request's
	// arrival at the handler to its reply written (label endpoint).
	NameHTTPRequestDurationSeconds = "dynamo_router_http_request_duration_seconds"
)

// Warm start and the index's health (ours; unscoped like the overhead
// histograms; constant label router_id).
const (
	// NameIndexDiverging is 1 while the share of stored KV events rejected
	// for an unknown parent is high (the index lacks prefixes its workers
	// hold: a cold start, or lost events), else 0.
	NameIndexDiverging = "dynamo_router_index_diverging"
	// NameWarmStartTotal counts the router's warm starts by result (label
	// result): one at each start.
	NameWarmStartTotal = "dynamo_router_warm_start_total"
	// NameWarmStartEvents is the number of events the last warm start
	// loaded from a peer's snapshot (0 unless it loaded one).
	NameWarmStartEvents = "dynamo_router_warm_start_events"
	// NameWarmStartSeconds is how long the last warm start took, from the
	// request for a snapshot to the release of the events held meanwhile.
	NameWarmStartSeconds = "dynamo_router_warm_start_seconds"
)

// Engine-native KV events over ZMQ and Dynamo's ZMQ event plane (ours;
// unscoped; constant label router_id).
const (
	// NameZMQPublishers is the number of ZMQ publishers of KV events the
	// router subscribes to, by state (label state: connected, connecting).
	NameZMQPublishers = "dynamo_router_zmq_publishers"
	// NameZMQMessagesTotal counts the ZMQ messages received, live or
	// replayed, by engine (label engine: vllm, sglang, dynamo).
	NameZMQMessagesTotal = "dynamo_router_zmq_messages_total"
	// NameZMQEventsSkippedTotal counts well-formed engine events, or parts
	// of them, that the index does not take, by reason (label reason).
	NameZMQEventsSkippedTotal = "dynamo_router_zmq_events_skipped_total"
	// NameZMQGapsTotal counts sequence gaps of engine publishers by how they
	// ended (label result: replayed, cleared).
	NameZMQGapsTotal = "dynamo_router_zmq_gaps_total"
	// NameZMQReplayedTotal counts the batches received from replay sockets.
	NameZMQReplayedTotal = "dynamo_router_zmq_replayed_batches_total"
	// NameZMQRestartsTotal counts engine restarts seen as a sequence that
	// went back.
	NameZMQRestartsTotal = "dynamo_router_zmq_restarts_total"
	// NameZMQReconnectsTotal counts connections to publishers lost and
	// dialled again.
	NameZMQReconnectsTotal = "dynamo_router_zmq_reconnects_total"
)

// Values of state on dynamo_router_zmq_publishers.
const (
	// ZMQConnected means the router's socket is connected to the publisher.
	ZMQConnected = "connected"
	// ZMQConnecting means the router is dialling, or waiting to dial again.
	ZMQConnecting = "connecting"
)

// Values of result on dynamo_router_zmq_gaps_total.
const (
	// GapReplayed means the replay socket returned every missing batch.
	GapReplayed = "replayed"
	// GapCleared means the gap could not be healed (no replay socket, the
	// replay failed or no longer held the batches): the rank was cleared.
	GapCleared = "cleared"
)

// Per-worker gauges (Dynamo; unscoped; labels worker_id, dp_rank,
// worker_type).
const (
	// NameWorkerActiveDecodeBlocks is the router's prediction of a rank's
	// active KV blocks.
	NameWorkerActiveDecodeBlocks = "dynamo_frontend_worker_active_decode_blocks"
	// NameWorkerActivePrefillTokens is the router's prediction of a rank's
	// prompt tokens still to prefill.
	NameWorkerActivePrefillTokens = "dynamo_frontend_worker_active_prefill_tokens"
	// NameWorkerLastTimeToFirstToken is the last TTFT seen on a rank.
	NameWorkerLastTimeToFirstToken = "dynamo_frontend_worker_last_time_to_first_token_seconds"
	// NameWorkerLastInputSequenceTokens is the prompt length of the request
	// whose TTFT is NameWorkerLastTimeToFirstToken.
	NameWorkerLastInputSequenceTokens = "dynamo_frontend_worker_last_input_sequence_tokens"
	// NameWorkerLastInterTokenLatency is the last mean inter-token latency
	// seen on a rank.
	NameWorkerLastInterTokenLatency = "dynamo_frontend_worker_last_inter_token_latency_seconds"
)

// Router request metrics (Dynamo; component scope; constant label router_id).
const (
	// NameRouterRequestsTotal counts routed requests.
	NameRouterRequestsTotal = "dynamo_component_router_requests_total"
	// NameRouterTimeToFirstToken is TTFT as the router sees it.
	NameRouterTimeToFirstToken = "dynamo_component_router_time_to_first_token_seconds"
	// NameRouterInterTokenLatency is the mean inter-token latency of a request.
	NameRouterInterTokenLatency = "dynamo_component_router_inter_token_latency_seconds"
	// NameRouterInputSequenceTokens is the prompt length of routed requests.
	NameRouterInputSequenceTokens = "dynamo_component_router_input_sequence_tokens"
	// NameRouterOutputSequenceTokens is the output length of finished requests.
	NameRouterOutputSequenceTokens = "dynamo_component_router_output_sequence_tokens"
	// NameRouterKVHitRate is the predicted hit rate of the chosen worker.
	NameRouterKVHitRate = "dynamo_component_router_kv_hit_rate"
)

// Worker registry (Dynamo; component scope; labels router_worker_id,
// dp_rank, worker_type).
const (
	// NameRouterWorkerRegistered is 1 for each registered worker rank.
	NameRouterWorkerRegistered = "dynamo_component_router_worker_registered"
)

// Scheduler queue (Dynamo; unscoped; labels model, worker_type).
const (
	// NameQueuePendingRequests is the number of requests waiting.
	NameQueuePendingRequests = "dynamo_frontend_router_queue_pending_requests"
	// NameQueuePendingISLTokens is the sum of the prompt lengths waiting.
	NameQueuePendingISLTokens = "dynamo_frontend_router_queue_pending_isl_tokens"
	// NameQueueBackpressureTotal counts requests the queue turned away
	// (label reason too).
	NameQueueBackpressureTotal = "dynamo_frontend_router_queue_backpressure_total"
)

// Index (Dynamo; component scope).
const (
	// NameKVCacheEventsApplied counts KV events by event_type and status. Its
	// name lacks _total because Dynamo's does.
	NameKVCacheEventsApplied = "dynamo_component_kv_cache_events_applied"
)

// Worker KV stats from worker load messages (Dynamo's names; component scope;
// labels worker_id, dp_rank added by the router, which re-exports what each
// worker reports).
const (
	// NameKVStatsActiveBlocks is a worker's KV blocks in use.
	NameKVStatsActiveBlocks = "dynamo_component_kvstats_active_blocks"
	// NameKVStatsTotalBlocks is a worker's KV blocks in all.
	NameKVStatsTotalBlocks = "dynamo_component_kvstats_total_blocks"
	// NameKVStatsGPUCacheUsagePercent is a worker's KV cache usage, 0.0 to 1.0
	// despite its name.
	NameKVStatsGPUCacheUsagePercent = "dynamo_component_kvstats_gpu_cache_usage_percent"
	// NameKVStatsGPUPrefixCacheHitRate is a worker's own prefix cache hit
	// rate, 0.0 to 1.0.
	NameKVStatsGPUPrefixCacheHitRate = "dynamo_component_kvstats_gpu_prefix_cache_hit_rate"
)

// Endpoint work-handler metrics (Dynamo; endpoint scope) and uptime.
const (
	// NameRequestsTotal counts requests an endpoint handled.
	NameRequestsTotal = "dynamo_component_requests_total"
	// NameInflightRequests is the number of requests an endpoint is handling.
	NameInflightRequests = "dynamo_component_inflight_requests"
	// NameRequestBytesTotal counts request payload bytes.
	NameRequestBytesTotal = "dynamo_component_request_bytes_total"
	// NameResponseBytesTotal counts reply payload bytes.
	NameResponseBytesTotal = "dynamo_component_response_bytes_total"
	// NameErrorsTotal counts failed requests by error_type.
	NameErrorsTotal = "dynamo_component_errors_total"
	// NameRequestDurationSeconds is the time an endpoint took to reply.
	NameRequestDurationSeconds = "dynamo_component_request_duration_seconds"
	// NameUptimeSeconds is Dynamo's runtime uptime, created at runtime level
	// (no hierarchy labels) and computed at every scrape.
	NameUptimeSeconds = "dynamo_component_uptime_seconds"
)

// Families of this router that Dynamo does not have (ours; component scope
// unless said otherwise). Dashboards built for Dynamo do not know them.
const (
	// NameKVEventDecodeErrorsTotal counts KV event messages that could not be
	// decoded, by reason.
	NameKVEventDecodeErrorsTotal = "dynamo_component_kv_event_decode_errors_total"
	// NameKVEventQueueDepth is the number of decoded events waiting to be
	// applied, summed over the shards.
	NameKVEventQueueDepth = "dynamo_component_kv_event_queue_depth"
	// NameKVEventsDroppedTotal counts events received but never applied, by
	// reason.
	NameKVEventsDroppedTotal = "dynamo_component_kv_events_dropped_total"
	// NameKVEventsMissedTotal counts events lost before they reached the
	// router, from jumps in event_id per (worker, dp_rank).
	NameKVEventsMissedTotal = "dynamo_component_kv_events_missed_total"
	// NameKVEventApplyLagSeconds is the time from receiving an event to
	// applying it to the index.
	NameKVEventApplyLagSeconds = "dynamo_component_kv_event_apply_lag_seconds"
	// NameKVIndexEntries is the number of (block, worker rank) pairs indexed.
	NameKVIndexEntries = "dynamo_component_kv_index_entries"
	// NameKVIndexNodes is the number of nodes of the radix tree.
	NameKVIndexNodes = "dynamo_component_kv_index_nodes"
	// NameKVIndexWorkers is the number of worker ranks holding blocks in the
	// index.
	NameKVIndexWorkers = "dynamo_component_kv_index_workers"
	// NameKVEventIDResetsTotal counts the times the event_id of a worker
	// rank went backwards (its publisher restarted).
	NameKVEventIDResetsTotal = "dynamo_component_kv_event_id_resets_total"
	// NameKVIndexEvictionsTotal counts entries the index dropped on its own
	// (capacity cap, approximate-mode TTL), by reason.
	NameKVIndexEvictionsTotal = "dynamo_component_kv_index_evictions_total"
	// NameBlockSizeMismatchesTotal counts workers found with a block size
	// other than the router's.
	NameBlockSizeMismatchesTotal = "dynamo_component_router_block_size_mismatches_total"
	// NameDiscoveryMalformedTotal counts discovery values that could not be
	// parsed, by kind.
	NameDiscoveryMalformedTotal = "dynamo_component_router_discovery_malformed_total"
	// NameWorkersFileConflictsTotal counts the workers file's entries
	// refused because etcd registers the same worker id (ours).
	NameWorkersFileConflictsTotal = "dynamo_component_router_workers_file_conflicts_total"
	// NameRouterReplicas is the number of router replicas registered in
	// etcd under the router's component, this one included (ours).
	NameRouterReplicas = "dynamo_component_router_replicas"
	// NameWorkerLoadRejectedTotal counts worker load messages (kv_metrics)
	// not taken in, by reason.
	NameWorkerLoadRejectedTotal = "dynamo_component_router_worker_load_rejected_total"
	// NameEtcdReachable is 1 while worker discovery reaches etcd, 0 while it
	// does not (the last known workers are served meanwhile).
	NameEtcdReachable = "dynamo_component_router_etcd_reachable"
	// NameWorkersStalenessSeconds is how old the last known workers are: 0
	// while discovery reaches etcd (its watch keeps them current), else the
	// time since etcd was found unreachable.
	NameWorkersStalenessSeconds = "dynamo_component_router_workers_staleness_seconds"
	// NameBadRequestsTotal counts rejected malformed requests, by reason. It is
	// created per endpoint (endpoint scope), so the endpoint is the
	// dynamo_endpoint label.
	NameBadRequestsTotal = "dynamo_component_router_bad_requests_total"
)

// Values of worker_type.
const (
	// WorkerTypePrefill marks a prefill worker of disaggregated serving.
	WorkerTypePrefill = "prefill"
	// WorkerTypeDecode marks a decode worker; aggregated workers report it
	// too, as in Dynamo.
	WorkerTypeDecode = "decode"
)

// Values of event_type on dynamo_component_kv_cache_events_applied.
const (
	// EventStored is a stored event.
	EventStored = "stored"
	// EventRemoved is a removed event.
	EventRemoved = "removed"
	// EventCleared is a cleared (all blocks) event.
	EventCleared = "cleared"
)

// Values of status on dynamo_component_kv_cache_events_applied.
const (
	// StatusOK means the event was applied.
	StatusOK = "ok"
	// StatusParentBlockNotFound means a stored event's parent was unknown for
	// that worker; nothing of the event was applied.
	StatusParentBlockNotFound = "parent_block_not_found"
	// StatusBlockNotFound means a removed event named a block the worker did
	// not hold.
	StatusBlockNotFound = "block_not_found"
	// StatusInvalidBlock means a stored block would have been its own
	// ancestor.
	StatusInvalidBlock = "invalid_block"
)

// Values of reason on dynamo_frontend_router_queue_backpressure_total, as
// Dynamo names them.
const (
	// BackpressureRequestLimit means the queue held its maximum number of
	// requests.
	BackpressureRequestLimit = "request_limit"
	// BackpressureISLTokenLimit means the queue held its maximum of prompt
	// tokens.
	BackpressureISLTokenLimit = "raw_isl_token_limit"
	// BackpressureDoNotQueue means the request asked not to wait and every
	// worker was busy.
	BackpressureDoNotQueue = "do_not_queue"
)

// Values of error_type on dynamo_component_errors_total. The first two are
// Dynamo's names for transport failures; the rest are the error codes of the
// router's replies (docs/api.md §3), so the counter and the replies agree.
const (
	// ErrorTypeDeserialization means the request could not be decoded.
	ErrorTypeDeserialization = "deserialization"
	// ErrorTypePublishResponse means the reply could not be sent.
	ErrorTypePublishResponse = "publish_response"
	// ErrorTypeBadRequest is the reply code bad_request.
	ErrorTypeBadRequest = "bad_request"
	// ErrorTypeNoWorkers is the reply code no_workers.
	ErrorTypeNoWorkers = "no_workers"
	// ErrorTypeOverloaded is the reply code overloaded.
	ErrorTypeOverloaded = "overloaded"
	// ErrorTypeQueueFull is the reply code queue_full.
	ErrorTypeQueueFull = "queue_full"
	// ErrorTypeQueueRejected is the reply code queue_rejected.
	ErrorTypeQueueRejected = "queue_rejected"
	// ErrorTypeTimeout is the reply code timeout.
	ErrorTypeTimeout = "timeout"
	// ErrorTypeInternal is the reply code internal.
	ErrorTypeInternal = "internal"
)

// Values of reason on dynamo_component_router_bad_requests_total.
const (
	// BadRequestMalformed means the request was not JSON or had a field of
	// the wrong type.
	BadRequestMalformed = "malformed"
	// BadRequestNoTokens means the request had neither token_ids nor
	// block_hashes.
	BadRequestNoTokens = "no_tokens"
	// BadRequestWorkerType means an unknown worker_type.
	BadRequestWorkerType = "worker_type"
	// BadRequestOutOfRange means a negative or absurd number.
	BadRequestOutOfRange = "out_of_range"
	// BadRequestTooLarge means the request was over the size limit.
	BadRequestTooLarge = "too_large"
)

// Values of reason on dynamo_component_kv_event_decode_errors_total.
const (
	// DecodeJSON means a malformed JSON RouterEvent.
	DecodeJSON = "json"
	// DecodeMsgpack means a malformed MessagePack envelope or payload.
	DecodeMsgpack = "msgpack"
	// DecodeZMQFrame means a ZMQ message without its frames (three from an
	// engine, four on Dynamo's event plane), or a sequence frame that is not
	// 8 bytes.
	DecodeZMQFrame = "zmq_frame"
	// DecodeSchema means well-formed but not a RouterEvent (unknown variant,
	// missing field).
	DecodeSchema = "schema"
	// DecodeTooLarge means a message over the size limits.
	DecodeTooLarge = "too_large"
)

// Values of reason on dynamo_component_kv_events_dropped_total.
const (
	// DropQueueFull means the bounded queue of a shard was full.
	DropQueueFull = "queue_full"
	// DropSlowConsumer means NATS dropped messages of a slow subscription.
	DropSlowConsumer = "slow_consumer"
	// DropUnknownWorker means events of a worker that never registered within
	// its grace period.
	DropUnknownWorker = "unknown_worker"
	// DropStorageTier means a well-formed event for a residency domain
	// other than the worker's own (cache_owner: a shared cache's blocks),
	// which the index does not hold. Events of the worker's own tiers
	// (host_pinned, disk, external) are applied, each to its tier.
	DropStorageTier = "storage_tier"
	// DropDuplicate means a JetStream message delivered again after it was
	// applied (durable mode), or an event held during a warm start that the
	// peer's snapshot already holds (its event_id is below the snapshot's
	// for its rank).
	DropDuplicate = "duplicate"
	// DropWarmStartOverflow means an event that arrived during a warm start
	// when the bounded buffer of held events was full; its rank is cleared
	// unless the snapshot covers what was dropped.
	DropWarmStartOverflow = "warm_start_overflow"
)

// Values of result on dynamo_router_warm_start_total.
const (
	// WarmStartLoaded means a peer's snapshot was loaded.
	WarmStartLoaded = "loaded"
	// WarmStartNoPeer means no ready replica answered (NATS no responders):
	// the router started from the live events alone.
	WarmStartNoPeer = "no_peer"
	// WarmStartFailed means a peer answered with an error or a snapshot that
	// was incomplete or did not decode: the router started from the live
	// events alone.
	WarmStartFailed = "failed"
	// WarmStartTimeout means the snapshot did not arrive whole within
	// --router-warm-start-timeout: the router started from the live events
	// alone.
	WarmStartTimeout = "timeout"
	// WarmStartDisabled means no warm start was tried: timeout 0, durable
	// mode (which rebuilds from JetStream) or approximate mode.
	WarmStartDisabled = "disabled"
)

// Values of reason on dynamo_component_router_worker_load_rejected_total.
const (
	// LoadRejectJSON means the message is not a JSON object of the right
	// field types.
	LoadRejectJSON = "json"
	// LoadRejectSchema means well-formed JSON that is neither of Dynamo's
	// shapes: no worker_id, or a number out of range.
	LoadRejectSchema = "schema"
	// LoadRejectUnknownWorker means the message names a worker rank that is
	// not registered.
	LoadRejectUnknownWorker = "unknown_worker"
	// LoadRejectSlowConsumer means NATS dropped messages because the
	// subscriber fell behind.
	LoadRejectSlowConsumer = "slow_consumer"
)

// Values of reason on dynamo_component_kv_index_evictions_total.
const (
	// EvictCapacity means the index was over its cap on indexed blocks.
	EvictCapacity = "capacity"
	// EvictTTL means an approximate-mode entry expired.
	EvictTTL = "ttl"
)

// Values of reason on dynamo_router_bookings_expired_total.
const (
	// ExpiredNoPrefill means a booking never marked prefilled within
	// --router-prefill-timeout.
	ExpiredNoPrefill = "no_prefill"
	// ExpiredStale means a booking never freed within --router-stale-timeout.
	ExpiredStale = "stale"
)

// Values of mark on dynamo_router_mark_seconds: the endpoints' names.
const (
	// MarkPrefill is a mark_prefill.
	MarkPrefill = EndpointMarkPrefill
	// MarkFree is a mark_free.
	MarkFree = EndpointMarkFree
)

// Values of kind on dynamo_component_router_discovery_malformed_total.
const (
	// DiscoveryInstance means a v1/instances/... value.
	DiscoveryInstance = "instance"
	// DiscoveryModelCard means a v1/mdc/... value.
	DiscoveryModelCard = "model_card"
	// DiscoveryReplica means the key of another router replica
	// (v1/instances/{ns}/{router component}/route/...).
	DiscoveryReplica = "replica"
	// DiscoveryWorkersFile means a reading of the workers file
	// (--workers-file) refused whole.
	DiscoveryWorkersFile = "workers_file"
	// DiscoveryEventChannel means a v1/event_channels/... record of
	// Dynamo's ZMQ event plane.
	DiscoveryEventChannel = "event_channel"
)

// Names of the router's endpoints (docs/api.md §3), the values of
// dynamo_endpoint on the work-handler families.
const (
	// EndpointRoute chooses a worker.
	EndpointRoute = "route"
	// EndpointMarkPrefill marks a request's prefill done.
	EndpointMarkPrefill = "mark_prefill"
	// EndpointMarkFree frees a request.
	EndpointMarkFree = "mark_free"
	// EndpointOverlapScores answers the overlap of every worker.
	EndpointOverlapScores = "overlap_scores"
	// EndpointPotentialLoads answers the load each worker would have.
	EndpointPotentialLoads = "potential_loads"
)

// Values of endpoint on the HTTP families: the Endpoint* names, or this.
const (
	// HTTPEndpointUnknown is a request to a path that is no endpoint.
	HTTPEndpointUnknown = "unknown"
)

// Bucket layouts. Dynamo's are copied from docs/compat.md §7; the others are
// ours. They are functions so that no caller can change a shared slice.

// BucketsComputeOverhead is 0.001 × 2^n, 15 buckets (block and sequence hashing).
func BucketsComputeOverhead() []float64 { return exponential(0.001, 2, 15) }

// BucketsAsyncOverhead is 0.01 × 3^n, 17 buckets (find_matches, scheduling, total).
func BucketsAsyncOverhead() []float64 { return exponential(0.01, 3, 17) }

// BucketsTimeToFirstToken are Dynamo's, seconds.
func BucketsTimeToFirstToken() []float64 {
	return []float64{0, 0.0022, 0.0047, 0.01, 0.022, 0.047, 0.1, 0.22, 0.47, 1, 2.2, 4.7, 10, 22, 48, 100, 220, 480}
}

// BucketsInterTokenLatency are Dynamo's, seconds.
func BucketsInterTokenLatency() []float64 {
	return []float64{0, 0.0019, 0.0035, 0.0067, 0.013, 0.024, 0.045, 0.084, 0.16, 0.3, 0.56, 1.1, 2}
}

// BucketsInputSequenceTokens are Dynamo's, tokens.
func BucketsInputSequenceTokens() []float64 {
	return []float64{0, 100, 210, 430, 870, 1800, 3600, 7400, 15000, 31000, 63000, 130000}
}

// BucketsOutputSequenceTokens are Dynamo's, tokens.
func BucketsOutputSequenceTokens() []float64 {
	return []float64{0, 100, 210, 430, 880, 1800, 3700, 7600, 16000, 32000}
}

// BucketsHitRate is 0 to 1 by 0.05. Each bound is i × 0.05, as Dynamo's
// linear_buckets computes it, so the le labels match Dynamo's bit for bit.
func BucketsHitRate() []float64 {
	b := make([]float64, 21)
	for i := range b {
		b[i] = float64(i) * 0.05
	}
	return b
}

// BucketsRequestDuration are Dynamo's work-handler buckets, seconds.
func BucketsRequestDuration() []float64 {
	return []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600}
}

// BucketsApplyLag (ours) spans 100 µs to 10 s: a healthy router applies an
// event within a millisecond of receiving it; seconds mean a backlog.
func BucketsApplyLag() []float64 {
	return []float64{0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10}
}

// BucketsPathTiming (ours) is 0.001 × 2^n, 20 buckets: 1 µs to about
// half a second, in milliseconds, for the event-apply and mark timings. The
// start and factor are those of the hashing overhead, so the two compare
// bucket for bucket; the range is longer because a batch applies under the
// index's lock, which routes wait for.
func BucketsPathTiming() []float64 { return exponential(0.000001, 2, 20) }

// BucketsHTTPRequestDuration (ours) is 0.00005 × 2^n s, 19 buckets: 50 µs
// to about 13 s. A route answered over loopback HTTP takes a few hundred
// microseconds, which Dynamo's work-handler buckets (from 5 ms) cannot
// tell apart, and one that waits in the scheduler's queue up to its
// timeout (10 s by default).
func BucketsHTTPRequestDuration() []float64 { return exponential(0.00005, 2, 19) }

// exponential is prometheus.ExponentialBuckets without its panics: each bound
// is the previous one times factor, as both client_golang and Dynamo's Rust
// client compute it.
func exponential(start, factor float64, count int) []float64 {
	b := make([]float64, count)
	next := start
	for i := range b {
		b[i] = next
		next *= factor
	}
	return b
}
