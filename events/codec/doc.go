// Package codec reads and writes the workers' KV events on the wire: the
// RouterEvent of Dynamo's KV router in its two encodings (docs/compat.md
// §3), JSON and the MessagePack event-plane envelope, and the engines' own
// KV event batches. It is the events
// package without the transport: no NATS, no metrics, so that the decoders
// of outside input can be tested and fuzzed alone.
//
// Decode tells the encodings apart by the first byte that is not white
// space: '{' is JSON (DecodeJSON), anything else the MessagePack envelope
// (DecodeMsgpack), whose payload is a MessagePack or JSON RouterEvent. The
// schema (which fields, which are required, their types and ranges, the
// stored/removed/cleared variants) is written once, in schema.go, and read
// through a small reader interface that each encoding implements; JSON is
// read with the router's one strict JSON scanner, internal/jsonscan.
//
// The decoders are hand-written and allocation-light (the event's block or
// hash list is the only allocation of a well-formed message); they never
// panic, reject a message whole or not at all, and say why with a
// *DecodeError naming the field and wrapping one of ErrMalformedJSON,
// ErrMalformedMsgpack, ErrSchema, ErrTooLarge: the reasons the events
// package counts. Negative i64 hashes keep their bits as u64. A message is
// rejected if it is over MaxMessageBytes, lists more than
// MaxBlocksPerEvent blocks or hashes, or nests a skipped value deeper than
// 64 levels. AppendJSON is the inverse of DecodeJSON, used for snapshots.
//
// The package also reads what vLLM and SGLang publish on their own ZMQ
// sockets (docs/compat.md §11): DecodeEngineBatch decodes the payload frame
// of one message, a MessagePack batch of events in either of the engines'
// encodings (positional arrays or maps), into an EngineBatch whose slices it
// reuses, so that steady-state decoding allocates nothing; an
// EngineConverter turns each EngineEvent into an index event the way
// Dynamo's relay would, with the router's own tokens hashes, and says with
// an Outcome what it left out and why. DecodeEventPlaneFrame unwraps the
// last frame of Dynamo's own ZMQ event plane into the envelope Decode reads;
// DecodeSeqFrame and DecodeU64Frame read the 8-byte frames around it.
// Rejections are *DecodeErrors as above; a frame that is not laid out as
// expected wraps ErrFrame.
//
// Every function of the package is pure and safe for concurrent use (an
// EngineBatch being the caller's); the package starts no goroutines. A
// decoded event does not alias the message.
package codec
