package codec

import (
	"encoding/binary"
	"fmt"
)

// EventPlaneVersion is the version byte that starts the last frame of a
// message on Dynamo's ZMQ event plane.
const EventPlaneVersion = 0x01

// eventPlaneHeader is the version byte and the u32 length before the envelope.
const eventPlaneHeader = 5

// DecodeEventPlaneFrame checks the fourth frame of a message on Dynamo's ZMQ
// event plane (docs/compat.md §11.7),
//
//	0x01 (version) | u32 big-endian length | MessagePack EventEnvelope
//
// and returns the envelope, which Decode (DecodeMsgpack) turns into the
// event and its Meta. The result aliases frame. A frame of another version,
// shorter than its header, or whose length disagrees with its size is
// rejected with ErrFrame; one over MaxMessageBytes with ErrTooLarge. It never
// panics.
func DecodeEventPlaneFrame(frame []byte) ([]byte, error) {
	if len(frame) < eventPlaneHeader {
		return nil, &DecodeError{Field: "frame", Msg: fmt.Sprintf("%d bytes, shorter than the %d-byte header", len(frame), eventPlaneHeader), Err: ErrFrame}
	}
	if frame[0] != EventPlaneVersion {
		return nil, &DecodeError{Field: "frame", Msg: fmt.Sprintf("version 0x%02x, expected 0x%02x", frame[0], EventPlaneVersion), Err: ErrFrame}
	}
	n := uint64(binary.BigEndian.Uint32(frame[1:eventPlaneHeader]))
	if n > MaxMessageBytes {
		return nil, &DecodeError{Field: "frame", Offset: 1, Msg: fmt.Sprintf("envelope of %d bytes is over the limit of %d", n, MaxMessageBytes), Err: ErrTooLarge}
	}
	if got := uint64(len(frame) - eventPlaneHeader); got != n {
		return nil, &DecodeError{Field: "frame", Offset: 1, Msg: fmt.Sprintf("length says %d bytes, the frame holds %d", n, got), Err: ErrFrame}
	}
	return frame[eventPlaneHeader:], nil
}

// DecodeSeqFrame reads a sequence-number frame: 8 bytes, an unsigned
// big-endian integer (an engine's batch seq; the replay end marker is all
// ones). Another size is rejected with ErrFrame.
func DecodeSeqFrame(frame []byte) (uint64, error) { return DecodeU64Frame("seq", frame) }

// DecodeU64Frame reads a frame of 8 bytes, an unsigned big-endian integer
// (the event plane's publisher id and sequence); field names it in the
// error. Another size is rejected with ErrFrame.
func DecodeU64Frame(field string, frame []byte) (uint64, error) {
	if len(frame) != 8 {
		return 0, &DecodeError{Field: field, Msg: fmt.Sprintf("frame of %d bytes, expected 8 (a big-endian u64)", len(frame)), Err: ErrFrame}
	}
	return binary.BigEndian.Uint64(frame), nil
}
