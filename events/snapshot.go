package events

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/kvrouter/router/events/codec"
	"github.com/kvrouter/router/indexer"
)

// Metadata of the snapshot object. Dynamo's routers write the object without
// them; such a snapshot is loaded and the whole stream replayed after it,
// as Dynamo does.
const (
	// metaSequence is the last stream sequence the snapshot covers.
	metaSequence = "stream_sequence"
	// metaFormat marks a snapshot written by this router, whose event_ids
	// are the ranks' last event_ids (see encodeSnapshot).
	metaFormat = "kvrouter_format"
	formatV1   = "1"
	// metaEvents is the number of RouterEvents in the snapshot, for people.
	metaEvents = "events"
)

// encodeSnapshot writes the part of the index that belongs to workers (nil:
// every worker) as a JSON list of RouterEvents, the shape Dynamo's routers
// read: first, for every rank of those workers whose event_ids the shards
// track, a "cleared" event carrying the rank's last event_id (a no-op on an
// empty index, and how the event_id baselines survive a restart even for
// ranks holding nothing); then the index dump, one single-block stored event
// per (block, rank), parents first, each with its rank's last event_id and
// its storage_tier: a block held on several tiers comes once per tier,
// fastest first (indexer.Tree.Dump), each one a plain stored event with
// tokens and parent, so the format needs nothing of its own for tiers. It
// returns the bytes and the number of events.
func encodeSnapshot(dump []indexer.Event, baselines map[indexer.Worker]uint64, workers map[indexer.WorkerID]struct{}) ([]byte, int) {
	keep := func(id indexer.WorkerID) bool {
		if workers == nil {
			return true
		}
		_, ok := workers[id]
		return ok
	}
	ranks := make([]indexer.Worker, 0, len(baselines))
	for w := range baselines {
		if keep(w.ID) {
			ranks = append(ranks, w)
		}
	}
	slices.SortFunc(ranks, func(a, b indexer.Worker) int {
		return cmp.Or(cmp.Compare(a.ID, b.ID), cmp.Compare(a.DPRank, b.DPRank))
	})
	buf := make([]byte, 0, 64+len(ranks)*128+len(dump)*160)
	buf = append(buf, '[')
	n := 0
	sep := func() {
		if n > 0 {
			buf = append(buf, ',', '\n')
		}
		n++
	}
	for _, w := range ranks {
		sep()
		buf = codec.AppendJSON(buf, indexer.Event{Worker: w, Kind: indexer.KindCleared}, codec.Meta{EventID: baselines[w]})
	}
	for _, ev := range dump {
		if !keep(ev.Worker.ID) {
			continue
		}
		sep()
		buf = codec.AppendJSON(buf, ev, codec.Meta{EventID: baselines[ev.Worker]})
	}
	buf = append(buf, ']')
	return buf, n
}

// snapshot cuts the index behind every command queued so far, each
// rank's last applied event_id first (baselines, through the shard queues)
// and then the dump, so that the dump holds at least what the baselines
// say, and encodes the part of workers (nil: every worker) with
// encodeSnapshot. It returns the bytes and the number of events.
func (w *Writer) snapshot(ctx context.Context, workers map[indexer.WorkerID]struct{}) ([]byte, int, error) {
	baselines, err := w.baselines(ctx)
	if err != nil {
		return nil, 0, err
	}
	data, n := encodeSnapshot(w.idx.Dump(), baselines, workers)
	return data, n, nil
}

// decodeSnapshot reads a JSON list of RouterEvents, each about its
// storage_tier (the event's Tier). Events of the cache_owner residency
// domain are left out, as the subscriber drops them.
func decodeSnapshot(data []byte) ([]indexer.Event, []codec.Meta, error) {
	all, allMetas, err := codec.DecodeJSONList(data)
	if err != nil {
		return nil, nil, fmt.Errorf("snapshot: %w", err)
	}
	var (
		evs   []indexer.Event
		metas []codec.Meta
	)
	for i, meta := range allMetas {
		if !meta.CacheOwner {
			evs = append(evs, all[i])
			metas = append(metas, meta)
		}
	}
	return evs, metas, nil
}

// restore loads the component's snapshot into the index and returns the
// stream sequence it covers (0: none, or one without a sequence).
func (ds *durableStream) restore(ctx context.Context) (uint64, error) {
	s := ds.s
	obs, err := ds.js.ObjectStore(ctx, ds.bucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		s.log.Info("kv events: no snapshot bucket; replaying the whole stream", slog.String("bucket", ds.bucket))
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("kv events: snapshot bucket %s: %w", ds.bucket, err)
	}
	res, err := obs.Get(ctx, SnapshotObject)
	if errors.Is(err, jetstream.ErrObjectNotFound) {
		s.log.Info("kv events: no snapshot; replaying the whole stream", slog.String("bucket", ds.bucket))
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("kv events: snapshot %s/%s: %w", ds.bucket, SnapshotObject, err)
	}
	defer res.Close()
	data, err := io.ReadAll(res)
	if err != nil {
		return 0, fmt.Errorf("kv events: read snapshot %s/%s: %w", ds.bucket, SnapshotObject, err)
	}
	info, err := res.Info()
	if err != nil {
		return 0, fmt.Errorf("kv events: snapshot %s/%s: info: %w", ds.bucket, SnapshotObject, err)
	}
	evs, metas, err := decodeSnapshot(data)
	if err != nil {
		return 0, fmt.Errorf("kv events: decode snapshot %s/%s: %w", ds.bucket, SnapshotObject, err)
	}
	var seq uint64
	if v, ok := info.Metadata[metaSequence]; ok {
		if seq, err = strconv.ParseUint(v, 10, 64); err != nil {
			return 0, fmt.Errorf("kv events: snapshot %s/%s: metadata %s=%q: %w", ds.bucket, SnapshotObject, metaSequence, v, err)
		}
	}
	ours := info.Metadata[metaFormat] == formatV1
	for i, ev := range evs {
		ds.workers[ev.Worker.ID] = struct{}{}
		// Through the writer, in order before the stream's events: the
		// snapshot's event_ids are baselines only in our own format.
		it := item{kind: itemRestore, ev: ev, id: metas[i].EventID, seed: ours}
		if err := s.w.push(ctx, it); err != nil {
			return 0, fmt.Errorf("kv events: restore snapshot %s/%s: %w", ds.bucket, SnapshotObject, err)
		}
	}
	s.log.Info("kv events: snapshot restored", slog.String("bucket", ds.bucket), slog.Int("events", len(evs)),
		slog.Int("bytes", len(data)), slog.Uint64("stream_sequence", seq))
	return seq, nil
}

// upload writes a snapshot covering the stream up to seq, unless the bucket
// already holds a newer one, then purges what both it and every consumer of
// the stream are past.
func (ds *durableStream) upload(ctx context.Context, data []byte, events int, seq uint64) {
	s := ds.s
	release, err := ds.acquireLock(ctx)
	switch {
	case errors.Is(err, jetstream.ErrKeyExists):
		s.log.Info("kv events: another router holds the snapshot lock; snapshotting later", slog.String("bucket", ds.lockBucket))
		return
	case err != nil:
		ds.uploadFailed(ctx, "lock", err)
		return
	}
	defer release()
	obs, err := ds.js.ObjectStore(ctx, ds.bucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		obs, err = ds.js.CreateObjectStore(ctx, jetstream.ObjectStoreConfig{Bucket: ds.bucket})
		if errors.Is(err, jetstream.ErrBucketExists) {
			obs, err = ds.js.ObjectStore(ctx, ds.bucket)
		}
	}
	if err != nil {
		ds.uploadFailed(ctx, "open bucket", err)
		return
	}
	if cur, err := obs.GetInfo(ctx, SnapshotObject); err == nil {
		if v, err := strconv.ParseUint(cur.Metadata[metaSequence], 10, 64); err == nil && v >= seq {
			s.log.Info("kv events: the bucket holds a newer snapshot; not replacing it", slog.String("bucket", ds.bucket),
				slog.Uint64("theirs", v), slog.Uint64("ours", seq))
			return
		}
	}
	_, err = obs.Put(ctx, jetstream.ObjectMeta{
		Name: SnapshotObject,
		Metadata: map[string]string{
			metaSequence: strconv.FormatUint(seq, 10),
			metaFormat:   formatV1,
			metaEvents:   strconv.Itoa(events),
		},
	}, bytes.NewReader(data))
	if err != nil {
		ds.uploadFailed(ctx, "put", err)
		return
	}
	s.stats.snapshots.Add(1)
	ds.lastSnap.Store(seq)

	// Purge up to the snapshot, but never past a consumer's ack floor: a
	// lagging router still needs those messages.
	upTo := seq
	lister := ds.stream.ListConsumers(ctx)
	for ci := range lister.Info() {
		upTo = min(upTo, ci.AckFloor.Stream)
	}
	if err := lister.Err(); err != nil {
		ds.uploadFailed(ctx, "list consumers", err)
		return
	}
	if upTo > 0 {
		if err := ds.stream.Purge(ctx, jetstream.WithPurgeSequence(upTo+1)); err != nil {
			ds.uploadFailed(ctx, "purge", err)
			return
		}
	}
	s.log.Info("kv events: snapshot written", slog.String("bucket", ds.bucket), slog.Int("events", events),
		slog.Int("bytes", len(data)), slog.Uint64("stream_sequence", seq), slog.Uint64("purged_through", upTo))
}

// acquireLock takes the component's snapshot lock, or fails with
// jetstream.ErrKeyExists while another router holds it. Without it, two
// routers could each find the bucket's snapshot older than theirs and
// write in turn, the older last, after the newer one's purge removed
// messages that only the newer snapshot covers: a restart from the older
// one would miss them. The lock expires after SnapshotLockTTL should its
// holder die; release deletes it only if it is still this one.
func (ds *durableStream) acquireLock(ctx context.Context) (release func(), err error) {
	if ds.lock == nil {
		kv, err := ds.js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: ds.lockBucket, TTL: SnapshotLockTTL})
		if err != nil {
			return nil, err
		}
		ds.lock = kv
	}
	rev, err := ds.lock.Create(ctx, SnapshotLockKey, []byte(ds.s.cfg.RouterID))
	if err != nil {
		return nil, err
	}
	return func() {
		// Released even when shutting down, so the next router need not
		// wait out the TTL.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if err := ds.lock.Delete(rctx, SnapshotLockKey, jetstream.LastRevision(rev)); err != nil {
			ds.s.log.Warn("kv events: cannot release the snapshot lock; it expires by itself", slog.String("bucket", ds.lockBucket),
				slog.Duration("ttl", SnapshotLockTTL), slog.Any("error", err))
		}
	}, nil
}

func (ds *durableStream) uploadFailed(ctx context.Context, step string, err error) {
	if ctx.Err() != nil {
		return // shutting down
	}
	ds.s.log.Warn("kv events: snapshot failed", slog.String("bucket", ds.bucket), slog.String("step", step), slog.Any("error", err))
}
