// Package zmqevents is the ZMQ transport of KV events: the router's
// subscriptions to engine publishers (vLLM and SGLang, which publish their
// KV events themselves) and to Dynamo's ZMQ event plane.
//
// A Source holds one connection per publisher. An engine publisher is one
// data-parallel rank of one worker: the connection reads its 3-frame
// messages (topic, 8-byte sequence, MessagePack batch), tracks the sequence,
// asks the publisher's replay socket for the batches a gap lost, decodes each
// batch with package events/codec and submits the events to the index's one
// writer (events.Writer) with the batch's sequence as their event_id. A gap
// that replay cannot heal, an engine restart (the sequence starts again) and
// a batch that cannot be decoded all end with the rank cleared, never with
// an index that claims what the worker no longer holds. A publisher that
// goes away is dialled again with backoff.
//
// On Dynamo's event plane, Plane discovers the publishers in etcd and a
// connection reads their 4-frame messages, whose envelope carries a Dynamo
// RouterEvent, as on NATS.
//
// The wire formats are in docs/compat.md ("Engine-native KV events"); the
// operator's view (flags, the workers file, metrics, health) in docs/api.md
// and the README.
package zmqevents
